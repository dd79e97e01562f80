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
    ({"cutout": -1}, r"cutout must be a non-negative integer \(pixels\), got -1"),
    ({"cutout": 2.5}, "cutout must be a non-negative integer"),
    ({"mix": "blend"}, r"mix must be one of \('mixup', 'cutmix'\) or null \(off\), got 'blend'"),
    ({"mix": "mixup", "mix_alpha": 0}, "mix_alpha must be > 0, got 0"),
    ({"mix": "mixup", "mix_prob": 0}, r"mix_prob must be in \(0, 1\], got 0"),
    ({"mix": "cutmix", "mix_off_epochs": 3, "epochs": 2},
     r"mix_off_epochs must be an integer in \[0, epochs=2\], got 3"),
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


# --- optimizer settings: flag > recipe > the model's train defaults > built-in defaults ----
def test_unset_settings_take_the_models_train_defaults():
    from squeezelab.models import get_entry

    cfg = TrainConfig()  # the default model, squeezenet_cifar
    wanted = dict(get_entry("squeezenet_cifar").train_defaults)
    assert wanted["optimizer"] == "adamw" and wanted["warmup_epochs"] > 0
    assert {k: getattr(cfg, k) for k in wanted} == wanted
    assert cfg.defaults_from_model == wanted
    assert cfg.momentum == 0.9  # not among the model's: the built-in default


def test_a_model_without_train_defaults_gets_the_built_in_ones():
    from squeezelab.train.config import BUILT_IN_DEFAULTS

    cfg = TrainConfig(model="alexnet_cifar")
    assert {k: getattr(cfg, k) for k in BUILT_IN_DEFAULTS} == BUILT_IN_DEFAULTS
    assert cfg.defaults_from_model == {}
    # an unknown model name is reported when the model is built, not here
    assert TrainConfig(model="nope").optimizer == BUILT_IN_DEFAULTS["optimizer"]


def test_recipe_values_win_over_model_defaults_and_flags_over_both(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: squeezenet_cifar\nlr: 0.01\nlabel_smoothing: 0.0\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.label_smoothing) == (0.01, 0.0)  # the recipe's
    assert (cfg.optimizer, cfg.warmup_epochs) == ("adamw", 0.3)  # the model's
    assert "lr" not in cfg.defaults_from_model and "warmup_epochs" in cfg.defaults_from_model
    cfg = TrainConfig.from_yaml(path, {"lr": 0.02, "warmup_epochs": 0.0})
    assert (cfg.lr, cfg.warmup_epochs, cfg.label_smoothing) == (0.02, 0.0, 0.0)
    assert set(cfg.defaults_from_model) == {"optimizer", "weight_decay", "schedule"}


def test_lr_momentum_and_weight_decay_follow_the_model_only_with_its_optimizer():
    """AdamW's decoupled weight decay 0.05 would be a crushing L2 penalty under SGD: with
    another optimizer than the model's, those three come from the built-in defaults."""
    cfg = TrainConfig(model="squeezenet_cifar", optimizer="nesterov")
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (0.1, 5e-4, 0.9)
    assert (cfg.warmup_epochs, cfg.label_smoothing) == (0.3, 0.1)  # still the model's
    cfg = TrainConfig(model="squeezenet_cifar_e4", optimizer="adam", lr=0.001)
    # the README's tour line: the course-study models die without a warm-up
    assert cfg.warmup_epochs >= 1 and cfg.weight_decay == 5e-4


def test_the_resolved_settings_are_saved_and_read_back_as_given(tmp_path):
    cfg = TrainConfig(model="squeezenet_cifar_e2")
    path = tmp_path / "config.yaml"
    cfg.save_yaml(path)
    again = TrainConfig.from_yaml(path)
    assert again == cfg and again.defaults_from_model == {}  # the file sets every field
    assert cfg.replace(epochs=3).defaults_from_model == cfg.defaults_from_model
    assert "lr" not in cfg.replace(lr=0.1).defaults_from_model


def test_a_model_may_register_only_optimizer_settings():
    from squeezelab.models.registry import _REGISTRY, register_model

    @register_model("test_bad_defaults", input_size=32, train_defaults={"epochs": 3})
    def builder(num_classes=10, in_chans=3, dropout=0.0):
        raise AssertionError("never built")

    try:
        with pytest.raises(ConfigError, match=r"model 'test_bad_defaults' registers "
                                              r"train_defaults \['epochs'\]; a model may set "
                                              "only optimizer, lr"):
            TrainConfig(model="test_bad_defaults")
    finally:
        del _REGISTRY["test_bad_defaults"]


def test_resume_conflicts_name_what_would_change_the_runs_images_or_scoring():
    from squeezelab.train.config import resume_conflicts

    saved = TrainConfig(limit_test=100, model_args={"pool_after": [1, 5]}).to_dict()
    same = TrainConfig(limit_test=100, model_args={"pool_after": (1, 5)}, epochs=30, lr=0.1)
    assert resume_conflicts(saved, same) == []  # more epochs, another lr: allowed
    assert resume_conflicts(saved, same.replace(limit_test=None, test_time_flip=True)) == [
        ("limit_test", 100, None), ("test_time_flip", False, True)]
    assert resume_conflicts(saved, same.replace(seed=3)) == [("seed/subset_seed", 0, 3)]
    assert resume_conflicts(saved, same.replace(seed=3, subset_seed=0)) == []
