"""Typed validation of configuration tables against dataclasses.

The core's own keys and every plugin's ``Options`` are described the same way:
a frozen dataclass. :func:`build` checks a TOML table against one, collecting
every problem with its key path instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

#: What ``[server] outbox`` or a ``store`` option starts with when it names a PostgreSQL database.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Secret:
    """A password or key from the config: literal, or ``{ env = "NAME" }``.

    Its repr and str never show the value, so logging a config is safe.
    """

    value: str = field(repr=False)
    origin: str = "literal"

    def reveal(self) -> str:
        """The secret itself; call only where it is actually used."""
        return self.value

    def __str__(self) -> str:
        return f"<secret from {self.origin}>"


@dataclass(frozen=True)
class StoreLocation:
    """Where a plugin keeps its records (a ``store`` option): a file, or a PostgreSQL database.

    Written as a path (relative to the config file) or a ``postgresql://`` URL,
    either literally or as ``{ env = "NAME" }``. The URL is a :class:`Secret`:
    it may hold a password, which the config file itself may not.
    """

    path: Path | None = None
    url: Secret | None = None

    def __str__(self) -> str:
        return str(self.path) if self.url is None else str(self.url)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration, with the key path that holds it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Context:
    """What validation needs besides the table: where relative paths start."""

    base_dir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        """Record a problem; validation goes on to find the others."""
        self.problems.append(Problem(path, message))


_MISSING = object()


def build(
    cls: type[Any],
    table: Mapping[str, Any],
    path: str,
    ctx: Context,
    skip: frozenset[str] = frozenset(),
    also_known: frozenset[str] = frozenset(),
) -> Any:
    """Instantiate dataclass ``cls`` from ``table``; return None if any key was wrong.

    ``skip`` names fields filled by the caller; ``also_known`` names keys of the
    table that belong to someone else (they are neither used nor reported).
    """
    hints = typing.get_type_hints(cls)
    before = len(ctx.problems)
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for name, fdef in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name not in table:
            if fdef.default is dataclasses.MISSING and fdef.default_factory is dataclasses.MISSING:
                ctx.problem(key_path, "required")
            continue
        value = convert(hints[name], table[name], key_path, ctx)
        if value is not _MISSING:
            values[name] = value
    known = set(fields) | set(skip) | set(also_known)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.problem(f"{path}.{key}" if path else key, f"unknown key{hint}")
    if len(ctx.problems) > before:
        return None
    return cls(**values)


def convert(tp: Any, value: Any, path: str, ctx: Context) -> Any:
    """Check ``value`` against type ``tp``; return it converted, or _MISSING."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(args, value, path, ctx)
    if origin is Literal:
        if value in args:
            return value
        return _fail(ctx, path, "must be one of " + ", ".join(repr(a) for a in args))
    if origin in (list, tuple, frozenset, set) or tp in (list, tuple):
        return _convert_sequence(origin or tp, args, value, path, ctx)
    if origin in (dict, Mapping):
        return _convert_mapping(args, value, path, ctx)
    return _convert_scalar(tp, value, path, ctx)


def _convert_union(args: tuple[Any, ...], value: Any, path: str, ctx: Context) -> Any:
    if value is None and type(None) in args:
        return None
    candidates = [a for a in args if a is not type(None)]
    for candidate in candidates:
        trial = Context(ctx.base_dir, ctx.environ)
        result = convert(candidate, value, path, trial)
        if result is not _MISSING and not trial.problems:
            return result
    if len(candidates) == 1:
        return convert(candidates[0], value, path, ctx)
    return _fail(ctx, path, "must be " + " or ".join(_describe(a) for a in candidates))


def _convert_sequence(kind: Any, args: tuple[Any, ...], value: Any, path: str, ctx: Context) -> Any:
    item_type = args[0] if args else Any
    if isinstance(value, str) and item_type is str:
        value = [value]  # `url = "ldaps://a"` is the one-element list it obviously means
    if not isinstance(value, list):
        return _fail(ctx, path, f"must be a list of {_describe(item_type)}")
    items = [convert(item_type, item, f"{path}[{i}]", ctx) for i, item in enumerate(value)]
    if any(item is _MISSING for item in items):
        return _MISSING
    return kind(items) if kind in (tuple, frozenset, set) else items


def _convert_mapping(args: tuple[Any, ...], value: Any, path: str, ctx: Context) -> Any:
    value_type = args[1] if len(args) == 2 else Any
    if not isinstance(value, dict):
        return _fail(ctx, path, "must be a table")
    result = {str(k): convert(value_type, v, f"{path}.{k}", ctx) for k, v in value.items()}
    if any(v is _MISSING for v in result.values()):
        return _MISSING
    return result


def _convert_scalar(tp: Any, value: Any, path: str, ctx: Context) -> Any:
    if tp is Any:
        return value
    if tp is Secret:
        return _convert_secret(value, path, ctx)
    if tp is StoreLocation:
        return _convert_store(value, path, ctx)
    if tp is Path:
        if not isinstance(value, str) or not value:
            return _fail(ctx, path, "must be a file path (a string)")
        return (ctx.base_dir / os.path.expanduser(value)).resolve()
    if tp is bool:
        return value if isinstance(value, bool) else _fail(ctx, path, "must be true or false")
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _fail(ctx, path, "must be a whole number")
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _fail(ctx, path, "must be a number")
    if tp is str:
        return value if isinstance(value, str) else _fail(ctx, path, "must be a string")
    raise TypeError(f"{path}: unsupported option type {tp!r}")


def _convert_secret(value: Any, path: str, ctx: Context) -> Any:
    if isinstance(value, str):
        return Secret(value)
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        name = value["env"]
        if name not in ctx.environ:
            return _fail(ctx, path, f"environment variable {name} is not set")
        return Secret(ctx.environ[name], f"env {name}")
    return _fail(ctx, path, 'must be a string or { env = "VARIABLE" }')


def _convert_store(value: Any, path: str, ctx: Context) -> Any:
    secret = _convert_secret(value, path, ctx)
    if secret is _MISSING:
        return _MISSING
    text = secret.reveal()
    if not text:
        return _fail(ctx, path, "must be a file path or a postgresql:// URL")
    if not text.startswith(POSTGRES_SCHEMES):
        return StoreLocation(path=(ctx.base_dir / os.path.expanduser(text)).resolve())
    parts = urlsplit(text)
    if secret.origin == "literal" and (parts.password or "password=" in parts.query.lower()):
        return _fail(
            ctx,
            path,
            "holds a password in the config file: put the whole URL in an environment "
            'variable (store = { env = "NAME" }), or the password in PGPASSWORD or ~/.pgpass',
        )
    return StoreLocation(url=secret)


def _describe(tp: Any) -> str:
    names = {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        Path: "a file path",
        Secret: 'a string or { env = "VARIABLE" }',
        StoreLocation: "a file path or a postgresql:// URL",
    }
    if tp in names:
        return names[tp]
    if get_origin(tp) in (list, tuple):
        return "a list"
    if get_origin(tp) is dict:
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _fail(ctx: Context, path: str, message: str) -> Any:
    ctx.problem(path, message)
    return _MISSING
