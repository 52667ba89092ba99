"""GET /metrics: who may read it, and its counts added up across real gunicorn workers."""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from lookup_server.config.settings import config_from_mapping
from lookup_server.web.app import create_app
from lookup_server.web.console.access import ConsoleAccess, metrics_access
from tests.conftest import MakeApp, assert_not_revealed
from tests.support.prometheus import CONSOLE, PASSWORD, Scrape
from tests.web.test_worker import Server, lookup_path, serve
from tests.webhooks.conftest import HANG_GUARD

CHALLENGE = 'Basic realm="lookup-server metrics"'


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def get_metrics(client: FlaskClient, remote_addr: str, **headers: str) -> TestResponse:
    return client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote_addr})


@pytest.fixture
def console_client(make_app: MakeApp) -> FlaskClient:
    """allowed_networks 10.0.0.0/8 and 127.0.0.0/8; metrics_networks 127.0.0.1 only."""
    return make_app({"console": CONSOLE}).test_client()


def test_without_a_console_there_is_no_metrics_page(make_app: MakeApp) -> None:
    response = get_metrics(make_app({}).test_client(), "127.0.0.1")
    assert response.status_code == 404
    assert response.text == "lookup-server error: Not Found\n"


def test_metrics_networks_scrape_without_credentials(console_client: FlaskClient) -> None:
    response = get_metrics(console_client, "127.0.0.1")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert Scrape(response.text).types["lookup_server_calls"] == "counter"


@pytest.mark.parametrize(
    "authorization",
    [
        basic("prometheus", PASSWORD),
        basic("", PASSWORD),
        {"Authorization": f"Bearer {PASSWORD}"},
        {"Authorization": f"bearer  {PASSWORD}"},
    ],
    ids=["basic", "basic-without-user", "bearer", "bearer-lowercase"],
)
def test_allowed_networks_scrape_with_the_console_password(
    console_client: FlaskClient, authorization: dict[str, str]
) -> None:
    response = get_metrics(console_client, "10.1.2.3", **authorization)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "authorization",
    [
        {},
        basic("prometheus", PASSWORD[:-1]),
        basic(PASSWORD, ""),  # the password as the user name
        {"Authorization": f"Bearer {PASSWORD}x"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Digest {PASSWORD}"},
        {"Authorization": "Basic !!not-base64!!"},
    ],
    ids=["none", "wrong", "as-user", "bearer-wrong", "bearer-empty", "digest", "garbage"],
)
def test_a_missing_or_wrong_password_is_asked_for(
    console_client: FlaskClient, authorization: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = get_metrics(console_client, "10.1.2.3", **authorization)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert response.text.startswith("lookup-server error: the console password is required")
    assert_not_revealed([PASSWORD, PASSWORD[:-1]], response.text, caplog)


def test_outside_every_network_even_the_password_is_refused(
    console_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = get_metrics(console_client, "192.0.2.7", **basic("x", PASSWORD))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.text == "lookup-server error: caller address not allowed\n"
    assert_not_revealed([PASSWORD], response.text, caplog)


def test_an_ipv4_caller_of_a_server_on_ipv6_matches_its_networks(make_app: MakeApp) -> None:
    # how a server bound to [::] sees an IPv4 caller, as auth.authorize matches it
    client = make_app({"console": {**CONSOLE, "metrics_networks": ["10.9.0.0/16"]}}).test_client()
    assert get_metrics(client, "::ffff:10.9.8.7").status_code == 200
    assert get_metrics(client, "::ffff:10.1.2.3").status_code == 401
    assert get_metrics(client, "not-an-address").status_code == 403


def demo_app(tmp_path: Path, allowed_networks: list[str]) -> Flask:
    config = config_from_mapping(
        {"console": {"allowed_networks": allowed_networks}}, tmp_path, builtin_demo=True
    )
    assert config.console.password is None
    return create_app(config)


def test_the_passwordless_demo_lets_in_loopback_callers_only(tmp_path: Path) -> None:
    client = demo_app(tmp_path, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]).test_client()
    assert get_metrics(client, "127.0.0.1").status_code == 200
    assert get_metrics(client, "::1").status_code == 200
    assert get_metrics(client, "::ffff:127.0.0.1").status_code == 200
    # in allowed_networks but not this machine: there is no password to ask for
    assert get_metrics(client, "10.1.2.3").status_code == 403
    assert get_metrics(client, "10.1.2.3", **basic("x", "anything")).status_code == 403


def test_the_demo_keeps_loopback_callers_out_of_networks_not_allowed(tmp_path: Path) -> None:
    client = demo_app(tmp_path, ["10.0.0.0/8"]).test_client()
    assert get_metrics(client, "127.0.0.1").status_code == 403


def console_settings(tmp_path: Path, **console: Any) -> Any:
    return config_from_mapping({"console": {**CONSOLE, **console}}, tmp_path).console


@pytest.mark.parametrize(
    ("remote_addr", "session", "expected"),
    [
        ("10.1.2.3", True, ConsoleAccess.ALLOWED),
        ("10.1.2.3", False, ConsoleAccess.NEEDS_PASSWORD),
        # a console session does not open /metrics from outside allowed_networks
        ("192.0.2.7", True, ConsoleAccess.FORBIDDEN),
    ],
)
def test_a_console_session_stands_in_for_the_password(
    tmp_path: Path, remote_addr: str, session: bool, expected: ConsoleAccess
) -> None:
    console = console_settings(tmp_path)
    assert metrics_access(console, remote_addr, None, session_authenticated=session) is expected


# -- real gunicorn: every worker's counts in every scrape -----------------------------------

#: gunicorn's access line with the answering worker's pid: "<1234> GET /metrics?n=3 ..."
PID_LINE = re.compile(r"^<(\d+)> (GET|POST) (\S+)", re.MULTILINE)


def served_by(server: Server) -> list[tuple[int, str]]:
    """(worker pid, path) of every request in gunicorn's access log so far."""
    text = server.log.read_text(errors="replace")
    return [(int(pid), path) for pid, _, path in PID_LINE.findall(text)]


def until(condition: Any, what: str) -> Any:
    """Poll ``condition()`` until it returns something true; fail after HANG_GUARD."""
    deadline = time.monotonic() + HANG_GUARD
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not in {HANG_GUARD} s"
        time.sleep(0.02)
    return found


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    """gunicorn -w 2 with the repository's gunicorn.conf.py; its access lines name the worker."""
    tables = (
        f'[console]\npassword = "{PASSWORD}"\nallowed_networks = ["127.0.0.1/32"]\n'
        'metrics_networks = ["127.0.0.1/32"]\n'
    )
    access_format = ("--access-logformat", "%(p)s %(r)s %(s)s")
    yield from serve(tmp_path, "", "-w", "2", *access_format, tables=tables)


def test_metrics_add_up_every_gunicorn_worker(two_workers: Server) -> None:
    server, numbers = two_workers, itertools.count()

    def scrape() -> tuple[int, Scrape]:
        """Scrape once: which worker answered, and what it said."""
        path = f"/metrics?n={next(numbers)}"
        status, body = server.get(path)
        assert status == 200, body
        pid = until(
            lambda: next((p for p, seen in served_by(server) if seen == path), None),
            "the scrape's access line",
        )
        return pid, Scrape(body.decode())

    # Lookups until both workers have answered some: which one accepts is up to them.
    sent = 0

    def both_workers_looked_up() -> bool:
        nonlocal sent
        status, _ = server.get(lookup_path(customer_id="1001"))
        assert status == 200
        sent += 1
        return len({pid for pid, path in served_by(server) if "/livelookup/" in path}) == 2

    until(both_workers_looked_up, "lookups answered by both workers")
    # Then scrapes until each worker has answered one that counts every lookup.
    counted: dict[int, float] = {}

    def both_workers_count_every_lookup() -> bool:
        pid, scraped = scrape()
        counted[pid] = scraped.value("lookup_server_calls_total", endpoint="livelookup")
        assert counted[pid] <= sent
        return len(counted) == 2 and set(counted.values()) == {sent}

    until(both_workers_count_every_lookup, f"{sent} lookups in scrapes of both workers")
    _, scraped = scrape()
    assert scraped.types["lookup_server_calls"] == "counter"
    found = {"endpoint": "livelookup", "source": "demo", "outcome": "found"}
    assert scraped.value("lookup_server_calls_total", **found) == sent
    assert scraped.value("lookup_server_call_duration_seconds_count") == sent
