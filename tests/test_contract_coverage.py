"""Every registered backend must have a run of its shared contract.

Sources offering Live Lookup run tests/support/backend_contract.py; every target
runs tests/support/target_contract.py. A run is a subclass in tests/plugins that
sets ``backend_name``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import tests.plugins
from lookup_server.core.registry import SOURCES_GROUP, TARGETS_GROUP, PluginFailure, Registry
from lookup_server.plugin import (
    Customer,
    NoOptions,
    PushRequest,
    SearchTerm,
    SourceBackend,
    TargetBackend,
)
from tests.support.backend_contract import BackendContract
from tests.support.requirements import need
from tests.support.target_contract import TargetContract


def contract_runs(contract: type, mirrored: bool = False) -> set[str]:
    """backend names of every subclass of ``contract`` in tests/plugins (mirrored runs only)."""
    for module in pkgutil.iter_modules(tests.plugins.__path__):
        if module.name.startswith("test_"):
            importlib.import_module(f"tests.plugins.{module.name}")
    found: set[str] = set()
    todo: list[type] = list(contract.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "backend_name" in vars(cls) and (not mirrored or getattr(cls, "mirrored", False)):
            found.add(vars(cls)["backend_name"])
        elif mirrored and getattr(cls, "mirrored", False) and hasattr(cls, "backend_name"):
            found.add(cls.backend_name)
    return found


def sources_without_a_run(registry: Registry) -> tuple[set[str], list[PluginFailure]]:
    """Live Lookup sources with no BackendContract run, and those that cannot load."""
    loaded, failures = registry.sources.load_all()
    offering = {name for name, cls in loaded.items() if "livelookup" in cls.capabilities()}
    assert "csv" in offering
    return offering - contract_runs(BackendContract), failures


def mirrors_without_a_run(registry: Registry) -> set[str]:
    """Sources that take ``mirror = "<interval>"`` with no mirrored BackendContract run."""
    loaded, _failures = registry.sources.load_all()
    mirroring = {
        name
        for name, cls in loaded.items()
        if dataclasses.is_dataclass(cls.Options)
        and "mirror" in {f.name for f in dataclasses.fields(cls.Options)}
    }
    assert {"ldap", "odbc"} <= mirroring
    return mirroring - contract_runs(BackendContract, mirrored=True)


def targets_without_a_run(registry: Registry) -> tuple[set[str], list[PluginFailure]]:
    """Targets with no TargetContract run, and those that cannot load."""
    loaded, failures = registry.targets.load_all()
    assert {"http", "slack", "highrise"} <= loaded.keys()
    return set(loaded) - contract_runs(TargetContract), failures


def test_every_registered_backend_runs_the_contract() -> None:
    missing, failures = sources_without_a_run(Registry())
    assert not missing, f"backends without a run of tests/support/backend_contract.py: {missing}"
    need(not failures, "some backends cannot load here: " + "; ".join(map(str, failures)))


def test_every_backend_that_mirrors_runs_the_contract_mirrored() -> None:
    missing = mirrors_without_a_run(Registry())
    assert not missing, f"mirroring backends without a mirrored contract run: {missing}"


def test_every_registered_target_runs_the_target_contract() -> None:
    missing, failures = targets_without_a_run(Registry())
    assert not missing, f"targets without a run of tests/support/target_contract.py: {missing}"
    need(not failures, "some targets cannot load here: " + "; ".join(map(str, failures)))


# -- the check itself: a backend registered without a run is reported ---------------------------


class OrphanSource(SourceBackend[NoOptions]):
    """A source that some package registers without running the contract."""

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        return []


class OrphanTarget(TargetBackend[NoOptions]):
    """A target that some package registers without running the contract."""

    def push(self, request: PushRequest) -> str:
        return "1"


@pytest.mark.parametrize(
    ("group", "cls", "without_a_run"),
    [
        (SOURCES_GROUP, OrphanSource, sources_without_a_run),
        (TARGETS_GROUP, OrphanTarget, targets_without_a_run),
    ],
    ids=["source", "target"],
)
def test_a_backend_registered_without_a_run_is_reported(
    group: str, cls: type[Any], without_a_run: Callable[[Registry], tuple[set[str], Any]]
) -> None:
    orphan = EntryPoint("orphan", f"{__name__}:{cls.__name__}", group)
    missing, _ = without_a_run(Registry([*Registry().entry_points(), orphan]))
    assert "orphan" in missing
