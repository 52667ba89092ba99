"""Fixtures for the built-in plugins: where a target keeps its records, on either store.

``store_location`` runs a test against a SQLite file and against a real
PostgreSQL (a schema of its own, dropped afterwards); ``file_store`` is the
file alone, for what only a file has (its mode, its folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lookup_server.plugin import Secret, StoreLocation
from tests.support.postgres import schema_of_its_own

STORES = ("sqlite", "postgres")


@pytest.fixture(params=STORES)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """Where the target under test keeps its records: a file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield StoreLocation(path=tmp_path / "state" / "records.sqlite3")
        return
    with schema_of_its_own("records_test") as url:
        yield StoreLocation(url=Secret(url))


def file_store(path: Path) -> StoreLocation:
    """A store in the file at ``path``."""
    return StoreLocation(path=path)
