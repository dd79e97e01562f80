"""The one config base: every typed config of squeezelab is a dataclass that inherits
``ConfigBase`` and gets ``from_dict`` / ``to_dict`` / ``from_yaml`` / ``save_yaml`` / ``replace``
from it, so (de)serialisation is written once and a field added later round-trips by itself.

Rules, the same for every config:

* ``to_dict`` writes every dataclass field (nested configs as their own dicts, tuples as lists),
  so what a file records is exactly what the config holds;
* ``from_dict`` rejects an unknown key with an error naming the source (a recipe's path and
  section, a flag) and the close matches, and builds nested configs from nested mappings;
  a config may accept other names for a field (``aliases``) or shorthand keys
  (``normalize_input``, e.g. DSD's ``epochs: 5-3-5``), resolved before the check;
* validation stays in each config's ``__post_init__``, which raises ``ConfigError`` (or
  ``ValueError``); ``from_dict`` puts the source in front of the message;
* ``recipe_section`` names the recipe section a config is read from (``compress:``), which
  ``from_yaml`` reads by default.

``parse_key_values`` is the one parser of ``KEY=VALUE,KEY=VALUE`` option strings (``--dsd``,
``--distill``, ``--model-arg``); values are read as YAML scalars (``0.4``, ``true``, ``null``).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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


def _split_items(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes, so a YAML value such as
    ``fire_config=[[16, 64, 64]]`` or ``name='a,b'`` stays one item."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def parse_key_values(text: str | Iterable[str] | None, what: str,
                     value: Callable[[str], Any] = parse_value,
                     form: str = "KEY=VALUE") -> dict[str, Any]:
    """``"sparsity=0.4,epochs=5-3-5"`` -> ``{"sparsity": 0.4, "epochs": "5-3-5"}``.

    ``text`` may also be a list of such strings (a repeatable flag: ``--rule a=1 --rule b=2``).
    ``what`` names the option in errors (``"--dsd"``). ``value`` turns each value's text into
    the value (default: a YAML scalar); a ValueError it raises becomes a ConfigError naming
    ``what`` and the item. ``form`` is what an item looks like, for the error about one
    without ``=`` (``"LAYER=VALUE"``). An empty string or list gives ``{}``; a key given twice
    is an error."""
    texts = [text] if isinstance(text, str) or text is None else list(text)
    out: dict[str, Any] = {}
    for part in texts:
        for item in _split_items(part or ""):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"{what} expects {form} items separated by commas, got "
                                  f"{item!r}")
            if key in out:
                raise ConfigError(f"{what}: {key!r} is given twice")
            try:
                out[key] = value(raw.strip())
            except ValueError as e:
                raise ConfigError(f"{what} {item!r}: {e}") from None
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

    #: the recipe section this config is read from (``"compress"``); None: the top level
    recipe_section: ClassVar[str | None] = None
    #: other names accepted on input for a field: ``{"T": "temperature"}``
    aliases: ClassVar[dict[str, str]] = {}
    #: the ConfigError subclass raised for unknown or missing keys (e.g. ``DistillError``)
    config_error: ClassVar[type[ConfigError]] = ConfigError

    @classmethod
    def normalize_input(cls, values: Mapping[str, Any], source: str) -> dict[str, Any]:
        """``values`` with ``aliases`` resolved into field names; a config whose input has
        shorthand keys (DSD's ``epochs``) extends this. Runs before unknown keys are checked."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = cls.aliases.get(key, key)
            if name in out:
                raise cls.config_error(f"{source}: {name!r} is given twice (as {key!r})")
            out[name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field, nested configs as dicts: the inverse of ``from_dict``."""
        return {f.name: _to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None,
                  source: str | None = None) -> C:
        """Build from a mapping. An unknown or missing key is a ``ConfigError`` naming
        ``source`` (default: the class name) and the close matches; a nested config's mapping
        becomes that config; a bad value's error from ``__post_init__`` gets ``source`` in
        front."""
        # "recipe.yaml dsd:" and "recipe.yaml dsd" name the same place; the colon comes below
        source = (source or cls.__name__).rstrip(":")
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise cls.config_error(f"{source}: expected a mapping of {cls.__name__} keys, got "
                                   f"{type(values).__name__}")
        values = cls.normalize_input(values, source)
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise cls.config_error(f"{source}: unknown key {key!r}{hint}; expected one of "
                                       f"{', '.join(known)}")
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.init and f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise cls.config_error(f"{source}: {', '.join(missing)} "
                                   f"{'is' if len(missing) == 1 else 'are'} required")
        hints = typing.get_type_hints(cls)
        kwargs = dict(values)
        for name, value in values.items():
            nested = _nested_config_type(hints.get(name))
            if nested is not None and isinstance(value, Mapping):
                kwargs[name] = nested.from_dict(value, source=f"{source} {name}")
        try:
            return cls(**kwargs)
        except ValueError as e:  # ConfigError and the ValueErrors of __post_init__
            if str(e).startswith(source):
                raise
            kind = type(e) if isinstance(e, ConfigError) else cls.config_error
            raise kind(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: Mapping[str, Any] | None = None,
                  *, section: str | None = None) -> C:
        """Load from a YAML file: the whole file, or its ``section:`` mapping (default: the
        class's ``recipe_section``) when the file has one. ``overrides`` (e.g. from flags) win
        over the file's values."""
        section = section or cls.recipe_section
        values = read_yaml_mapping(path)
        source = str(path)
        if section is not None and section in values:
            values = values[section]
            source = f"{path} {section}"
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source}: the section must be a mapping, got "
                                  f"{type(values).__name__}")
        return cls.from_dict({**values, **(overrides or {})}, source=source)

    @classmethod
    def from_key_values(cls: type[C], text: str | Iterable[str] | None, what: str) -> C:
        """From a command-line option string ``KEY=VALUE,KEY=VALUE`` (``parse_key_values``);
        ``what`` names the option (``"--distill"``) in errors."""
        return cls.from_dict(parse_key_values(text, what), source=what)

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
