"""The ``squeezelab`` command: thin subcommands over the library.

Each command group lives in its own module with an ``add_commands(subparsers)`` function.
Library errors about bad input (ValueError and its subclasses, FileNotFoundError) are printed
as one ``error:`` line and exit with status 2; a Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Command-group modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "squeezelab.cli.model_commands",
    "squeezelab.cli.train_commands",
    "squeezelab.cli.eval_commands",
    "squeezelab.cli.compress_commands",
    "squeezelab.cli.ship_commands",
    "squeezelab.cli.method_commands",
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
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # never import torch just to find out
            from squeezelab.train.distributed import shutdown_distributed

            shutdown_distributed()  # under torchrun: leave the process group before exiting
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
