"""TrainConfig: validation on construction, YAML recipes with unknown keys rejected."""
import pytest

from squeezelab.train.config import ConfigError, TrainConfig


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = TrainConfig()
    path = tmp_path / "config.yaml"
    cfg.save_yaml(path)
    assert TrainConfig.from_yaml(path) == cfg


def test_yaml_overrides_win(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: squeezenet_cifar_e4\nepochs: 30\nlr: 0.01\ndsd: {sparsity: 0.4}\n")
    cfg = TrainConfig.from_yaml(path, {"epochs": 2})
    assert (cfg.model, cfg.epochs, cfg.lr) == ("squeezenet_cifar_e4", 2, 0.01)


def test_unknown_key_names_close_match(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'epohcs' \(did you mean epochs"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("kwargs,match", [
    ({"optimizer": "sgdd"}, "optimizer must be one of"),
    ({"schedule": "exp"}, "schedule must be one of"),
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"warmup_epochs": 5, "epochs": 2}, "warmup_epochs must be in"),
    ({"precision": "fp16"}, "precision must be one of"),
    ({"limit_train": 0}, "limit_train must be a positive integer"),
    ({"subset_seed": "0"}, "subset_seed must be an integer or null, got '0'"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_subset_seed_defaults_to_the_seed():
    assert TrainConfig(seed=3).data_seed == 3
    assert TrainConfig(seed=3, subset_seed=0).data_seed == 0


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


def test_every_field_has_help_and_unset_ones_say_what_unset_means():
    import dataclasses

    from squeezelab.train.config import FIELD_HELP

    fields = dataclasses.fields(TrainConfig)
    assert list(FIELD_HELP) == [f.name for f in fields]  # same order as the flags
    for f in fields:
        if f.default is None:
            assert "unset: " in FIELD_HELP[f.name], f.name
