"""What the mirror tests share: building mirrored backends and servers, reading answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from lookup_plugins.mirror.local import Mirror

from lookup_server.config.settings import config_from_mapping
from lookup_server.plugin import ById, Customer, SourceBackend
from lookup_server.runtime.service import create_backend
from tests.support.backend_contract import PEOPLE
from tests.support.helpspot import assert_livelookup, request_page_params

#: Long enough for a wait-for-condition to see a refresh through a loaded machine.
SETTLE = 60.0
#: The ``serve`` fixture (tests/plugins/conftest.py): a table in, a test client of its server out.
Serve = Callable[[dict[str, Any], Path], FlaskClient]


def backend_of(table: dict[str, Any], base_dir: Path) -> SourceBackend[Any]:
    """The backend the config layer builds for ``table`` (closed by the caller)."""
    config = config_from_mapping({"sources": {"people": table}}, base_dir=base_dir)
    backend = create_backend(config.sources["people"])
    assert isinstance(backend, SourceBackend)
    return backend


def first_copy(table: dict[str, Any], base_dir: Path) -> None:
    """Make the mirror's first copy as a server starting up would."""
    backend = backend_of(table, base_dir)
    try:
        backend.prepare()
    finally:
        backend.close()


def mirror_of(backend: SourceBackend[Any]) -> Mirror:
    """The mirror a mirrored source answers from."""
    mirror = getattr(backend, "mirror", None)
    assert isinstance(mirror, Mirror)
    return mirror


def last_names(client: FlaskClient, **params: str) -> list[str]:
    """The last names of what a request-page lookup finds."""
    response = client.get("/livelookup/people", query_string=request_page_params(**params))
    return [c["last_name"] for c in assert_livelookup(response.data).customers]


def everyone(backend: SourceBackend[Any]) -> list[Customer]:
    """Every contract person the backend finds by customer id."""
    found: list[Customer] = []
    for person in PEOPLE:
        found += backend.find(ById(person.customer_id), 5)
    return found
