"""Every registered Live Lookup backend must have a run of the shared contract."""

from __future__ import annotations

import importlib
import pkgutil

import tests.plugins
from lookup_server.core.registry import Registry
from tests.support.backend_contract import BackendContract
from tests.support.requirements import need


def contract_runs() -> set[str]:
    """backend names of every BackendContract subclass in tests/plugins."""
    for module in pkgutil.iter_modules(tests.plugins.__path__):
        if module.name.startswith("test_"):
            importlib.import_module(f"tests.plugins.{module.name}")
    found, todo = set(), list(BackendContract.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "backend_name" in vars(cls):
            found.add(cls.backend_name)
    return found


def test_every_registered_backend_runs_the_contract() -> None:
    loaded, failures = Registry().sources.load_all()
    offering = {name for name, cls in loaded.items() if "livelookup" in cls.capabilities()}
    assert "csv" in offering
    missing = offering - contract_runs()
    assert not missing, f"backends without a run of tests/support/backend_contract.py: {missing}"
    need(not failures, "some backends cannot load here: " + "; ".join(map(str, failures)))
