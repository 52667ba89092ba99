"""What /metrics counts, after real calls through the app, read with prometheus_client's parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from lookup_server.config.settings import config_from_mapping
from lookup_server.telemetry import CallRecord
from lookup_server.telemetry.metrics import MULTIPROCESS, OutboxGauges, PrometheusMetrics
from lookup_server.web.app import create_app
from lookup_server.webhooks import Outbox, TargetPolicy, open_outbox
from tests.conftest import MakeApp
from tests.support.fake_backends import FakeBackend, fake_registry
from tests.support.postgres import OUTBOX_KINDS, outbox_of_kind
from tests.support.prometheus import CONSOLE, Scrape
from tests.webhooks.conftest import PAYLOAD, T0, stored_entry, under_a_file, wait_for


def scrape(client: FlaskClient) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return Scrape(response.text)


@pytest.fixture
def people_app(make_app: MakeApp, people_csv: Path) -> Flask:
    return make_app(
        {"console": CONSOLE, "sources": {"people": {"backend": "csv", "path": str(people_csv)}}}
    )


def test_the_tests_count_in_a_registry_of_the_app() -> None:
    # the gunicorn test covers multiprocess mode; here nothing may have switched it on
    assert not MULTIPROCESS


def test_calls_are_counted_by_endpoint_source_and_outcome(people_app: Flask) -> None:
    client = people_app.test_client()
    for customer_id in ("1001", "1002", "no-such-id"):
        assert client.get(f"/livelookup/people?customer_id={customer_id}").status_code == 200
    assert client.get("/livelookup/elsewhere?customer_id=1").status_code == 404
    metrics = scrape(client)
    assert metrics.types["lookup_server_calls"] == "counter"
    calls = "lookup_server_calls_total"
    assert metrics.value(calls, endpoint="livelookup", source="people", outcome="found") == 2
    assert metrics.value(calls, endpoint="livelookup", source="people", outcome="none") == 1
    assert metrics.value(calls, endpoint="livelookup", source="(unknown)", outcome="unknown") == 1
    assert metrics.value(calls) == 4
    # the latency histogram saw the same calls, under the same labels
    assert metrics.types["lookup_server_call_duration_seconds"] == "histogram"
    count = "lookup_server_call_duration_seconds_count"
    assert metrics.value(count, endpoint="livelookup", source="people") == 3
    buckets = {
        s.labels["le"]
        for s in metrics.samples
        if s.name == "lookup_server_call_duration_seconds_bucket"
    }
    assert {"0.001", "10.0", "+Inf"} <= buckets
    # /metrics itself is not one of HelpSpot's calls
    assert scrape(client).value(calls) == 4


def test_names_that_are_not_configured_are_counted_as_unknown(people_app: Flask) -> None:
    client = people_app.test_client()
    invented = [f"invented-{i}" for i in range(3)]
    for name in invented:
        client.get(f"/livelookup/{name}?customer_id=1")
    client.get(f"/ajax/{invented[0]}")
    client.post(f"/push/{invented[1]}", json={"xRequest": "1"})
    client.post(f"/webhook/{invented[2]}", data="xRequest=1")
    response = client.get("/metrics")
    metrics = Scrape(response.text)
    assert metrics.label_values("source") == {"(unknown)"}
    assert metrics.value("lookup_server_calls_total", source="(unknown)") == 6
    assert not [name for name in invented if name in response.text]


def test_backend_errors_and_timeouts_are_counted_by_source_and_kind(tmp_path: Path) -> None:
    FakeBackend.release.clear()
    config = config_from_mapping(
        {
            "console": CONSOLE,
            "sources": {
                "fail": {"backend": "fake", "behaviour": "fail"},
                "hang": {"backend": "fake", "behaviour": "hang", "timeout": 0.2},
                "ok": {"backend": "fake"},
            },
        },
        tmp_path,
        registry=fake_registry(),
    )
    client = create_app(config).test_client()
    try:
        assert client.get("/livelookup/fail?customer_id=1").status_code == 502
        assert client.get("/livelookup/fail?customer_id=2").status_code == 502
        assert client.get("/livelookup/hang?customer_id=1").status_code == 504
        assert client.get("/livelookup/ok?customer_id=1").status_code == 200
    finally:
        FakeBackend.release.set()
    metrics = scrape(client)
    errors = "lookup_server_backend_errors_total"
    assert metrics.value(errors, source="fail", kind="backend_error") == 2
    assert metrics.value(errors, source="hang", kind="timeout") == 1
    assert metrics.value(errors) == 3


@pytest.mark.parametrize(
    ("outcome", "counted"),
    [("backend_error", 1), ("timeout", 1), ("busy", 1), ("bad_request", 0), ("refused", 0)],
)
def test_only_what_a_backend_caused_is_a_backend_error(outcome: str, counted: int) -> None:
    metrics = PrometheusMetrics()
    metrics.call(CallRecord(T0, "livelookup", "people", outcome, 503, 1.0))
    scraped = Scrape(metrics.exposition().decode())
    assert scraped.value("lookup_server_backend_errors_total", kind=outcome) == counted


def test_cache_hits_and_misses_are_counted_for_a_caching_source(
    make_app: MakeApp, people_csv: Path
) -> None:
    app = make_app(
        {
            "console": CONSOLE,
            "sources": {
                "cached": {"backend": "csv", "path": str(people_csv), "cache_ttl": 60},
                "fresh": {"backend": "csv", "path": str(people_csv)},
            },
        }
    )
    client = app.test_client()
    for source, customer_id in [("cached", "1001"), ("cached", "1001"), ("cached", "1002")]:
        client.get(f"/livelookup/{source}?customer_id={customer_id}")
    client.get("/livelookup/fresh?customer_id=1001")
    metrics = scrape(client)
    assert metrics.value("lookup_server_cache_hits_total", source="cached") == 1
    assert metrics.value("lookup_server_cache_misses_total", source="cached") == 2
    # a source without a cache asks none
    assert metrics.value("lookup_server_cache_hits_total", source="fresh") == 0
    assert metrics.value("lookup_server_cache_misses_total", source="fresh") == 0


def test_every_app_counts_for_itself_and_nothing_reaches_the_global_registry(
    people_app: Flask, make_app: MakeApp, people_csv: Path
) -> None:
    people_app.test_client().get("/livelookup/people?customer_id=1001")
    other = make_app(
        {"console": CONSOLE, "sources": {"people": {"backend": "csv", "path": str(people_csv)}}}
    )
    assert scrape(other.test_client()).value("lookup_server_calls_total") == 0
    assert scrape(people_app.test_client()).value("lookup_server_calls_total") == 1
    labels = {"endpoint": "livelookup", "source": "people", "outcome": "found"}
    assert REGISTRY.get_sample_value("lookup_server_calls_total", labels) is None


# -- webhooks: delivery attempts and what the outbox holds ------------------------------------


class Receiver:
    """The other system: answers each webhook with the next status of ``statuses``."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = state.statuses.pop(0) if state.statuses else 200
                state.received += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()


def webhook_app(make_app: MakeApp, url: str) -> Flask:
    return make_app(
        {
            "console": CONSOLE,
            "server": {"outbox": "outbox.sqlite3"},
            "targets": {
                "hooks": {"backend": "http", "url": url, "store": "pushes.sqlite3"},
            },
        }
    )


@pytest.fixture
def closing() -> Iterator[list[Flask]]:
    """Apps whose delivery worker is stopped when the test ends."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        app.extensions["lookup_server"].webhooks.close()


def post_webhook(client: FlaskClient) -> int:
    response = client.post(
        "/webhook/hooks",
        data=urlencode({"xRequest": "12345"}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202, response.text
    return int(response.json["id"])  # type: ignore[index]


def test_delivery_attempts_are_counted_by_target_and_result(
    make_app: MakeApp, receiver: Receiver, closing: list[Flask]
) -> None:
    app = webhook_app(make_app, receiver.url)
    closing.append(app)
    client = app.test_client()
    deliveries = "lookup_server_webhook_deliveries_total"
    receiver.statuses = [503]
    post_webhook(client)
    wait_for(lambda: scrape(client).value(deliveries, target="hooks", result="failed") == 1)
    post_webhook(client)  # answered 200: the failed one waits for its retry, 15 s on
    wait_for(lambda: scrape(client).value(deliveries, target="hooks", result="delivered") == 1)
    metrics = scrape(client)
    assert metrics.value(deliveries) == 2 and receiver.received == 2
    assert metrics.value("lookup_server_webhook_delivery_duration_seconds_count") == 2
    assert metrics.types["lookup_server_webhook_delivery_duration_seconds"] == "histogram"
    calls = "lookup_server_calls_total"
    assert metrics.value(calls, endpoint="webhook", source="hooks", outcome="accepted") == 2


def test_the_outbox_gauges_show_what_waits(
    make_app: MakeApp, tmp_path: Path, closing: list[Flask]
) -> None:
    app = webhook_app(make_app, "http://127.0.0.1:9/unreachable")
    closing.append(app)
    client = app.test_client()
    ids = [post_webhook(client), post_webhook(client)]
    outbox = Outbox(tmp_path / "outbox.sqlite3")

    def both_wait_for_a_retry() -> bool:
        entries = [stored_entry(outbox, webhook_id) for webhook_id in ids]
        return all(e.state == "pending" and e.last_error for e in entries)

    wait_for(both_wait_for_a_retry)
    oldest = min(stored_entry(outbox, webhook_id).created_at for webhook_id in ids)
    before = time.time()
    metrics = scrape(client)
    after = time.time()
    assert metrics.value("lookup_server_outbox_up") == 1
    assert metrics.value("lookup_server_webhooks", state="pending", target="hooks") == 2
    for state in ("delivering", "delivered", "failed"):
        assert metrics.value("lookup_server_webhooks", state=state, target="hooks") == 0
    age = metrics.value("lookup_server_webhook_oldest_pending_age_seconds")
    assert before - oldest <= age <= after - oldest


def test_outbox_gauges_fold_unknown_targets_and_count_deliveries_in_progress(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.store("hooks", PAYLOAD, now=T0)
    outbox.store("removed-since", PAYLOAD, now=T0 + 5)
    outbox.store("hooks", PAYLOAD, now=T0 + 10)
    outbox.store("hooks", PAYLOAD, now=T0 + 20)
    first = outbox.claim("test", now=T0 + 30)
    assert first is not None and first.target == "hooks"
    assert outbox.mark_delivered(first.id, owner="test", now=T0 + 31)
    claimed = outbox.claim("test", now=T0 + 40)  # the oldest left: delivering, not done
    assert claimed is not None and claimed.target == "removed-since"
    registry = CollectorRegistry()
    registry.register(OutboxGauges(outbox, {"hooks", "idle"}, clock=lambda: T0 + 100))
    metrics = Scrape(generate_latest(registry).decode())
    webhooks = "lookup_server_webhooks"
    assert metrics.value(webhooks, state="pending", target="hooks") == 2
    assert metrics.value(webhooks, state="delivered", target="hooks") == 1
    assert metrics.value(webhooks, state="delivering", target="(unknown)") == 1
    assert metrics.label_values("target") == {"hooks", "idle", "(unknown)"}
    assert metrics.value(webhooks, target="idle") == 0
    # a webhook being delivered has not been delivered yet: it is the oldest waiting
    assert metrics.value("lookup_server_webhook_oldest_pending_age_seconds") == 95


def test_an_unreadable_outbox_is_a_gauge_not_a_failed_scrape(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(OutboxGauges(Outbox(under_a_file(tmp_path), lazy=True), {"hooks"}))
    metrics = Scrape(generate_latest(registry).decode())
    assert metrics.value("lookup_server_outbox_up") == 0
    assert metrics.types.keys() == {"lookup_server_outbox_up"}


def test_a_gauge_per_target_says_whether_its_breaker_holds_it_back(tmp_path: Path) -> None:
    policy = TargetPolicy(breaker_failures=1)
    outbox = Outbox(tmp_path / "outbox.sqlite3", policies={"hooks": policy, "idle": policy})
    outbox.store("hooks", PAYLOAD, now=T0)
    entry = outbox.claim("test", now=T0)
    assert entry is not None
    assert outbox.mark_failed(entry.id, "HTTP 503", owner="test", now=T0 + 1)
    registry = CollectorRegistry()
    registry.register(OutboxGauges(outbox, {"hooks", "idle"}, clock=lambda: T0 + 2))
    metrics = Scrape(generate_latest(registry).decode())
    assert metrics.value("lookup_server_webhook_target_paused", target="hooks") == 1
    assert metrics.value("lookup_server_webhook_target_paused", target="idle") == 0


@pytest.fixture(params=OUTBOX_KINDS)
def outbox_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The outbox read: a SQLite file, or a PostgreSQL database (a schema of its own)."""
    with outbox_of_kind(request.param, tmp_path) as location:
        yield location


def test_metrics_show_each_targets_breaker_and_consecutive_failures(
    make_app: MakeApp, outbox_location: str
) -> None:
    hook = {"backend": "http", "url": "http://127.0.0.1:9/in", "store": "pushes.sqlite3"}
    targets = {"hooks": {**hook, "breaker_failures": 2}, "calm": {**hook, "breaker_failures": 2}}
    app = make_app({"console": CONSOLE, "server": {"outbox": outbox_location}, "targets": targets})
    webhooks = app.extensions["lookup_server"].webhooks
    webhooks.close()  # its worker stays out of the way: the attempts are made by hand
    policy = TargetPolicy(breaker_failures=2)
    outbox = open_outbox(outbox_location, policies={"hooks": policy, "calm": policy})
    try:
        for moment in (T0, T0 + 1):
            outbox.store("hooks", PAYLOAD, now=moment)
            entry = outbox.claim("test", now=moment + 100)
            assert entry is not None
            assert outbox.mark_failed(entry.id, "HTTP 503", owner="test", now=moment + 100)
        outbox.store("hooks", PAYLOAD, now=T0 + 2)  # waits while the breaker is open
        metrics = scrape(app.test_client())
    finally:
        for box in (outbox, webhooks.outbox):
            getattr(box, "close", lambda: None)()
    assert metrics.types["lookup_server_webhook_consecutive_failures"] == "gauge"
    assert metrics.value("lookup_server_webhook_consecutive_failures", target="hooks") == 2
    assert metrics.value("lookup_server_webhook_consecutive_failures", target="calm") == 0
    assert metrics.value("lookup_server_webhook_target_paused", target="hooks") == 1
    assert metrics.value("lookup_server_webhook_target_paused", target="calm") == 0
    assert metrics.label_values("target") >= {"hooks", "calm"}
