"""Every HelpSpot call is recorded once, with its outcome and no key; nothing else is.

Read back through the console's activity store, the consumer every record reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from lookup_server.core.calls import ANSWERED
from lookup_server.telemetry import CallRecord
from lookup_server.web.app import create_app
from lookup_server.web.blueprints.common import EXTENSION as APP_STATE
from lookup_server.web.console.blueprint import EXTENSION
from tests.conftest import DEMO_CSV

KEY = "a-key-of-sixteen-characters"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "server": {"shared_key": KEY, "outbox": str(tmp_path / "o.sqlite3")},
            "console": {"password": "a console password", "allowed_networks": ["127.0.0.1/32"]},
            "sources": {"crm": {"backend": "csv", "path": str(DEMO_CSV)}},
        },
        base_dir=tmp_path,
    )


def recorded(app: Flask) -> list[CallRecord]:
    activity = app.extensions[EXTENSION].activity
    activity.flush()
    return list(reversed(activity.recent()))


def test_each_call_is_recorded_with_its_outcome_and_count(app: Flask) -> None:
    client = app.test_client()
    client.get(f"/livelookup/crm?ll_key={KEY}&last_name=smith", environ_base=LOCAL)
    client.get(f"/livelookup/crm?ll_key={KEY}&last_name=nobody", environ_base=LOCAL)
    client.get("/livelookup/crm?ll_key=wrong&last_name=smith", environ_base=LOCAL)
    client.get(f"/ajax/crm/{KEY}?callingField=x", environ_base=LOCAL)
    calls = recorded(app)
    assert [(c.endpoint, c.name, c.outcome, c.status) for c in calls] == [
        ("livelookup", "crm", "found", 200),
        ("livelookup", "crm", "none", 200),
        ("livelookup", "crm", "refused", 403),
        ("ajax", "crm", "backend_error", 502),  # customers.csv has no options
    ]
    assert calls[0].count == 3 and calls[2].count is None
    assert "wrong shared key" in calls[2].detail
    assert all(c.duration_ms > 0 and c.remote_addr == "127.0.0.1" for c in calls)


def test_no_key_is_recorded_in_any_spelling(app: Flask) -> None:
    client = app.test_client()
    client.get(f"/livelookup/crm?ll_key={KEY}&last_name=smith", environ_base=LOCAL)
    client.get(f"/livelookup/crm?ll%5Fkey={KEY}&last_name=smith", environ_base=LOCAL)
    client.get(f"/ajax/crm/{KEY}?callingField=x", environ_base=LOCAL)
    paths = [c.path for c in recorded(app)]
    assert len(paths) == 3 and not [p for p in paths if KEY in p]
    assert paths[0] == "/livelookup/crm?ll_key=***&last_name=smith"


def test_a_name_no_one_configured_is_recorded_as_unknown(app: Flask) -> None:
    client = app.test_client()
    client.get(f"/livelookup/nosuch?ll_key={KEY}&last_name=smith", environ_base=LOCAL)
    call = recorded(app)[0]
    assert (call.name, call.outcome) == ("(unknown)", "unknown")
    assert "/livelookup/nosuch" in call.path


def test_the_console_and_health_checks_are_not_helpspot_calls(app: Flask) -> None:
    client = app.test_client()
    client.get("/", environ_base=LOCAL)
    client.get("/console/login", environ_base=LOCAL)
    client.get("/healthz", environ_base=LOCAL)
    assert recorded(app) == []


def test_a_webhook_refusal_records_its_json_error(app: Flask) -> None:
    client = app.test_client()
    client.post(f"/webhook/crm/{KEY}", data={"a": "b"}, environ_base=LOCAL)
    call = recorded(app)[0]
    assert (call.endpoint, call.outcome) == ("webhook", "unknown")
    assert call.name == "(unknown)" and "no target named 'crm'" in call.detail


def test_calls_are_counted_while_they_are_answered_even_when_they_fail(app: Flask) -> None:
    # deliveries give way to these (webhooks/delivery.py)
    calls = app.extensions[APP_STATE].webhooks.calls
    seen: list[int] = []

    @app.get("/counting")
    def counting() -> str:
        seen.append(calls.count)
        return "ok"

    @app.get("/failing")
    def failing() -> str:
        seen.append(calls.count)
        raise RuntimeError("a bug")

    client = app.test_client()
    assert client.get("/counting").status_code == 200
    assert client.get("/failing").status_code == 500
    assert client.get("/no-such-page").status_code == 404
    assert seen == [1, 1] and calls.count == 0


def test_under_the_worker_a_call_ends_when_its_answer_is_written(app: Flask) -> None:
    # a delivery starting between the app's return and the write held up the write
    calls = app.extensions[APP_STATE].webhooks.calls
    answered: list[Callable[[], None]] = []
    response = app.test_client().get("/healthz", environ_overrides={ANSWERED: answered})
    assert response.status_code == 200
    assert calls.count == 1  # the app returned; the worker has not written the answer yet
    for callback in answered:
        callback()
    assert calls.count == 0
