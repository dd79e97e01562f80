"""The ``squeezelab`` command: thin subcommands over the library.

Each command group lives in its own module with an ``add_commands(subparsers)`` function.
Library errors about bad input (``BAD_INPUT_ERRORS``: ValueError and its subclasses, a path
that is missing, a directory or not writable, an optional extra that is not installed) are
printed as one ``error:`` line and exit with status 2; a Ctrl-C exits with 130. Anything else
is a bug in squeezelab and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from squeezelab.extras import MissingExtraError

#: What a user can fix from the command line: the library's errors about bad input (all
#: ValueError subclasses: ConfigError, DataError, CheckpointError, ...), a path that does not
#: exist, is (not) a directory or may not be written, and a missing optional extra.
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                    PermissionError, FileExistsError, MissingExtraError)

# Command-group modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "squeezelab.cli.model_commands",
    "squeezelab.cli.train_commands",
    "squeezelab.cli.eval_commands",
    "squeezelab.cli.prune_commands",
    "squeezelab.cli.compress_commands",
    "squeezelab.cli.ship_commands",
    "squeezelab.cli.method_commands",
    "squeezelab.cli.study_commands",
    "squeezelab.cli.report_commands",
)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, except None: a None default means "not given" (the recipe or
    the checkpoint decides), and the option's help says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def parse_bool(text: str) -> bool:
    """A BOOL flag's value: true/false, yes/no, on/off or 1/0."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_data_source_flags(p: argparse.ArgumentParser) -> None:
    """``--download`` and ``--skip-bad-images``: every command that loads a data set takes
    them, so the data errors' hints (``--download true``) work wherever they are printed."""
    p.add_argument("--download", type=parse_bool, default=False, metavar="BOOL",
                   help="fetch the official CIFAR archive when it is missing")
    p.add_argument("--skip-bad-images", type=parse_bool, default=False, metavar="BOOL",
                   help="leave out image files that cannot be decoded (say which) instead of "
                   "stopping")


MODEL_PATH_HELP = ("checkpoint (.json/.safetensors or stem), a run directory (uses its best "
                   "checkpoint), a .sqz file or an exported .onnx file")


def check_checkpoint(path: str) -> str:
    """The checkpoint ``path`` names (a run directory: its best, else last), which must exist."""
    from squeezelab.checkpoint import checkpoint_paths, resolve_checkpoint

    p = resolve_checkpoint(path)
    json_path, _ = checkpoint_paths(p)
    if not json_path.is_file():
        raise FileNotFoundError(f"checkpoint {json_path} does not exist (give a checkpoint or a "
                                "run directory)")
    return str(p)


def build_parser() -> argparse.ArgumentParser:
    from squeezelab import __version__

    parser = argparse.ArgumentParser(
        prog="squeezelab",
        description="SqueezeNet-family CNNs: design, train, compress, ship, report.",
    )
    parser.add_argument("--version", action="version", version=f"squeezelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as given: what `train --nproc N` re-runs under torchrun
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BAD_INPUT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # never import torch just to find out
            from squeezelab.train.distributed import shutdown_distributed

            shutdown_distributed()  # under torchrun: leave the process group before exiting
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
