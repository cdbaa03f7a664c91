"""Validate a component's or stage's options against its `Options` dataclass, once, at the edge."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lmmsae.errors import UserError, did_you_mean


def parse_options(options_cls: type, values: dict[str, Any] | None, where: str, section: str | None = None):
    """Build `options_cls(**values)`, turning unknown keys and wrong types into one-line UserErrors.

    `where` names the thing in messages ("dataset 'imagefolder'"); `section` is the config path a
    user sets its options under (`-o dataset.root=...`), `where` itself when that is a path."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    for key in values:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            alias = getattr(options_cls, "ALIASES", {}).get(key)
            hint = f" Did you mean {alias!r}?" if alias in fields else did_you_mean(key, fields)
            raise UserError(f"unknown option {key!r} for {where}.{hint} Valid options: {known}")
    hints = typing.get_type_hints(options_cls)
    coerced = {k: _coerce(v, hints.get(k, Any), f"{section or where}.{k}") for k, v in values.items()}
    missing = [
        n for n, f in fields.items()
        if n not in coerced and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{where} needs option(s) {', '.join(missing)}: set them with -o {section or where}.{missing[0]}=...")
    try:
        return options_cls(**coerced)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad options for {where}: {exc}") from None


def require(section: str, options: Any, **conditions: tuple[bool, str]) -> None:
    """For an Options' __post_init__: one line naming the first option whose condition is false,
    `name=(condition, what it must be)`, so a bad value fails when the config is read."""
    for name, (ok, must) in conditions.items():
        if not ok:
            raise UserError(f"{section}.{name}={getattr(options, name)!r}: it must be {must}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Accept values that mean the hinted type (YAML gives '1e-3' as a string, ints for floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or value is None and (type(None) in args):
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError:
                pass
        raise UserError(f"{where} = {value!r} is not a valid {_name(hint)}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where} = {value!r} must be one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} = {value!r} should be a list")
        inner = args[0] if args else Any
        return [_coerce(v, inner, where) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} = {value!r} should be a mapping")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where} = {value!r} should be true or false")
    if hint in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{where} = {value!r} should be a number")
        try:
            number = float(value) if hint is float else int(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} = {value!r} should be a{'n integer' if hint is int else ' number'}") from None
        if hint is int and isinstance(value, float) and value != int(value):
            raise UserError(f"{where} = {value!r} should be an integer")
        return number
    if hint is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where} = {value!r} should be a string")
        return str(value)
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
