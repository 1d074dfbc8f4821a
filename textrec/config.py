"""Nested frozen dataclasses from YAML plus dotted command-line overrides.

Every default lives in exactly one place: the dataclass field. A YAML file and the overrides only
replace values, and they are checked against the dataclass as they are applied, so a typo such as
``--loop.epoch=3`` fails at once with the valid keys listed instead of being silently ignored::

    cfg = load(TrainConfig, "configs/cpu.yaml", ["--loop.epochs=3", "model.options.hidden=256"])

Override values are parsed by the field's annotated type (``int``, ``float``, ``bool``, ``str``,
``tuple[...]``/``list[...]``, optional types, nested dataclasses). Fields typed ``dict[str, Any]``
are free-form option bags (a model's options, say): their values are parsed as YAML scalars, so
``256`` becomes an int, ``1e-3`` a float and ``true`` a bool, and the owner of the bag checks its keys.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ConfigError(ValueError):
    """A configuration file or override does not fit the configuration's dataclasses."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown_key(key: str, where: str, cls: type) -> ConfigError:
    valid = ", ".join(sorted(_fields(cls)))
    section = where.rstrip(".") or "the top level"
    return ConfigError(f"unknown config key {where + key!r}; valid keys in {section}: {valid}")


def _is_mapping(tp: Any) -> bool:
    return tp in (dict, Mapping) or typing.get_origin(tp) in (dict, Mapping)


def _is_sequence(tp: Any) -> bool:
    return tp in (tuple, list) or typing.get_origin(tp) in (tuple, list, Sequence)


def _optional_inner(tp: Any) -> Any | None:
    """``X | None`` -> ``X``; anything else -> None."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def parse_text(text: str, tp: Any, *, key: str = "") -> Any:
    """Parse an override's text as type ``tp``.

    >>> parse_text("3", int), parse_text("1e-3", float), parse_text("no", bool)
    (3, 0.001, False)
    >>> parse_text("[1, 2]", tuple[int, ...]), parse_text("a,b", list[str])
    ((1, 2), ['a', 'b'])
    >>> parse_text("null", int | None) is None
    True
    """
    inner = _optional_inner(tp)
    if inner is not None:
        return None if text.strip().lower() in ("none", "null", "~", "") else parse_text(text, inner, key=key)
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if tp in (int, float):
        try:
            value = yaml.safe_load(text) if tp is float else int(text.strip())
            return float(value) if tp is float else value
        except (ValueError, TypeError, yaml.YAMLError) as e:
            raise ConfigError(f"{key}: expected {tp.__name__}, got {text!r}") from e
    if tp is str or tp is Any:
        return text if tp is str else yaml.safe_load(text)
    if tp is Path:
        return Path(text)
    if _is_sequence(tp):
        stripped = text.strip()
        items = yaml.safe_load(stripped) if stripped.startswith("[") else \
            [s for s in stripped.split(",") if s.strip()]
        return coerce(items, tp, key=key)
    if _is_mapping(tp):
        return coerce(yaml.safe_load(text) or {}, tp, key=key)
    raise ConfigError(f"{key}: cannot parse a value of type {tp} from the command line")


def coerce(value: Any, tp: Any, *, key: str = "") -> Any:
    """Check ``value`` (from YAML) against type ``tp``, converting where it is lossless."""
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else coerce(value, inner, key=key)
    if isinstance(value, str) and tp is not str and tp is not Any:
        return parse_text(value, tp, key=key)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key or 'config'}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where=f"{key}." if key else "")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if _is_sequence(tp):
        if isinstance(value, str) or not isinstance(value, Sequence):
            value = [value]
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, key=f"{key}[{i}]") for i, v in enumerate(value)]
        return list(items) if list in (tp, origin) else tuple(items)
    if _is_mapping(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping; missing keys keep their defaults."""
    fields, hints = _fields(cls), _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(str(key), where, cls)
        kwargs[key] = coerce(value, hints[key], key=f"{where}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists/scalars: what YAML, JSON and torch.save accept."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def split_override(text: str) -> tuple[list[str], str]:
    """``"--loop.epochs=3"`` -> (["loop", "epochs"], "3")."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE such as --loop.epochs=3")
    key, value = body.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part")
    return parts, value


def _set_path(cls: type, data: dict[str, Any], parts: list[str], text: str, where: str = "") -> None:
    """Put the parsed override into ``data`` (nested dicts that mirror ``cls``)."""
    head, rest = parts[0], parts[1:]
    fields = _fields(cls)
    if head not in fields:
        raise _unknown_key(head, where, cls)
    tp = _hints(cls)[head]
    key = f"{where}{head}"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not rest:
            raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.{next(iter(_fields(tp)))}=...")
        sub = data.setdefault(head, {})
        _set_path(tp, sub, rest, text, where=f"{key}.")
        return
    if rest and _is_mapping(tp):
        bag = data.setdefault(head, {})
        for p in rest[:-1]:
            bag = bag.setdefault(p, {})
        bag[rest[-1]] = yaml.safe_load(text) if text.strip() else ""
        return
    if rest:
        raise ConfigError(f"{key} is a value, not a section; cannot set {key}.{'.'.join(rest)}")
    data[head] = parse_text(text, tp, key=key)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name the file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) if p.exists() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: expected a mapping of sections at the top, got {type(data).__name__}")
    return dict(data)


def load(cls: type[T], source: str | os.PathLike | Mapping[str, Any] | None = None,
         overrides: Sequence[str] = ()) -> T:
    """``cls`` from its defaults, then ``source`` (a YAML file or its parsed mapping), then the dotted
    overrides in order."""
    if isinstance(source, Mapping):
        data, where = dict(source), ""
    else:
        data = read_yaml(source) if source else {}
        where = f"{source}: " if source else ""
    try:
        from_dict(cls, data)  # check the file alone first, so errors name it
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from e
    patch: dict[str, Any] = {}
    for text in overrides:
        parts, value = split_override(text)
        _set_path(cls, patch, parts, value)
    return from_dict(cls, _merge(data, patch))


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` for nested configs: ``replace(cfg, **{"loop.epochs": 3})``."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = replace(getattr(obj, head), **sub)
    return dataclasses.replace(obj, **flat)  # type: ignore[type-var]
