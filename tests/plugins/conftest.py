"""Fixtures of the plugin tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.web.app import create_app
from lookup_server.web.blueprints.common import EXTENSION
from tests.plugins.mirrors import Serve


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
