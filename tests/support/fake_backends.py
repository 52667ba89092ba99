"""Backends for testing the core: they misbehave on purpose, or record their calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from lookup_server.config.settings import Config, config_from_mapping
from lookup_server.core.registry import SOURCES_GROUP, Registry
from lookup_server.plugin import BackendError, Customer, SearchTerm, SourceBackend


@dataclass(frozen=True)
class FakeOptions:
    """Keys of the fake backends."""

    behaviour: str = "ok"  # ok | fail | crash | hang


class FakeBackend(SourceBackend[FakeOptions]):
    """Finds one customer per term, fails, crashes or hangs; records every term."""

    Options = FakeOptions
    calls: list[SearchTerm] = []  # noqa: RUF012  (shared on purpose: tests read it)
    release = threading.Event()

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        FakeBackend.calls.append(term)
        behaviour = self.options.behaviour
        if behaviour == "fail":
            raise BackendError("directory said no")
        if behaviour == "crash":
            raise RuntimeError("password=hunter2 in a traceback")
        if behaviour == "hang":
            FakeBackend.release.wait(30)
        return [Customer({"customer_id": "42", "first_name": "Fake", "title": repr(term)})]


def fake_registry() -> Registry:
    """The installed backends plus ``fake``."""
    eps = [
        *Registry().entry_points(),
        EntryPoint("fake", "tests.support.fake_backends:FakeBackend", SOURCES_GROUP),
    ]
    return Registry(eps)


def fake_config(
    sources: dict[str, dict[str, Any]], base_dir: Path, server: dict[str, Any] | None = None
) -> Config:
    """A Config whose sources may use the ``fake`` backend."""
    raw: dict[str, Any] = {"sources": sources}
    if server:
        raw["server"] = server
    return config_from_mapping(raw, base_dir, registry=fake_registry())
