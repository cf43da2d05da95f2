"""YAML -> typed :class:`Config`, with ``base:`` inheritance and ``--set key.path=value`` overrides.

Every problem is reported as a :class:`ConfigError` naming the key path (``moe.top_k``) and, where known, the
file, before any Cell is built.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from typing import Any

import yaml

from .errors import ConfigError
from .schema import Config
from .validate import validate_config

__all__ = ["ConfigError", "dump_config", "from_dict", "load_config", "parse_overrides", "read_yaml", "to_dict"]


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
        raise ConfigError(f"{path}: circular 'base:' chain {' -> '.join(_seen + (path,))}")
    data = parse_yaml_file(path)
    if data is None:
        raise ConfigError(f"{path}: empty recipe (no sections); an empty file would silently train the "
                          f"defaults -- write at least 'base: <recipe>.yaml' or one section")
    base = data.pop("base", None)
    if base:
        if not (isinstance(base, str) or isinstance(base, list) and all(isinstance(b, str) for b in base)):
            raise ConfigError(f"{path}: base: must be a file name or a list of file names, got {base!r}")
        bases = [base] if isinstance(base, str) else list(base)
        merged: dict = {}
        for b in bases:
            target = os.path.join(os.path.dirname(path), b)
            if not os.path.isfile(target):
                raise ConfigError(f"{path}: base: file not found: {os.path.abspath(target)}")
            merged = _merge(merged, read_yaml(target, _seen + (path,)))
        data = _merge(merged, data)
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml_file(path: str) -> dict | None:
    """The top-level mapping of a YAML file (``None`` when the file is empty); ConfigError naming the file when it
    is unreadable, not UTF-8, not YAML or not a mapping. Also used by ``run/train.py``'s recipe-kind detection."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.object[e.start:e.start + 1]!r})") \
            from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got a {type(data).__name__}")
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
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{key.strip()}: cannot parse value '{raw}' of --set: {problem}") from None
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
        if isinstance(value, str):                   # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):                # lr=nan / .inf would train garbage or crash mid-run
            raise ConfigError(f"{path}: must be a finite number, got {value}")
        return value
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
        try:
            validate_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg


def dump_config(cfg, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
