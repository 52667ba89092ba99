"""A console app: a password, CSV sources, a broken LDAP source, an http target."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.web.app import create_app
from tests.conftest import CUSTOMER_HEADER, free_port, write_csv
from tests.support.backend_contract import PEOPLE

PASSWORD = "correct horse battery staple"
KEY = "helpspot-shared-key-0123456789"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def console_config(tmp_path: Path, **console: Any) -> dict[str, Any]:
    """A configuration with the console on for loopback callers."""
    people = write_csv(
        tmp_path / "people.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
    )
    products = write_csv(
        tmp_path / "products.csv",
        ["value", "description", "xCategory"],
        [["gold", "Gold plan", ""], ["0", "Zero plan", ""], ["cafe", "Café plan", ""]],
    )
    return {
        "server": {"shared_key": KEY, "outbox": str(tmp_path / "outbox.sqlite3")},
        "console": {"password": PASSWORD, "allowed_networks": ["127.0.0.1/32"], **console},
        "sources": {
            "people": {"backend": "csv", "path": str(people), "labels": {"title": "Job title"}},
            "products": {"backend": "csv", "path": str(products)},
            "directory": {
                "backend": "ldap",
                "url": f"ldap://127.0.0.1:{free_port()}",
                "bind_dn": "cn=svc,dc=example,dc=com",
                "password": "directory-secret-value",
                "base_dn": "dc=example,dc=com",
                "preset": "openldap",
                "timeout": 2,
            },
        },
        "targets": {
            "crm": {
                "backend": "http",
                "url": "http://127.0.0.1:9/in",
                "store": str(tmp_path / "pushes.sqlite3"),
            }
        },
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    made = create_app(console_config(tmp_path), base_dir=tmp_path)
    yield made
    made.extensions["lookup_server"].webhooks.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_of(page: bytes) -> str:
    """The CSRF token a console page's forms carry."""
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


def log_in(client: FlaskClient, password: str = PASSWORD) -> Any:
    """Log in through the form, as a person would."""
    form = client.get("/console/login", environ_base=LOCAL)
    return client.post(
        "/console/login",
        data={"password": password, "csrf_token": csrf_of(form.data), "next": "/"},
        environ_base=LOCAL,
    )
