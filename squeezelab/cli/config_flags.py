"""The training-config flags shared by every command that trains (``train``, ``dsd``, ...): one
flag per ``TrainConfig`` field, turned back into a config, and the line a finished run prints;
``--model-arg``, which ``info`` takes too."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

import yaml

from squeezelab.cli import parse_bool
from squeezelab.config import parse_key_values
from squeezelab.train.config import FIELD_HELP, ConfigError, TrainConfig


def _parse_yaml_value(text: str, what: str = "value") -> Any:
    """A flag's value read as YAML (``0.4``, ``true``, ``[3, 5]``); malformed YAML is a
    ConfigError naming the flag, not a yaml traceback."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what}: {text!r} is not a valid YAML value ({problem})") from None


#: What a flag of an optional field parses ``none`` / ``null`` to: "set this field to None",
#: told apart from an absent flag (argparse's None), so ``--time-budget none`` can switch off
#: a recipe's time budget.
CLEARED = object()
_CLEAR_WORDS = ("none", "null")


def _field_parser(field: dataclasses.Field) -> tuple[Any, bool]:
    """How a flag of ``field`` parses its text, and whether the field may be None."""
    hint = typing.get_type_hints(TrainConfig)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args else hint
    if base is bool:
        return parse_bool, optional
    if base in (int, float, str):
        return base, optional
    return _parse_yaml_value, optional


def _or_cleared(parse: Any) -> Any:
    """``parse``, except that ``none`` / ``null`` give ``CLEARED``."""
    def parse_or_clear(text: str) -> Any:
        return CLEARED if text.strip().lower() in _CLEAR_WORDS else parse(text)

    parse_or_clear.__name__ = getattr(parse, "__name__", "value")  # argparse's error names it
    return parse_or_clear


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are None so only given flags override."""
    group = parser.add_argument_group("training config (override a recipe's values)")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model_args":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        parse, optional = _field_parser(field)
        help_text = FIELD_HELP[field.name] if default is None \
            else f"{FIELD_HELP[field.name]} (default: {default})"
        if optional:
            help_text += " (none: unset, whatever a recipe says)"
        group.add_argument(flag, dest=f"cfg_{field.name}",
                           type=_or_cleared(parse) if optional else parse, default=None,
                           metavar="BOOL" if parse is parse_bool else field.name.upper(),
                           help=help_text)
    add_model_arg_flag(group)


def add_model_arg_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--model-arg KEY=VALUE`` (repeatable), read back by ``model_args_from``."""
    parser.add_argument("--model-arg", dest="model_args", action="append", default=[],
                        metavar="KEY=VALUE", help="model constructor override, e.g. "
                        "--model-arg widths=[128,256,368] (repeatable; values parsed as YAML)")


def model_args_from(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model-arg`` flags as keyword arguments (the one KEY=VALUE parser splits them:
    commas inside [..] stay in the value)."""
    items = parse_key_values(args.model_args, "--model-arg", value=str)
    return {key: _parse_yaml_value(text, f"--model-arg {key}") for key, text in items.items()}


def config_overrides(args: argparse.Namespace, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config fields the command line sets: every flag given (``none`` of an optional field
    as None, which then overrides a recipe's value), not the flags left out."""
    return {k[4:]: (None if v is CLEARED else v) for k, v in vars(args).items()
            if k.startswith("cfg_") and v is not None and k[4:] not in skip}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = config_overrides(args)
    model_args = model_args_from(args)
    if args.recipe:
        cfg = TrainConfig.from_yaml(args.recipe, overrides)
    else:
        cfg = TrainConfig.from_dict(overrides, source="command line")
    if model_args:
        cfg = cfg.replace(model_args={**cfg.model_args, **model_args})
    return cfg


def report_run(result, what: str = "") -> int:
    """Print where a finished run is and its final test accuracy (rank 0 only: under torchrun
    every rank returns a result); the exit status: 130 when the run was interrupted."""
    if result.interrupted:
        return 130
    if not result.is_main:
        return 0
    print(f"run: {result.run_dir}")
    final = result.final
    if "test_top1" in final:
        from squeezelab.train.evaluate import EvalProtocol

        top5 = f", top-5 {final['test_top5']:.4f}" if "test_top5" in final else ""
        how = ""
        if final.get("test_protocol"):  # absent from records written before it was kept
            protocol = EvalProtocol.from_dict(final["test_protocol"])
            # scored in the run's own (autotuned) precision; eval/compress score fp32
            note = "" if protocol.precision == "fp32" else (
                ": the run's training precision; squeezelab eval scores fp32")
            how = f" ({protocol.describe()}{note})"
        print(f"final test top-1 {final['test_top1']:.4f}{top5}{how}{what}")
    return 0
