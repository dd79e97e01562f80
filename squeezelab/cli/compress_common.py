"""What the compression commands share: data flags and the data they load, the evaluation
protocol every top-1 of a command is scored under, per-layer LAYER=VALUE rules, and --json
records. The commands themselves are in prune_commands.py (prune, sensitivity, learn-arch)
and compress_commands.py (quantize, compress).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squeezelab.cli import add_data_source_flags, parse_bool
from squeezelab.config import parse_key_values


def _number(kind: type) -> Callable[[str], Any]:
    """A LAYER=VALUE list's value reader: ``kind(text)``, or an error naming the text."""
    def read(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
    return read


def layer_rules(items: list[str], what: str = "--rule") -> dict[str, float]:
    """``["conv3x3=0.6", "classifier=0.3"]`` -> ``{"conv3x3": 0.6, "classifier": 0.3}``: a
    repeatable LAYER=VALUE flag (items may also be joined by commas) through the one KEY=VALUE
    parser; ``--rule`` values are sparsities, ``--layer-bits`` values integers."""
    return parse_key_values(items or [], what, value=_number(float if what == "--rule" else int),
                            form="LAYER=VALUE")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="cifar10 | cifar100 | class-folder root "
                   "(default: what the checkpoint was trained on, else CIFAR-10)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit-train", type=int, default=None, help="balanced train subset")
    p.add_argument("--limit-test", type=int, default=None, help="balanced test subset")
    p.add_argument("--batch-size", type=int, default=None)
    add_data_source_flags(p)
    p.add_argument("--test-time-flip", type=parse_bool, default=None, metavar="BOOL",
                   help="score top-1 averaging each image's logits with its mirror's "
                   "(default: as the model was trained, so figures match squeezelab eval's); "
                   "every top-1 is scored fp32 on CPU, and printed with how it was scored")
    p.add_argument("--progress", type=parse_bool, default=None, metavar="BOOL",
                   help="progress bars and epoch lines of the fine-tuning runs and the sensitivity "
                   "scan (false: quiet, for logs; each run's metrics.jsonl is written anyway)")


#: the flags of ``add_data_flags`` that are TrainConfig fields of the fine-tuning runs: the
#: data fine-tuned and scored on, and whether those runs draw progress bars
DATA_FLAGS = ("data", "data_root", "limit_train", "limit_test", "batch_size", "progress")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The data flags given, as TrainConfig fields (a flag not given is left out)."""
    out = {k: getattr(args, k) for k in DATA_FLAGS if getattr(args, k, None) is not None}
    for key in ("download", "skip_bad_images"):  # this command's choice, not the run's
        if getattr(args, key, False):
            out[key] = True
    return out


def train_section_from_flags(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields for fine-tuning runs: the checkpoint's own config, then the data
    flags (``workflows.fine_tuning.fine_tune_train_section``)."""
    from squeezelab.workflows.fine_tuning import fine_tune_train_section

    return fine_tune_train_section(meta, data_overrides(args))


def load_data(train_section: dict[str, Any], need_train: bool = True):
    from squeezelab.train.data import load_run_data

    print(f"loading data: {train_section.get('data') or 'CIFAR-10'}", flush=True)
    return load_run_data({**train_section, "progress": False}, train=need_train)


def check_classes(model_meta: dict[str, Any], data, path: str) -> None:
    names = model_meta.get("class_names")
    if names and list(names) != list(data.classes):
        raise ValueError(f"{path} was trained on classes {names[:5]}..., but the data has "
                         f"{list(data.classes)[:5]}...")


# ------------------------------------------------------------------------------------------
# parsers
# ------------------------------------------------------------------------------------------
CHECKPOINT_HELP = "checkpoint (stem, .json or .safetensors) or a run directory (its best)"


def eval_protocol_for(args: argparse.Namespace, meta: dict[str, Any]):
    """The one evaluation protocol of a compression command: fp32, flip-averaged when
    ``--test-time-flip`` says so, else as the model was trained (as ``squeezelab eval``
    scores it), used for every top-1 the command reports."""
    from squeezelab.train.evaluate import EvalProtocol

    return EvalProtocol.for_model(meta, flip=getattr(args, "test_time_flip", None))


def scoring_data(args: argparse.Namespace, meta: dict[str, Any], train_section: dict[str, Any]):
    """(test split to score on, None) or (None, why top-1 cannot be measured): a checkpoint
    that records no training data (no config) is scored only on the --data it is given,
    never on a guess."""
    if args.data is None and not meta.get("config"):
        return None, (f"{args.checkpoint} records no training data and no --data was given; "
                      "pass --data to score it")
    _, test = load_data(train_section, need_train=False)
    check_classes(meta, test, args.checkpoint)
    return test, None


def format_change(before: float | None, after: float | None) -> str:
    return "" if before is None or after is None else \
        f" ({100 * (after - before):+.2f} points)"


def write_json_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """--json: the record plus the command and the machine that produced it."""
    if args.json_out:
        import sys

        from squeezelab.train.run_dir import environment

        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(
            {"command": "squeezelab " + " ".join(sys.argv[1:]), "checkpoint": args.checkpoint,
             **record, "environment": environment()}, indent=2, default=str) + "\n")
        print(f"wrote {args.json_out}")
