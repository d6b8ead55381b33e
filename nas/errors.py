"""User-facing errors and the small validation kit every config section uses.

A :class:`UserError` is a mistake the user can fix (a bad YAML value, a missing data path, a bad CLI
flag). Its message is one complete paragraph; the command-line tools print it without a traceback and
exit with status 2. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin


class UserError(Exception):
    """A mistake the user can fix; ``str(err)`` is the whole explanation."""


class ConfigError(UserError):
    """A bad value in a config file or mapping.

    Args:
        file: file the value came from (``None`` for in-memory dicts).
        key: dotted key path, e.g. ``space.stages.S3.depth``.
        problem: what is wrong, as a sentence fragment.
        allowed: what would be accepted.
        value: the offending value (omit when there is none, e.g. a missing key).
    """

    _NO_VALUE = object()

    def __init__(self, file: str | None, key: str, problem: str, allowed: str | None = None, value: Any = _NO_VALUE):
        self.file, self.key, self.problem, self.allowed = file, key, problem, allowed
        self.value = value
        where = f"{file}: " if file else ""
        msg = f"{where}`{key}`: {problem}"
        if value is not ConfigError._NO_VALUE:
            msg += f" (got {_short(value)})"
        if not msg.endswith((".", "?", "!")):
            msg += "."
        if allowed:
            msg += f" Allowed: {allowed}."
        super().__init__(msg)


def yaml_problem(err: Exception) -> str:
    """One line for a ``yaml.YAMLError``: ``at line L, column C: <problem>`` (a tab gets a hint)."""
    mark = getattr(err, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}" if mark else "at an unknown position"
    problem = getattr(err, "problem", None) or (str(err).splitlines() or ["unreadable"])[0]
    if "'\\t'" in problem:
        problem += " (YAML indents with spaces; a tab is not allowed there)"
    return f"{where}: {problem}"


def _short(value: Any, limit: int = 80) -> str:
    # a container is shown through reprlib, bounded in length and depth: a YAML alias "billion laughs" shares
    # one list millions of times, and a full repr() of it would take minutes and gigabytes
    text = _BOUNDED.repr(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BOUNDED = reprlib.Repr()
_BOUNDED.maxlevel, _BOUNDED.maxlist, _BOUNDED.maxtuple, _BOUNDED.maxdict = 4, 12, 12, 12
_BOUNDED.maxset, _BOUNDED.maxfrozenset, _BOUNDED.maxstring, _BOUNDED.maxother = 12, 12, 80, 80


def check_keys(data: Any, allowed: typing.Iterable[str], file: str | None, path: str) -> Mapping:
    """Check that ``data`` is a mapping with only ``allowed`` keys; suggest the closest on a typo."""
    allowed = list(allowed)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            file, path or "<top level>", "must be a mapping of keys to values", f"keys {', '.join(allowed)}", value=data
        )
    for key in data:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1) or _prefix_match(str(key), allowed)
            hint = f". Did you mean `{near[0]}`?" if near else ""
            raise ConfigError(file, _join(path, str(key)), "unknown key" + hint, ", ".join(allowed))
    return data


def _prefix_match(key: str, allowed: list[str]) -> list[str]:
    """The one allowed key that starts with ``key`` (``grace`` -> ``grace_period``), if exactly one does."""
    hits = [a for a in allowed if len(key) >= 3 and a.lower().startswith(key.lower())]
    return hits if len(hits) == 1 else []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe_type(tp: Any) -> str:
    """A short human description of a type annotation, for 'Allowed:' texts."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in get_args(tp) if a is not type(None)) + (
            " or null" if type(None) in get_args(tp) else ""
        )
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"a list of {describe_type(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, file: str | None, key: str) -> Any:
    origin = get_origin(tp)

    def bad() -> ConfigError:  # built only when raised: describing the type costs more than the check
        return ConfigError(file, key, "has the wrong type", describe_type(tp), value=value)

    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(file, key, "is not one of the allowed values", describe_type(tp), value=value)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):  # an optional section: its own errors
            return parse_dataclass(inner[0], value, file, key)
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, file, key)
            except ConfigError:
                continue
        raise bad()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, file, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad()
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            raise ConfigError(file, key, "is too large", "a finite number", value=value) from None
        if not math.isfinite(value):  # YAML's .nan / .inf
            raise ConfigError(file, key, "must be a finite number", describe_type(tp), value=value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, file, key)
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a dataclass, resolved once (a record file parses thousands of them)."""
    return typing.get_type_hints(cls)


def parse_dataclass(cls: type, data: Any, file: str | None = None, path: str = ""):
    """Build dataclass ``cls`` from a user mapping, validating keys, types and field checks.

    Field metadata understood:
        ``check``: ``callable(value) -> bool``; ``allowed``: text shown when the check fails.
    Missing keys take the dataclass defaults. Nested dataclass fields are parsed recursively.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = check_keys(data, fields, file, path)
    hints = _type_hints(cls)
    kwargs = {}
    for name, raw in data.items():
        f = fields[name]
        key = _join(path, name)
        value = _coerce(raw, hints[name], file, key)
        check = f.metadata.get("check")
        if check is not None and not check(value):  # the message shows the value as written (0, not 0.0)
            raise ConfigError(file, key, "is out of range", f.metadata.get("allowed"), value=raw)
        kwargs[name] = value
    return cls(**kwargs)
