"""The one config base: every typed config of squeezelab is a dataclass that inherits
``ConfigBase`` and gets ``from_dict`` / ``to_dict`` / ``from_yaml`` / ``save_yaml`` / ``replace``
from it, so (de)serialisation is written once and a field added later round-trips by itself.

Rules, the same for every config:

* ``to_dict`` writes every dataclass field (nested configs as their own dicts, tuples as lists),
  so what a file records is exactly what the config holds;
* ``from_dict`` rejects an unknown key with an error naming the source (a recipe's path and
  section, a flag) and the close matches, and builds nested configs from nested mappings;
* validation stays in each config's ``__post_init__``, which raises ``ConfigError``.

``parse_key_values`` is the one parser of ``KEY=VALUE,KEY=VALUE`` option strings (``--dsd``,
``--distill``, ``--model-arg``); values are read as YAML scalars (``0.4``, ``true``, ``null``).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

C = TypeVar("C", bound="ConfigBase")


class ConfigError(ValueError):
    """A config value, key or file that is not allowed; the message names which and why."""


def parse_value(text: str) -> Any:
    """A command-line value read as a YAML scalar: ``0.4`` -> 0.4, ``true`` -> True,
    ``null`` -> None, ``[3, 5]`` -> [3, 5]; anything else stays the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_key_values(text: str | None, what: str) -> dict[str, Any]:
    """``"sparsity=0.4,epochs=5-3-5"`` -> ``{"sparsity": 0.4, "epochs": "5-3-5"}``.

    ``what`` names the option in errors (``"--dsd"``). An empty string gives ``{}``."""
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} expects KEY=VALUE items separated by commas, got {item!r}")
        if key.strip() in out:
            raise ConfigError(f"{what}: {key.strip()!r} is given twice")
        out[key.strip()] = parse_value(value.strip())
    return out


def read_yaml_mapping(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """The mapping a YAML file holds; a missing file, a directory, malformed YAML or a file that
    is not a mapping is a ``ConfigError`` naming the file (and the line, for bad YAML)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys, got "
                          f"{type(values).__name__}")
    return values


def _to_plain(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _nested_config_type(hint: Any) -> type[ConfigBase] | None:
    """The ConfigBase subclass a field holds (``X`` or ``X | None``), else None."""
    candidates = [hint, *typing.get_args(hint)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, ConfigBase):
            return c
    return None


class ConfigBase:
    """Base of every squeezelab config dataclass (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested configs as dicts: the inverse of ``from_dict``."""
        return {f.name: _to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None,
                  source: str = "config") -> C:
        """Build from a mapping. An unknown key is a ``ConfigError`` naming ``source`` and the
        close matches; a nested config's mapping becomes that config."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping of {cls.__name__} keys, got "
                              f"{type(values).__name__}")
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}; expected one of "
                                  f"{', '.join(known)}")
        hints = typing.get_type_hints(cls)
        kwargs = dict(values)
        for name, value in values.items():
            nested = _nested_config_type(hints.get(name))
            if nested is not None and isinstance(value, Mapping):
                kwargs[name] = nested.from_dict(value, source=f"{source} {name}:")
        try:
            return cls(**kwargs)
        except ConfigError as e:
            if str(e).startswith(source):
                raise
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: Mapping[str, Any] | None = None,
                  *, section: str | None = None) -> C:
        """Load from a YAML file: the whole file, or its ``section:`` mapping when ``section``
        is given and present. ``overrides`` (e.g. from flags) win over the file's values."""
        values = read_yaml_mapping(path)
        source = str(path)
        if section is not None and section in values:
            values = values[section]
            source = f"{path} {section}:"
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source} must be a mapping, got {type(values).__name__}")
        return cls.from_dict({**values, **(overrides or {})}, source=source)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def all_config_classes() -> list[type[ConfigBase]]:
    """Every ConfigBase subclass defined so far (the round-trip test walks them)."""
    out: list[type[ConfigBase]] = []
    stack = list(ConfigBase.__subclasses__())
    while stack:
        c = stack.pop()
        if c not in out:
            out.append(c)
            stack.extend(c.__subclasses__())
    return sorted(out, key=lambda c: f"{c.__module__}.{c.__qualname__}")


__all__ = ["ConfigBase", "ConfigError", "all_config_classes", "parse_key_values", "parse_value",
           "read_yaml_mapping"]
