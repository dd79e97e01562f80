"""Every config on the one base (``squeezelab.config.ConfigBase``): each config class, found by
importing the whole package, writes exactly its fields and reads them back (also through YAML
and JSON), and every section of every recipe loads into its config and is written back as
given, so a setting that a config drops on the way to a file (the .sqz header's
``compress_config`` once lost ``fold_batchnorm``) fails here. Also the one KEY=VALUE parser."""
from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import typing
from pathlib import Path

import pytest
import yaml

import squeezelab
from squeezelab.config import ConfigBase, ConfigError, all_config_classes, parse_key_values

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
STUDIES = sorted((ROOT / "recipes" / "studies").glob("*.yaml"))


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(squeezelab.__path__, "squeezelab."):
        if info.name == "squeezelab.__main__":  # runs the CLI on import
            continue
        importlib.import_module(info.name)


_import_every_module()
CONFIGS = all_config_classes()


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _section_classes() -> dict[str, type[ConfigBase]]:
    """Recipe section -> the config class read from it (``recipe_section``)."""
    out: dict[str, type[ConfigBase]] = {}
    for cls in CONFIGS:
        if cls.recipe_section is not None:
            assert cls.recipe_section not in out, (
                f"{_name(cls)} and {_name(out[cls.recipe_section])} both read "
                f"{cls.recipe_section}:")
            out[cls.recipe_section] = cls
    return out


SECTIONS = _section_classes()

# Configs whose defaults alone are not a valid config, or worth a richer example.
EXAMPLES: dict[str, dict[str, typing.Any]] = {
    "PruneConfig": {"sparsity": 0.5, "rules": {"classifier": 0.3, "features.0.*": 0.2},
                    "scope": "global", "exclude": ["squeeze"]},
    "CompressConfig": {"prune": {"sparsity": 0.6, "rules": {"classifier": 0.3}},
                       "sharing": {"bits": {"conv": 4, "classifier": 5}}, "gap_bits": 6,
                       "fold_batchnorm": True, "prune_rounds": 2,
                       "train": {"batch_size": 32, "optimizer": "adamw"}},
    "DSDConfig": {"sparsity": 0.3, "layers": ["squeeze"], "exclude": ["classifier"],
                  "plot_layer": "features.3.squeeze.weight"},
    "UniformQuantConfig": {"layers": ["features.*"], "exclude": ["features.0"], "num_bits": 4},
    "QuantizeCellSettings": {"source": "runs/dense", "method": "kmeans", "config": {"bits": 4},
                             "fine_tune_epochs": 1},
    # a multi-crop protocol writes every field; a single-image one leaves out the crop fields
    # at their defaults, so it records what protocols recorded before crops existed
    # (tests/train/test_evaluate.py checks that form)
    "EvalProtocol": {"precision": "bf16", "crops": 10, "crop_size": 32, "crop_pad": 4},
    "TrainConfig": {"model_args": {"fire_config": [[4, 8, 8]], "pool_after": [1, 5]},
                    "limit_train": 100, "grad_clip": 1.0},
    "StudyConfig": {"study": "example", "base": {"lr": 0.1},
                    "axes": {"sr": [{"name": "a", "model_args": {"squeeze_ratio": 0.25}}]},
                    "seeds": [0, 2], "budgets": {"smoke": {"epochs": 1}, "cpu": {}, "full": {}},
                    "published": {"metric": "top5", "values": [{"where": {"sr": "a"},
                                                                 "percent": 80.3}]},
                    "report": [{"plot": "line", "x": "fp32_bytes", "y": ["metrics.test_top1"]}]},
}
# A required field (no default) of these types gets this value in the examples.
REQUIRED_VALUES = {str: "example", int: 1, float: 1.0}


def example(cls: type[ConfigBase]) -> ConfigBase:
    """A valid instance of ``cls``: EXAMPLES, else the defaults with required fields filled."""
    values = dict(EXAMPLES.get(cls.__name__, {}))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                and f.name not in values:
            kind = hints[f.name]
            assert kind in REQUIRED_VALUES, (
                f"{_name(cls)}.{f.name} is required and of type {kind}: add an example of "
                f"{cls.__name__} to EXAMPLES in {Path(__file__).name}")
            values[f.name] = REQUIRED_VALUES[kind]
    try:
        return cls.from_dict(values)
    except ValueError as e:
        pytest.fail(f"{_name(cls)} has no valid example ({e}): add one to EXAMPLES in "
                    f"{Path(__file__).name}")


def test_every_config_class_is_found():
    names = {c.__name__ for c in CONFIGS}
    # the configs of every floor, as a check that the discovery walks the whole package
    assert {"TrainConfig", "PruneConfig", "WeightSharingConfig", "LayerSelection",
            "UniformQuantConfig", "BinaryConfig", "FixedPointConfig", "ProductQuantConfig",
            "ResidualQuantConfig", "LowRankConfig", "CompressConfig", "DSDConfig",
            "DistillConfig", "FitNetsConfig"} <= names
    assert set(SECTIONS) == {"compress", "dsd", "distill", "fitnets"}


@pytest.mark.parametrize("cls", CONFIGS, ids=_name)
def test_config_round_trips(cls, tmp_path):
    cfg = example(cls)
    data = cfg.to_dict()
    # exactly the dataclass fields, in order: a file records everything the config holds
    assert list(data) == [f.name for f in dataclasses.fields(cls)]
    assert cls.from_dict(data) == cfg
    assert cls.from_dict(yaml.safe_load(yaml.safe_dump(data))) == cfg
    assert cls.from_dict(json.loads(json.dumps(data))) == cfg  # the .sqz / checkpoint header
    path = tmp_path / "config.yaml"
    cfg.save_yaml(path)
    assert cls.from_yaml(path) == cfg
    if cls.recipe_section:  # read from its section of a recipe, too
        path.write_text(yaml.safe_dump({cls.recipe_section: data}))
        assert cls.from_yaml(path) == cfg


@pytest.mark.parametrize("cls", CONFIGS, ids=_name)
def test_unknown_key_is_an_error_naming_the_source(cls):
    data = {**example(cls).to_dict(), "no_such_key": 1}
    with pytest.raises(ConfigError, match=r"my source: unknown key 'no_such_key'"):
        cls.from_dict(data, source="my source")


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_unknown_key_in_a_recipe_section_names_the_file(section, tmp_path):
    cls = SECTIONS[section]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({section: {**example(cls).to_dict(), "bogus": 1}}))
    with pytest.raises(ConfigError, match=rf"{path} {section}: unknown key 'bogus'"):
        cls.from_yaml(path)


def _config_items(hint: typing.Any) -> type[ConfigBase] | None:
    """The config class of a ``list[SomeConfig]`` field, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and isinstance(args[0], type) \
            and issubclass(args[0], ConfigBase):
        return args[0]
    return None


def _covers(cls: type[ConfigBase], given: dict, written: dict, where: str) -> None:
    """Every value ``given`` (a recipe section) is in ``written`` (the config's to_dict), the
    same; nested configs (compress: prune:, sharing:) are compared key by key, the same way."""
    given = cls.normalize_input(given, where)  # aliases (T) and shorthands (epochs: 5-3-5)
    hints = typing.get_type_hints(cls)
    for key, value in given.items():
        assert key in written, f"{where}: {key!r} is not written back by {cls.__name__}"
        nested = [c for c in (hints[key], *typing.get_args(hints[key]))
                  if isinstance(c, type) and issubclass(c, ConfigBase)]
        if nested and isinstance(value, dict):
            _covers(nested[0], value, written[key], f"{where} {key}:")
        elif _config_items(hints[key]) and isinstance(value, (list, dict)):
            # a list of configs (a study's report:, which may also be one mapping)
            items = value if isinstance(value, list) else [value]
            assert len(items) == len(written[key]), f"{where}: {key} has another length"
            for i, (item, out) in enumerate(zip(items, written[key])):
                _covers(_config_items(hints[key]), item, out, f"{where} {key}[{i}]")
        else:
            if isinstance(written[key], list) and not isinstance(value, list):
                value = [value]  # the one-item shorthand of a list (report: y: metrics.x)
            assert written[key] == value, (
                f"{where}: {key} is {value!r} in the recipe, {written[key]!r} written back")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_section_loads_and_round_trips(recipe):
    from squeezelab.train.config import RECIPE_SECTIONS, TrainConfig

    values = yaml.safe_load(recipe.read_text())
    top = {k: v for k, v in values.items() if k not in RECIPE_SECTIONS}
    train = TrainConfig.from_yaml(recipe)
    _covers(TrainConfig, top, train.to_dict(), str(recipe))
    assert TrainConfig.from_dict(train.to_dict()) == train
    for section in set(values) & set(RECIPE_SECTIONS):
        assert section in SECTIONS, f"{recipe}: no config class reads its {section}: section"
        cls = SECTIONS[section]
        cfg = cls.from_yaml(recipe)
        written = cfg.to_dict()
        _covers(cls, values[section], written, f"{recipe} {section}:")
        assert cls.from_dict(written) == cfg
        assert cls.from_dict(yaml.safe_load(yaml.safe_dump(written))) == cfg


def test_the_compress_recipe_keeps_fold_batchnorm():
    """The bug this file guards against: the recipe folds BatchNorm, so its config says so."""
    from squeezelab.workflows.deep_compression import CompressConfig

    cfg = CompressConfig.from_yaml(ROOT / "recipes" / "compress_cifar10_fast.yaml")
    assert cfg.fold_batchnorm is True and cfg.to_dict()["fold_batchnorm"] is True
    assert CompressConfig.from_dict(cfg.to_dict()).fold_batchnorm is True


@pytest.mark.parametrize("recipe", STUDIES, ids=lambda p: p.name)
def test_every_study_recipe_and_its_cells_round_trip(recipe, tmp_path):
    """A study recipe is a StudyConfig written back as given, and every cell of every budget
    is a config of its kind that round-trips."""
    from squeezelab.workflows.studies.recipe import BUDGETS, StudyConfig, expand_study, load_study

    study = load_study(recipe)
    written = study.to_dict()
    _covers(StudyConfig, yaml.safe_load(recipe.read_text()), written, str(recipe))
    assert StudyConfig.from_dict(written) == study
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(written))) == study
    for budget in BUDGETS:
        for cell in expand_study(study, budget, run_root=tmp_path, source=str(recipe)):
            kind = type(cell.settings)
            assert kind.from_dict(cell.settings.to_dict()) == cell.settings, cell.name


# --- the one KEY=VALUE parser -------------------------------------------------------------
def test_parse_key_values():
    assert parse_key_values("sparsity=0.4, epochs=5-3-5,flag=true,none=null", "--x") == {
        "sparsity": 0.4, "epochs": "5-3-5", "flag": True, "none": None}
    # commas inside brackets and quotes stay in the value; a list of strings is one option
    assert parse_key_values(["fire_config=[[4, 8, 8], [4, 8, 8]]", "name='a,b'"], "--m") == {
        "fire_config": [[4, 8, 8], [4, 8, 8]], "name": "a,b"}
    assert parse_key_values(["conv=0.5", "classifier=0.3,features.[12].*=0.1"], "--rule",
                            value=float) == {"conv": 0.5, "classifier": 0.3,
                                             "features.[12].*": 0.1}
    assert parse_key_values("", "--x") == {} and parse_key_values(None, "--x") == {}
    with pytest.raises(ConfigError, match="--rule expects LAYER=VALUE items .* got 'conv'"):
        parse_key_values(["conv"], "--rule", form="LAYER=VALUE")
    with pytest.raises(ConfigError, match="--x: 'a' is given twice"):
        parse_key_values("a=1,a=2", "--x")
    with pytest.raises(ConfigError, match=r"--rule 'conv=x': could not convert"):
        parse_key_values("conv=x", "--rule", value=float)


def test_option_strings_of_the_method_configs():
    from squeezelab.train.distill import DistillConfig, DistillError
    from squeezelab.workflows.dsd import DSDConfig
    from squeezelab.workflows.fitnets import FitNetsConfig

    assert DSDConfig.parse("epochs=1-2-3,layers=[squeeze,expand3x3],exclude=classifier") == \
        DSDConfig(dense_epochs=1, sparse_epochs=2, redense_epochs=3,
                  layers=["squeeze", "expand3x3"], exclude=["classifier"])
    cfg = DistillConfig.parse("teacher=runs/t,tau=2")
    assert cfg == DistillConfig(teacher="runs/t", temperature=2)
    with pytest.raises(DistillError, match="'temperature' is given twice \\(as 'T'\\)"):
        DistillConfig.parse("teacher=x,temperature=2,T=3")
    with pytest.raises(DistillError, match="--distill: temperature must be a number"):
        DistillConfig.parse("teacher=x,T=warm")
    fit = FitNetsConfig.parse("teacher=t,hint=layer3,guided=features.6,T=2")
    assert fit.temperature == 2 and FitNetsConfig.from_dict(fit.to_dict()) == fit
    with pytest.raises(DistillError, match="--fitnets: guided is required"):
        FitNetsConfig.parse("teacher=t,hint=layer3")


def test_model_arg_flag_goes_through_the_one_parser():
    from squeezelab.cli import build_parser
    from squeezelab.cli.config_flags import config_from_args

    args = build_parser().parse_args([
        "train", "--model-arg", "fire_config=[[4, 8, 8], [4, 8, 8]],stem_channels=16",
        "--model-arg", "bypass=none"])
    assert config_from_args(args).model_args == {
        "fire_config": [[4, 8, 8], [4, 8, 8]], "stem_channels": 16, "bypass": "none"}
    args = build_parser().parse_args(["train", "--model-arg", "a=1", "--model-arg", "a=2"])
    with pytest.raises(ConfigError, match="--model-arg: 'a' is given twice"):
        config_from_args(args)


def test_none_flag_unsets_a_recipes_optional_value(tmp_path):
    """``--time-budget none`` switches off a recipe's time budget (an absent flag leaves it),
    and a field that cannot be None refuses the word as it refuses any bad value."""
    from squeezelab.cli import build_parser
    from squeezelab.cli.config_flags import config_from_args, config_overrides

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: squeezenet_cifar\nepochs: 4\ntime_budget: 840\nlr: 0.01\n"
                      "channels_last: true\n")
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", str(recipe)])).time_budget == 840
    args = parse(["train", str(recipe), "--time-budget", "none", "--lr", "NULL",
                  "--channels-last", "none"])
    assert config_overrides(args) == {"time_budget": None, "lr": None, "channels_last": None}
    cfg = config_from_args(args)
    assert (cfg.time_budget, cfg.channels_last, cfg.epochs) == (None, None, 4)
    # an unset lr takes the model's registered one, as if the recipe had never named it
    unnamed = config_from_args(parse(["train", "--model", "squeezenet_cifar"]))
    assert cfg.lr == unnamed.lr != 0.01
    assert config_from_args(parse(["train", str(recipe), "--time-budget", "60"])).time_budget == 60
    assert config_overrides(parse(["train", "--epochs", "3", "--lr", "0.1"]),
                            skip=("epochs",)) == {"lr": 0.1}
    with pytest.raises(SystemExit):  # epochs is not optional: "none" is a bad integer
        parse(["train", "--epochs", "none"])
