"""The optional dependencies (pyproject's extras) and the one error a missing one gives.

``export`` (onnx, onnxruntime, onnxscript) is needed to write or run ``.onnx`` files, ``zstd``
(zstandard) only for the zstd baseline of a size report. Everything else works without them,
so they are imported where they are used, through ``import_extra``: a user who lacks one gets a
``MissingExtraError`` naming the module, what needed it and the exact install command, instead
of a ``ModuleNotFoundError`` traceback from deep inside torch.onnx.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> the modules it installs (as imported), in pyproject.toml's order
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "zstd": ("zstandard",),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed (or does not import); the message names it, what
    needed it and the pip command that installs it. An ImportError, so code that can do without
    the module catches it as one; the CLI prints it as one ``error:`` line, exit status 2."""


def install_hint(extra: str) -> str:
    """The commands that install ``extra``: from PyPI, and in a source checkout."""
    return f"pip install 'squeezelab[{extra}]' (in a source checkout: pip install -e '.[{extra}]')"


def import_extra(module: str, purpose: str) -> ModuleType:
    """``import module``, one of the ``EXTRAS``; ``purpose`` says what needs it (``"squeezelab
    export"``). A missing module is a ``MissingExtraError`` naming the extra to install."""
    extra = next((name for name, modules in EXTRAS.items() if module in modules), None)
    if extra is None:
        raise ValueError(f"{module!r} is not in an optional extra; known: "
                         f"{', '.join(m for ms in EXTRAS.values() for m in ms)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        # e.name is the module that was not found: this one, or one it needs (a broken install)
        what = (f"{module} is not installed" if e.name in (None, module)
                else f"{module} does not import ({e})")
    except ImportError as e:  # installed but broken (a missing shared library, a bad version)
        what = f"{module} does not import ({e})"
    raise MissingExtraError(f"{purpose} needs the [{extra}] extra: {what}; install it with "
                            f"{install_hint(extra)}") from None


def require_extras(modules: tuple[str, ...] | list[str], purpose: str) -> None:
    """``import_extra`` each of ``modules``: a command checks all it will need before it starts
    work, so it never stops half-way (an ``.onnx`` written, then no onnxruntime to check it)."""
    for module in modules:
        import_extra(module, purpose)


__all__ = ["EXTRAS", "MissingExtraError", "import_extra", "install_hint", "require_extras"]
