"""Shared fixtures: apps built with create_app({...}), their clients and the CLI runner."""

from __future__ import annotations

import csv
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.web.app import create_app
from tests.support.backend_contract import PEOPLE

CUSTOMER_HEADER = ["customer_id", "first_name", "last_name", "email", "phone", "title"]
ROOT = Path(__file__).resolve().parent.parent
DEMO_CSV = ROOT / "lookup_server" / "demo" / "customers.csv"

#: The ``make_app`` fixture: a config mapping in, the app built from it out.
MakeApp = Callable[[Mapping[str, Any]], Flask]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl (skips without it)."""
    import shutil
    import subprocess

    from tests.support.requirements import need

    need(shutil.which("openssl") is not None, "openssl not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_not_revealed(
    secrets: Iterable[str], text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """None of ``secrets`` is in ``text`` nor in any log record."""
    logged = [r.getMessage() for r in caplog.records]
    assert not [s for s in secrets if s in text or any(s in m for m in logged)]


def write_csv(
    path: Path, header: list[str], rows: Iterable[Iterable[str]], encoding: str = "utf-8"
) -> Path:
    """Write a CSV file (``encoding="utf-8-sig"`` adds a BOM)."""
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def people_csv(tmp_path: Path) -> Path:
    """The contract's PEOPLE as a CSV file."""
    return write_csv(
        tmp_path / "people.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
    )


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """Build an app from a config mapping; relative paths resolve against tmp_path."""

    def make(config: Mapping[str, Any]) -> Flask:
        return create_app(config, base_dir=tmp_path)

    return make


@pytest.fixture
def app(make_app: MakeApp, people_csv: Path) -> Flask:
    """An app with one CSV source ``people`` holding PEOPLE."""
    return make_app({"sources": {"people": {"backend": "csv", "path": str(people_csv)}}})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


@pytest.fixture
def runner() -> CliRunner:
    """A click runner for the lookup-server command."""
    return CliRunner()
