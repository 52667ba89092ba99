"""Backends discovered through the ``lookup_server.backends`` entry point group.

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
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lookup_server.core.backend import CAPABILITY_METHODS, Backend

GROUP = "lookup_server.backends"
log = logging.getLogger(__name__)


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


class Registry:
    """The backends registered in one entry point group."""

    def __init__(self, eps: Iterable[EntryPoint] | None = None, group: str = GROUP) -> None:
        self.group = group
        found = entry_points(group=group) if eps is None else eps
        self._eps = {ep.name: ep for ep in found}
        self._loaded: dict[str, type[Backend[Any]]] = {}

    def names(self) -> list[str]:
        """Names of every registered backend, loaded or not."""
        return sorted(self._eps)

    def load(self, name: str) -> type[Backend[Any]]:
        """Import and validate one backend; raise PluginError saying what to do."""
        if name in self._loaded:
            return self._loaded[name]
        ep = self._eps.get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise PluginError(
                f"no backend named {name!r} is installed (installed: {known}); "
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
        validate_backend_class(name, cls)
        self._loaded[name] = cls
        return self._loaded[name]

    def load_all(self) -> tuple[dict[str, type[Backend[Any]]], list[PluginFailure]]:
        """Load every registered backend, collecting failures instead of raising."""
        loaded: dict[str, type[Backend[Any]]] = {}
        failures: list[PluginFailure] = []
        for name in self.names():
            try:
                loaded[name] = self.load(name)
            except PluginError as exc:
                log.debug("skipping plugin: %s", exc)
                failures.append(PluginFailure(name, self._eps[name].value, str(exc)))
        return loaded, failures


def validate_backend_class(name: str, cls: Any) -> None:
    """Reject a malformed plugin when it registers, not when production first calls it."""
    where = f"backend {name!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)})"
    if not (inspect.isclass(cls) and issubclass(cls, Backend)):
        raise PluginError(f"{where}: must be a subclass of lookup_server.core.backend.Backend")
    if not dataclasses.is_dataclass(cls.Options):
        raise PluginError(f"{where}: Options must be a dataclass describing its config keys")
    for method in (*CAPABILITY_METHODS.values(), "prepare", "check", "close", "validate"):
        mine, base = getattr(cls, method), getattr(Backend, method)
        if mine is base:
            continue
        expected = list(inspect.signature(base).parameters)
        actual = list(inspect.signature(mine).parameters)
        if actual != expected:
            raise PluginError(
                f"{where}: method {method}{inspect.signature(mine)} must take "
                f"({', '.join(expected)})"
            )
    if not cls.capabilities():
        raise PluginError(f"{where}: implements no capability (override find, ...)")
