"""Strict configuration: frozen dataclasses are the schema, YAML files hold values only.

``load_config(Schema, "configs/x.yaml")`` builds a frozen instance. Loading is strict:

* an unknown key fails and suggests the closest valid key ("did you mean ...");
* a value of the wrong type fails with the expected type and the received value;
* range checks live in each schema's ``__post_init__`` and raise ``ValueError`` (expected vs. received).

Nothing in YAML is executed: ``yaml.safe_load`` only, no ``_target_`` strings, no resolvers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from simdiff.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or dict does not match its schema."""


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert lists to tuples, dicts to dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1 and isinstance(value, dict):
            # Optional[Schema]: the nested error (unknown key, did-you-mean, range) is the useful one.
            raise errors[0]
        raise ConfigError(f"{where}: expected {_type_name(tp)}, received {value!r}")
    if origin is Literal:
        # Compare types too: True == 1 and 1.0 == 1 in Python, but neither is the literal 1.
        if not any(value == a and type(value) is type(a) for a in get_args(tp)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, received {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, received {value!r}")
        return _build(tp, value, where)
    if tp in (tuple, list):
        origin = tp
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, received {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, received {len(value)} ({value!r})")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, received {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        # YAML reads 1e-4 as a string in some dialects and 3 as int: accept both, reject bools.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected float, received {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, received {value!r}") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected int, received {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool (true/false), received {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, received {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, received {value!r}")
    return value


def _build(schema: type[T], data: dict, where: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = get_type_hints(schema)
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown key '{k}'{_did_you_mean(str(k), list(fields))}; "
            f"valid keys: {', '.join(fields)}"
        )
    missing = [name for name, f in fields.items() if name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}missing required key '{missing[0]}' (required: {', '.join(missing)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return schema(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"{where or schema.__name__}: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{exc}") from exc


def _unique_key_loader():
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key (plain YAML keeps the last one silently,
    so a config with two ``steps:`` lines would run with whichever came last)."""
    import yaml

    class UniqueKeySafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeySafeLoader


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        # safe_load with a duplicate-key check: the SafeLoader's constructors only
        loader = _unique_key_loader()(path.read_text(encoding="utf-8"))
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        # an empty file is almost always a mistake (a truncated copy, a wrong path): running every default
        # instead would start a full-size run nobody asked for
        raise ConfigError(f"{path}: the file is empty; expected a mapping of config values (write `{{}}` to run "
                          "every default)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, received {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str] | None) -> dict:
    """``["train.steps=100", "seed=3"]`` -> nested dict, values parsed as YAML scalars."""
    import yaml

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE (e.g. train.steps=100)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': {'.'.join(parts[:i + 1])} was set to a value by an earlier "
                                  f"override, so it has no key {parts[i + 1]!r}")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            why = str(getattr(exc, "problem", None) or exc).strip()
            raise ConfigError(f"override '{item}': expected a YAML value after '=' (a number, a string, [a, b] or "
                              f"{{k: v}}), received {raw!r} ({why})") from exc
    return out


def load_config(
    schema: type[T], source: str | os.PathLike | dict | None = None, overrides: dict | None = None
) -> T:
    """Build a frozen ``schema`` instance from a YAML path or dict (plus optional nested overrides)."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, received {schema!r}")
    if source is None:
        data: dict = {}
        label = ""
    elif isinstance(source, dict):
        data, label = dict(source), ""
    else:
        path = Path(source)
        data, label = _read_yaml(path), ""
        try:
            return _build(schema, _merge(data, overrides or {}), label)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return _build(schema, _merge(data, overrides or {}), label)


def to_dict(cfg: Any) -> Any:
    """A plain, YAML/JSON-friendly view of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Any, path: str | os.PathLike | None = None) -> str:
    import yaml

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        from simdiff.utils.io import atomic_write_text

        atomic_write_text(path, text)
    return text


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ``ValueError`` naming the field, the allowed interval and the received value."""
    bad = (
        (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
    )
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{name}: expected a value in {lb}{lo_s}, {hi_s}{rb}, received {value!r}")


__all__ = ["ConfigError", "load_config", "to_dict", "dump_yaml", "parse_overrides", "check_range"]

# typing is imported for users that build schemas from this module's namespace.
_ = typing
