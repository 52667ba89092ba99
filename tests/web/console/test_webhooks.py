"""The console's webhook pages: counts, a day's chart, attempts, retry, purge."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.web.app import create_app
from lookup_server.webhooks import Outbox, TargetPolicy, open_outbox
from tests.support.postgres import OUTBOX_KINDS, outbox_of_kind
from tests.web.console.conftest import LOCAL, console_config, csrf_of, log_in


@pytest.fixture
def admin(app: Flask, client: FlaskClient) -> FlaskClient:
    # the app's own delivery worker stays out of the way: these webhooks are set up by hand
    app.extensions["lookup_server"].webhooks.close()
    log_in(client)
    return client


@pytest.fixture
def box(app: Flask) -> Outbox:
    """The app's outbox file, through an Outbox that gives up after one attempt."""
    return Outbox(app.extensions["lookup_server"].config.server.outbox, max_attempts=1)


def failed_webhook(box: Outbox) -> int:
    entry = box.store("crm", {"xRequest": "12345", "sTitle": "Printer"})
    claimed = box.claim("test-worker")
    assert claimed is not None and claimed.id == entry.id
    assert box.mark_failed(
        entry.id, "HTTP 500 from the peer", owner="test-worker", status=500, answer="oops, down"
    )
    return entry.id


def state_of(box: Outbox, webhook_id: int) -> str:
    entry = box.get(webhook_id)
    assert entry is not None
    return entry.state


def post(client: FlaskClient, path: str, **form: str) -> bytes:
    token = csrf_of(client.get("/console/webhooks", environ_base=LOCAL).data)
    answer = client.post(
        path, data={"csrf_token": token, **form}, environ_base=LOCAL, follow_redirects=True
    )
    assert answer.status_code == 200, answer.data[:300]
    body: bytes = answer.data
    return body


def test_the_page_counts_by_target_and_state_and_charts_the_day(
    admin: FlaskClient, box: Outbox
) -> None:
    failed_webhook(box)
    box.store("crm", {"xRequest": "2"})
    page = admin.get("/console/webhooks", environ_base=LOCAL).data.decode()
    row = page[page.index('id="counts-crm"') :].split("</tr>")[0]
    cells = [cell.split(">")[-1] for cell in row.split("</a>")[:-1]]
    assert cells == ["1", "0", "0", "1"]  # pending, delivering, delivered, failed
    assert "Retry every failed one" in row
    assert "2 in 24 hours" in page and "1 failed" in page
    assert "The oldest webhook still to deliver arrived" in page


def test_a_webhooks_page_shows_each_attempt(admin: FlaskClient, box: Outbox) -> None:
    webhook_id = failed_webhook(box)
    page = admin.get(f"/console/webhooks/{webhook_id}", environ_base=LOCAL).data.decode()
    assert "12345" in page and "HTTP 500 from the peer" in page
    assert "<td>500</td>" in page and "oops, down" in page
    assert admin.get("/console/webhooks/999999", environ_base=LOCAL).status_code == 404


def test_retry_every_failed_webhook_of_a_target(admin: FlaskClient, box: Outbox) -> None:
    webhook_id = failed_webhook(box)
    body = post(admin, "/console/webhooks/retry-failed", target="crm")
    assert b"1 failed webhook(s) for crm are pending again" in body
    entry = box.get(webhook_id)
    assert entry is not None and entry.state == "pending"
    assert b"No target named" in post(admin, "/console/webhooks/retry-failed", target="nope")


def test_retry_the_failed_webhooks_of_a_target_received_in_a_time_range(
    admin: FlaskClient, box: Outbox
) -> None:
    ids = [failed_webhook(box) for _ in range(2)]
    with sqlite3.connect(box.path) as conn:  # received on May 1st and 2nd, local time
        for webhook_id, day in zip(ids, (1, 2), strict=True):
            moment = datetime(2024, 5, day, 12).timestamp()
            conn.execute("UPDATE webhooks SET created_at = ? WHERE id = ?", (moment, webhook_id))
    conn.close()
    page = admin.get("/console/webhooks", environ_base=LOCAL).data.decode()
    assert 'type="datetime-local" name="since"' in page and "Retry those failed" in page
    body = post(
        admin,
        "/console/webhooks/retry-failed",
        target="crm",
        since="2024-05-02T00:00",
        until="",
    )
    assert b"1 failed webhook(s) for crm in that time range are pending again" in body
    assert [state_of(box, i) for i in ids] == ["failed", "pending"]
    assert b"not an ISO 8601 time" in post(
        admin, "/console/webhooks/retry-failed", target="crm", since="yesterday"
    )
    assert state_of(box, ids[0]) == "failed"


def test_a_time_range_retry_needs_the_csrf_token(admin: FlaskClient, box: Outbox) -> None:
    webhook_id = failed_webhook(box)
    answer = admin.post(
        "/console/webhooks/retry-failed",
        data={"target": "crm", "since": "2000-01-01T00:00"},
        environ_base=LOCAL,
    )
    assert answer.status_code in (400, 403)
    assert state_of(box, webhook_id) == "failed"


def test_retry_one_goes_back_to_its_page_and_never_elsewhere(
    admin: FlaskClient, box: Outbox
) -> None:
    webhook_id = failed_webhook(box)
    token = csrf_of(admin.get("/console/webhooks", environ_base=LOCAL).data)
    answer = admin.post(
        f"/console/webhooks/{webhook_id}/retry",
        data={"csrf_token": token, "back": "//evil.example/"},
        environ_base=LOCAL,
    )
    assert answer.headers["Location"] == "/"
    body = post(admin, "/console/webhooks/999999/retry")
    assert b"no webhook with id 999999" in body


def test_purge_says_what_it_did_and_what_it_needs(admin: FlaskClient, box: Outbox) -> None:
    failed_webhook(box)
    assert b"Give the age in days" in post(admin, "/console/webhooks/purge", days="soon")
    assert b"Purged 1 webhook(s)" in post(admin, "/console/webhooks/purge", days="0")


@pytest.fixture(params=OUTBOX_KINDS)
def outbox_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The console's outbox: a SQLite file, or a PostgreSQL database (a schema of its own)."""
    with outbox_of_kind(request.param, tmp_path) as location:
        yield location


def delivery_config(tmp_path: Path, outbox: str) -> dict[str, Any]:
    """The console's config with a breaker and every limit on crm, and erp left free."""
    config = console_config(tmp_path)
    config["server"]["outbox"] = outbox
    config["targets"]["crm"] |= {
        "breaker_failures": 2,
        "breaker_probe_seconds": 60,
        "max_concurrent": 2,
        "max_per_second": 0.01,  # one claim every 100 s
        "ordered": True,
    }
    config["targets"]["erp"] = {**config["targets"]["crm"], "store": str(tmp_path / "e.sqlite3")}
    for key in ("breaker_failures", "max_concurrent", "max_per_second", "ordered"):
        del config["targets"]["erp"][key]
    return config


def delivery_row(page: str, target: str) -> list[str]:
    """The text of each cell of ``target``'s row in the page's Delivery table."""
    row = re.search(rf'<tr id="delivery-{target}"[^>]*>(.*?)</tr>', page, re.S)
    assert row, page[:2000]
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1), re.S)
    return [" ".join(re.sub(r"<[^>]+>", "", cell).split()) for cell in cells]


def test_the_page_shows_each_targets_breaker_failures_limits_and_next_claim(
    tmp_path: Path, outbox_location: str
) -> None:
    app = create_app(delivery_config(tmp_path, outbox_location), base_dir=tmp_path)
    webhooks = app.extensions["lookup_server"].webhooks
    webhooks.close()  # the attempts below are made by hand
    client = app.test_client()
    log_in(client)
    policy = TargetPolicy(breaker_failures=2, max_concurrent=2, max_per_second=0.01, ordered=True)
    box = open_outbox(outbox_location, policies={"crm": policy})
    now = time.time()
    try:
        before = delivery_row(client.get("/console/webhooks", environ_base=LOCAL).text, "crm")
        for moment in (now - 200, now - 50):
            box.store("crm", {"xRequest": "1"}, now=moment)
            entry = box.claim("test", now=moment)
            assert entry is not None
            assert box.mark_failed(entry.id, "HTTP 503", owner="test", now=moment)
        page = client.get("/console/webhooks", environ_base=LOCAL).text
    finally:
        for outbox in (box, webhooks.outbox):
            getattr(outbox, "close", lambda: None)()
    limits = "max_concurrent = 2, max_per_second = 0.01, ordered = true"
    assert before == ["crm", "closed (pauses after 2 failed attempts in a row)", "0", limits, "now"]
    crm = delivery_row(page, "crm")
    assert crm[0] == "crm" and crm[1].startswith("paused since ") and "; next probe " in crm[1]
    assert crm[2:4] == ["2", limits]
    assert crm[4].startswith("rate-limited until ")  # the last claim was 50 s ago: 50 s to go
    assert delivery_row(page, "erp") == ["erp", "none", "0", "none", "now"]
    assert '<tr id="delivery-crm" class="paused">' in page
