"""YAML -> typed :class:`Config`, with ``base:`` inheritance and ``--set key.path=value`` overrides.

Every problem is reported as a :class:`ConfigError` naming the key path (``moe.top_k``) and, where known, the
file, before any Cell is built.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from typing import Any

import yaml

from .schema import Config


class ConfigError(ValueError):
    """A recipe problem; the message starts with the offending key path or file."""


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str, _seen: tuple = ()) -> dict:
    """Read a recipe, resolving ``base: other.yaml`` (relative to the file) recursively."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"{path}: circular 'base:' chain {' -> '.join(_seen)}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:
        bases = [base] if isinstance(base, str) else list(base)
        merged: dict = {}
        for b in bases:
            merged = _merge(merged, read_yaml(os.path.join(os.path.dirname(path), b), _seen + (path,)))
        data = _merge(merged, data)
    return data


def parse_overrides(items: list[str] | None) -> dict:
    """``["moe.top_k=4", "train.lr=1e-3"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse value '{raw}': {e}") from e
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override of '{p}'")
        node[parts[-1]] = value
    return out


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, arg, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:                      # `key:` / `--set key=` in YAML means the empty string
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known keys of "
                          f"'{prefix or 'top level'}': {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            val = _coerce(data[name], hints[name], path)
            choices = f.metadata.get("choices")
            if choices and val not in choices:
                raise ConfigError(f"{path}: '{val}' is not one of {', '.join(map(str, choices))}")
            kwargs[name] = val
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    """Build (without validating) a Config from a nested dict."""
    return _build(Config, data)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_config(path: str | None = None, overrides: list[str] | None = None, validate: bool = True) -> Config:
    """Read ``path`` (or defaults), apply ``key.path=value`` overrides, type-check and validate."""
    data = read_yaml(path) if path else {}
    data = _merge(data, parse_overrides(overrides))
    try:
        cfg = from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    if validate:
        from .validate import validate_config
        try:
            validate_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg


def dump_config(cfg, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
