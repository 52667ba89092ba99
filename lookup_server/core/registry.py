"""Backends discovered through entry points: one group for sources, one for targets.

Built-in backends register exactly like third-party ones. Loading is lazy: a
configuration that uses only ``csv`` never imports ldap3 or pyodbc. A plugin
that fails to import or is malformed is reported with its name and the fix,
and only becomes an error when a configuration actually uses it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lookup_server.core.backend import Backend
from lookup_server.core.entry_points import EntryPointLike, entry_points
from lookup_server.core.sources import SourceBackend
from lookup_server.core.targets import TargetBackend

#: The entry point group of source backends (``[sources.NAME] backend = ...``).
SOURCES_GROUP = "lookup_server.backends"
#: The entry point group of target backends (``[targets.NAME] backend = ...``).
TARGETS_GROUP = "lookup_server.targets"
log = logging.getLogger(__name__)

B = TypeVar("B", bound=Backend[Any])


class PluginError(Exception):
    """A backend cannot be used: unknown, failed to import, or malformed."""


@dataclass(frozen=True)
class PluginFailure:
    """Why one registered plugin could not be loaded."""

    name: str
    target: str
    error: str

    def __str__(self) -> str:
        return f"{self.name} ({self.target}): {self.error}"


class Group(Generic[B]):
    """The backends registered in one entry point group, all subclasses of ``base``."""

    def __init__(self, group: str, base: type[B], eps: Iterable[EntryPointLike]) -> None:
        self.group = group
        self.base = base
        self.kind = "target" if base is TargetBackend else "source"
        self._eps = {ep.name: ep for ep in eps if ep.group == group}
        self._loaded: dict[str, type[B]] = {}

    def names(self) -> list[str]:
        """Names of every registered backend, loaded or not."""
        return sorted(self._eps)

    def entry_point(self, name: str) -> EntryPointLike:
        """The entry point registered under ``name`` (KeyError when there is none)."""
        return self._eps[name]

    def load(self, name: str) -> type[B]:
        """Import and validate one backend; raise PluginError saying what to do."""
        if name in self._loaded:
            return self._loaded[name]
        ep = self._eps.get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise PluginError(
                f"no backend named {name!r} is installed for {self.kind}s (installed: {known}); "
                f"install the package that provides it"
            )
        try:
            cls = ep.load()
        except Exception as exc:  # any import-time failure of a third-party package
            fix = (
                "pip install 'lookup-server[all]'"
                if ep.value.startswith("lookup_plugins.")
                else "install or repair the package that provides it"
            )
            raise PluginError(
                f"backend {name!r} ({ep.value}, group {self.group}) failed to import: "
                f"{type(exc).__name__}: {exc}; {fix}"
            ) from exc
        validate_backend_class(name, cls, self.base)
        self._loaded[name] = cls
        return self._loaded[name]

    def load_all(self) -> tuple[dict[str, type[B]], list[PluginFailure]]:
        """Load every registered backend, collecting failures instead of raising."""
        loaded: dict[str, type[B]] = {}
        failures: list[PluginFailure] = []
        for name in self.names():
            try:
                loaded[name] = self.load(name)
            except PluginError as exc:
                log.debug("skipping plugin: %s", exc)
                failures.append(PluginFailure(name, self._eps[name].value, str(exc)))
        return loaded, failures


class Registry:
    """The source and target backends installed (or the entry points given)."""

    def __init__(self, eps: Iterable[EntryPointLike] | None = None) -> None:
        if eps is None:
            # not importlib.metadata's: importing it costs a command-line lookup 15 ms
            eps = entry_points([SOURCES_GROUP, TARGETS_GROUP])
        eps = list(eps)
        self.sources: Group[SourceBackend[Any]] = Group(SOURCES_GROUP, SourceBackend, eps)
        self.targets: Group[TargetBackend[Any]] = Group(TARGETS_GROUP, TargetBackend, eps)

    def entry_points(self) -> list[EntryPointLike]:
        """Every entry point of both groups (to extend a registry in tests and tools)."""
        groups = (self.sources, self.targets)
        return [group.entry_point(name) for group in groups for name in group.names()]


def validate_backend_class(name: str, cls: Any, base: type[Backend[Any]]) -> None:
    """Reject a malformed plugin when it registers, not when production first calls it."""
    where = f"backend {name!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)})"
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise PluginError(f"{where}: must be a subclass of lookup_server.plugin.{base.__name__}")
    if not dataclasses.is_dataclass(cls.Options):
        raise PluginError(f"{where}: Options must be a dataclass describing its config keys")
    lifecycle = ("prepare", "check", "close", "validate", "start_background", "find_rendered")
    for method in (*base.CAPABILITY_METHODS.values(), *lifecycle):
        if not hasattr(base, method):
            continue  # start_background, find_rendered: sources only
        mine, theirs = getattr(cls, method), getattr(base, method)
        if mine is theirs:
            continue
        expected = list(inspect.signature(theirs).parameters)
        actual = list(inspect.signature(mine).parameters)
        if actual != expected:
            raise PluginError(
                f"{where}: method {method}{inspect.signature(mine)} must take "
                f"({', '.join(expected)})"
            )
    if not cls.capabilities():
        first = next(iter(base.CAPABILITY_METHODS.values()))
        raise PluginError(f"{where}: implements no capability (override {first}, ...)")
