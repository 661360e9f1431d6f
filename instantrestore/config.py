"""The one way configs are read: a YAML file, dotted `key=value` overrides, then typed dataclasses.

    raw = read_yaml("configs/train_x.yaml", ["optim.lr_g=1e-4", "model.overrides.adain=false"])
    config = load_dataclass(TrainConfig, raw, source="configs/train_x.yaml")

Override keys are dotted paths from the top of the file; values are parsed as YAML (numbers, booleans,
lists, mappings). Every mistake (unknown key, wrong type, missing file) is one `ConfigError` line naming
the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from instantrestore.errors import ConfigError

T = TypeVar("T")


def read_yaml(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The top-level mapping of a YAML file, with dotted `key=value` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{path}: not readable YAML ({first_line})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for override in overrides:
        apply_override(values, override)
    return values


def apply_override(values: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in nested dicts; the value is parsed as YAML (empty: null)."""
    key, sep, raw = override.partition("=")
    if not sep:
        raise ConfigError(f"override {override!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: value is not valid YAML") from None
    set_dotted(values, key.strip(), value, f"override {override!r}")


def set_dotted(values: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """values["a"]["b"]["c"] = value for key "a.b.c", making the sections on the way."""
    parts = key.split(".")
    where = where or f"key {key!r}"
    if not all(parts):
        raise ConfigError(f"{where}: empty key")
    node = values
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_dataclass(cls: type[T], values: Any, source: str, prefix: str = "") -> T:
    """Dataclass `cls` from a mapping; nested dataclass fields recurse, unknown keys and wrong types are
    ConfigErrors naming `source` (the file) and the dotted key (`prefix` + name)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'config'}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    for name in values:
        if name not in known:
            raise ConfigError(f"{source}: unknown key '{prefix}{name}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields:
        if f.name in values:
            kwargs[f.name] = _check_type(values[f.name], hints[f.name], prefix + f.name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing key '{prefix}{f.name}'")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a dataclass's own checks (__post_init__)
        raise ConfigError(f"{source}: {err}") from None


def _check_type(value: Any, annotation: Any, key: str, source: str) -> Any:
    """`value` as `annotation` (ints for floats, and YAML's `2e-3` strings too), or a ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        kinds = [t for t in options if t is not type(None)]
        for kind in kinds[:-1]:  # the first option the value fits; the last one reports the error
            try:
                return _check_type(value, kind, key, source)
            except ConfigError:
                pass
        return _check_type(value, kinds[-1], key, source)
    if dataclasses.is_dataclass(annotation):
        return load_dataclass(annotation, value, source, f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(annotation) or (Any,)
        return [_check_type(v, item, key, source) for v in value]
    if origin is tuple:
        items = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{source}: '{key}' must be a list of {len(items)} values, got {value!r}")
        return tuple(_check_type(v, t, key, source) for v, t in zip(value, items))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML reads 2e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, annotation) or (annotation in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{key}' must be {annotation.__name__}, got {value!r}")
    return value
