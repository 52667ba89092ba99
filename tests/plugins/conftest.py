"""Fixtures for the built-in plugins: where a target keeps its records, servers of a source.

``store_location`` runs a test against a SQLite file and against a real
PostgreSQL (a schema of its own, dropped afterwards); ``file_store`` is the
file alone, for what only a file has (its mode, its folder). ``serve`` starts
apps answering one source, background refreshes (mirrors) included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.plugin import Secret, StoreLocation
from lookup_server.web.app import create_app
from lookup_server.web.blueprints.common import EXTENSION
from tests.plugins.mirrors import Serve
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


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Servers (background refreshes included) answering a source as ``people``; closed after."""
    apps: list[Flask] = []

    def serve(table: dict[str, Any], base_dir: Path) -> FlaskClient:
        apps.append(create_app({"sources": {"people": table}}, base_dir=base_dir))
        return apps[-1].test_client()

    yield serve
    for app in apps:
        app.extensions[EXTENSION].sources.close()  # their refresh threads stop
