"""The stored webhooks in both stores (SQLite, PostgreSQL), with real processes competing."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from lookup_server.plugin import BackendError
from lookup_server.webhooks import (
    BACKOFF_CAP,
    LEASE_SECONDS,
    Outbox,
    OutboxError,
    WebhookOutbox,
    backoff_delay,
    open_outbox,
    records,
    safe_error,
)
from lookup_server.webhooks import store as store_module
from tests.webhooks.conftest import (
    DAY,
    HANG_GUARD,
    PAYLOAD,
    T0,
    Fixed,
    MakeOutbox,
    sqlite_only,
    stored_entry,
)


@pytest.fixture
def outbox(any_outbox: WebhookOutbox) -> WebhookOutbox:
    """Each test here runs against both stores, unless marked sqlite_only."""
    return any_outbox


# -- storing ---------------------------------------------------------------------------


@sqlite_only
def test_store_is_committed_before_it_returns(outbox: WebhookOutbox, path: Path) -> None:
    entry = outbox.store("crm", PAYLOAD, now=T0)
    other = sqlite3.connect(path)
    try:
        row = other.execute(
            "SELECT target, payload, state, idempotency_key FROM webhooks WHERE id = ?", (entry.id,)
        ).fetchone()
    finally:
        other.close()
    assert row[0] == "crm" and row[2] == "pending" and row[3] == entry.idempotency_key
    assert entry.payload == PAYLOAD and entry.state == "pending" and entry.attempts == 0


@sqlite_only
def test_the_file_is_in_wal_mode_and_private(outbox: WebhookOutbox, path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_each_webhook_gets_its_own_uuid4_key(outbox: WebhookOutbox) -> None:
    keys = {outbox.store("crm", {"n": str(i)}).idempotency_key for i in range(20)}
    assert len(keys) == 20
    assert all(len(key) == 36 and key[14] == "4" for key in keys)


def test_non_ascii_payload_round_trips(outbox: WebhookOutbox) -> None:
    entry = outbox.store("crm", {"sTitle": "Zoë € <b>&amp;</b>", "x": {"ü": ["1"]}})
    assert outbox.get(entry.id) == entry
    assert entry.payload == {"sTitle": "Zoë € <b>&amp;</b>", "x": {"ü": ["1"]}}


def test_an_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match=r"\[server\] outbox"):
        Outbox(tmp_path / "no-such-folder" / "outbox.sqlite3")


def test_a_file_that_is_not_an_outbox_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\n" * 100)
    with pytest.raises(OutboxError, match=r"is \[server\] outbox another kind of file"):
        Outbox(path)


def test_a_restarted_outbox_resumes_pending_webhooks(make_outbox: MakeOutbox) -> None:
    first = make_outbox()
    stored = [first.store("crm", {"n": str(i)}, now=T0) for i in range(3)]
    claimed = first.claim("old-process", now=T0)
    assert claimed is not None and first.mark_delivered(claimed.id, now=T0)
    second = make_outbox()  # a new process after a restart
    resumed = [second.claim("new-process", now=T0 + 1) for _ in range(3)]
    assert [e.id for e in resumed if e is not None] == [s.id for s in stored[1:]]
    assert resumed[2] is None


# -- claiming and leases -----------------------------------------------------------------


def test_claim_leases_the_oldest_due_webhook(outbox: WebhookOutbox) -> None:
    first = outbox.store("crm", {"n": "1"}, now=T0)
    outbox.store("crm", {"n": "2"}, now=T0 + 5)
    assert outbox.claim("w1", now=T0 - 1) is None  # nothing due yet
    claimed = outbox.claim("w1", now=T0 + 10)
    assert claimed is not None and claimed.id == first.id
    assert claimed.state == "delivering" and claimed.attempts == 1
    assert claimed.lease_owner == "w1" and claimed.lease_expires_at == T0 + 10 + LEASE_SECONDS


def test_a_leased_webhook_is_not_claimed_again(outbox: WebhookOutbox) -> None:
    outbox.store("crm", PAYLOAD, now=T0)
    assert outbox.claim("w1", now=T0) is not None
    assert outbox.claim("w2", now=T0 + LEASE_SECONDS - 0.001) is None


def test_an_expired_lease_is_taken_over(outbox: WebhookOutbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    assert outbox.claim("crashed", now=T0) is not None
    taken = outbox.claim("w2", now=T0 + LEASE_SECONDS)
    assert taken is not None and taken.id == stored.id
    assert taken.lease_owner == "w2" and taken.attempts == 2
    assert taken.idempotency_key == stored.idempotency_key
    # The first owner's late result is ignored; the new owner's counts.
    assert not outbox.mark_delivered(stored.id, owner="crashed", now=T0 + LEASE_SECONDS + 1)
    assert outbox.mark_delivered(stored.id, owner="w2", now=T0 + LEASE_SECONDS + 1)
    assert stored_entry(outbox, stored.id).state == "delivered"


def test_an_expired_lease_on_the_last_attempt_fails(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    stored = outbox.store("crm", PAYLOAD, now=T0)
    assert outbox.claim("crashed", now=T0) is not None
    assert outbox.claim("w2", now=T0 + LEASE_SECONDS) is None
    entry = outbox.get(stored.id)
    assert entry is not None and entry.state == "failed"
    assert "stopped while delivering" in entry.last_error


def test_renew_extends_only_the_owners_lease(outbox: WebhookOutbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    assert outbox.renew(stored.id, "w1", now=T0 + 15)
    assert stored_entry(outbox, stored.id).lease_expires_at == T0 + 15 + LEASE_SECONDS
    assert outbox.claim("w2", now=T0 + LEASE_SECONDS + 1) is None  # the old expiry is gone
    assert not outbox.renew(stored.id, "w2", now=T0 + 16)
    assert outbox.claim("w2", now=T0 + 15 + LEASE_SECONDS) is not None
    assert not outbox.renew(stored.id, "w1", now=T0 + 40)  # lost: renewing cannot win it back
    outbox.mark_delivered(stored.id, owner="w2", now=T0 + 41)
    assert not outbox.renew(stored.id, "w2", now=T0 + 42)  # finished: nothing to hold


# -- failures, backoff, giving up ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "ceiling"),
    [
        (1, 30),
        (2, 60),
        (3, 120),
        (4, 240),
        (5, 480),
        (6, 960),
        (7, 1920),
        (8, 3600),
        (9, 3600),
        (30, 3600),
        (10_000, 3600),
    ],
)
def test_backoff_doubles_from_30_seconds_up_to_an_hour(attempts: int, ceiling: float) -> None:
    low = backoff_delay(attempts, Fixed(0.0))
    high = backoff_delay(attempts, Fixed(1.0))
    assert (low, high) == (ceiling / 2, ceiling)


def test_backoff_is_jittered() -> None:
    rng = random.Random(7)
    delays = {backoff_delay(3, rng) for _ in range(50)}
    assert len(delays) > 40 and all(60 <= d <= 120 for d in delays)
    assert max(backoff_delay(99, rng) for _ in range(100)) <= BACKOFF_CAP


def test_a_failed_try_is_retried_after_the_backoff(outbox: WebhookOutbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    assert outbox.mark_failed(stored.id, "CRM answered HTTP 503", owner="w1", now=T0)
    entry = outbox.get(stored.id)
    assert entry is not None and entry.state == "pending"
    assert entry.last_error == "CRM answered HTTP 503" and entry.attempts == 1
    assert T0 + 15 <= entry.next_attempt_at <= T0 + 30
    assert outbox.claim("w1", now=entry.next_attempt_at - 0.001) is None
    again = outbox.claim("w1", now=entry.next_attempt_at)
    assert again is not None and again.attempts == 2
    assert again.idempotency_key == stored.idempotency_key


def test_it_gives_up_after_max_attempts_and_keeps_the_error(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=3, rng=random.Random(3))
    stored = outbox.store("crm", PAYLOAD, now=T0)
    now = T0
    for attempt in range(1, 4):
        claimed = outbox.claim("w1", now=now)
        assert claimed is not None and claimed.attempts == attempt
        outbox.mark_failed(stored.id, f"failure {attempt}", now=now)
        now = stored_entry(outbox, stored.id).next_attempt_at + 1
    assert outbox.claim("w1", now=now + 10**6) is None
    (failed,) = outbox.summaries(["failed"])
    assert failed.id == stored.id and failed.last_error == "failure 3"
    assert failed.attempts == 3


def test_long_errors_are_shortened(outbox: WebhookOutbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    outbox.mark_failed(stored.id, "x" * 5000, now=T0)
    assert len(stored_entry(outbox, stored.id).last_error) == 500


def test_safe_error_keeps_backend_messages_only() -> None:
    assert safe_error(BackendError("CRM is down; try later")) == "CRM is down; try later"
    leaked = safe_error(RuntimeError("GET https://x/?token=hunter2 failed"))
    assert "hunter2" not in leaked and leaked.startswith("RuntimeError")


# -- admin: list, retry, purge --------------------------------------------------------------


def test_summaries_filter_by_state(outbox: WebhookOutbox) -> None:
    a = outbox.store("crm", {"n": "a"}, now=T0)
    b = outbox.store("crm", {"n": "b"}, now=T0)
    outbox.claim("w1", now=T0)
    outbox.mark_delivered(a.id, now=T0)
    assert [e.id for e in outbox.summaries()] == [a.id, b.id]
    assert [e.id for e in outbox.summaries(["pending"])] == [b.id]
    assert [e.id for e in outbox.summaries(["delivered", "failed"])] == [a.id]
    assert list(outbox.summaries([])) == []


@sqlite_only
def test_summaries_page_through_the_outbox_without_reading_payloads(
    outbox: WebhookOutbox, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "PAGE_ROWS", 3)
    ids = [outbox.store("crm", {"n": str(i)}, now=T0).id for i in range(8)]
    conn = sqlite3.connect(path)  # a payload listing would choke on
    conn.execute("UPDATE webhooks SET payload = 'not JSON' WHERE id = ?", (ids[4],))
    conn.commit()
    conn.close()
    pages = outbox.summaries()
    assert [next(pages).id for _ in range(4)] == ids[:4]
    later = outbox.store("crm", {"n": "late"}, now=T0).id  # arrives between two pages
    assert [e.id for e in pages] == [*ids[4:], later]
    assert [e.id for e in outbox.summaries(after_id=ids[5])] == [ids[6], ids[7], later]
    assert all(e.target == "crm" and e.state == "pending" for e in outbox.summaries())


def test_newest_finds_where_the_last_n_start(outbox: WebhookOutbox) -> None:
    ids = [outbox.store("crm", {"n": str(i)}, now=T0).id for i in range(5)]
    outbox.claim("w1", now=T0)  # ids[0] is delivering now
    assert outbox.newest(2) == (ids[2], 3)
    assert [e.id for e in outbox.summaries(after_id=ids[2])] == ids[3:]
    assert outbox.newest(2, ["pending"]) == (ids[2], 2)  # ids[1], ids[2] are older
    assert outbox.newest(5) == (0, 0) and outbox.newest(9) == (0, 0)
    assert outbox.newest(1, ["failed"]) == (0, 0)


def test_refusals_keep_what_is_known(outbox: WebhookOutbox) -> None:
    first = outbox.record_refusal("crm", 5_000_000, 1_048_576, "12345", now=T0)
    second = outbox.record_refusal("crm", None, 1_048_576, now=T0 + 1)  # chunked: size unknown
    assert list(outbox.refusals()) == [first, second]
    assert (second.size_bytes, second.limit_bytes, second.request_id) == (None, 1_048_576, "")
    assert list(outbox.refusals(after_id=first.id)) == [second]
    assert outbox.newest(1, table="refusals") == (first.id, 1)
    assert list(outbox.summaries()) == []  # nothing to deliver


@sqlite_only
def test_refusals_never_keep_a_body(outbox: WebhookOutbox, path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(refusals)")]
    finally:
        conn.close()
    assert columns == ["id", "refused_at", "target", "size_bytes", "limit_bytes", "request_id"]


def test_retry_makes_a_failed_webhook_due_with_fresh_attempts(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    outbox.mark_failed(stored.id, "down", now=T0)
    retried = outbox.retry(stored.id, now=T0 + 100)
    assert retried.state == "pending" and retried.attempts == 0
    assert retried.last_error == "down"  # still visible until the next try
    claimed = outbox.claim("w1", now=T0 + 100)
    assert claimed is not None and claimed.idempotency_key == stored.idempotency_key


def test_retry_refuses_unknown_and_delivered_webhooks(outbox: WebhookOutbox) -> None:
    with pytest.raises(OutboxError, match="no webhook with id 99"):
        outbox.retry(99)
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    with pytest.raises(OutboxError, match="is delivering"):
        outbox.retry(stored.id)
    outbox.mark_delivered(stored.id, now=T0)
    with pytest.raises(OutboxError, match="is delivered"):
        outbox.retry(stored.id)


def test_purge_removes_only_old_finished_webhooks(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    finished = {}
    for name, outcome, when in (
        ("old_done", "delivered", T0),
        ("old_failed", "failed", T0),
        ("new_done", "delivered", T0 + 9 * DAY),
    ):
        entry = finished[name] = outbox.store("crm", {"n": name}, now=when)
        claimed = outbox.claim("w1", now=when)
        assert claimed is not None and claimed.id == entry.id
        if outcome == "delivered":
            outbox.mark_delivered(entry.id, now=when)
        else:
            outbox.mark_failed(entry.id, "gone", now=when)
    old_pending = outbox.store("crm", {"n": "old_pending"}, now=T0)
    assert outbox.purge(7, now=T0 + 10 * DAY).webhooks == 2
    assert [e.id for e in outbox.summaries()] == [finished["new_done"].id, old_pending.id]
    with pytest.raises(OutboxError):
        outbox.purge(-1)


def test_purge_works_in_small_transactions_within_a_budget(
    outbox: WebhookOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "PURGE_BATCH_ROWS", 2)
    for i in range(5):
        entry = outbox.store("crm", {"n": str(i)}, now=T0)
        outbox.claim("w1", now=T0)
        outbox.mark_delivered(entry.id, now=T0)
    for _ in range(3):
        outbox.record_refusal("crm", 2_000_000, 1_048_576, now=T0)
    kept = outbox.record_refusal("crm", 2_000_000, 1_048_576, now=T0 + 9 * DAY)
    first = outbox.purge(7, now=T0 + 10 * DAY, max_rows=6)
    assert (first.webhooks, first.refusals, first.complete) == (5, 1, False)
    rest = outbox.purge(7, now=T0 + 10 * DAY, max_rows=6)
    assert (rest.webhooks, rest.refusals, rest.complete) == (0, 2, True)
    assert list(outbox.summaries()) == [] and list(outbox.refusals()) == [kept]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (store_module._OLD_WEBHOOKS, "webhooks_finished (updated_at<?)"),
        (store_module._OLD_REFUSALS, "refusals_by_time (refused_at<?)"),
    ],
)
@sqlite_only
def test_the_purge_reads_only_what_it_deletes(
    outbox: WebhookOutbox, path: Path, query: str, index: str
) -> None:
    conn = sqlite3.connect(path)
    try:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", (T0, 1)))
    finally:
        conn.close()
    # an index range, not a scan of every finished webhook, payloads and all
    assert plan.startswith("SEARCH") and plan.endswith(f"INDEX {index}"), plan


def test_ids_are_not_reused_after_a_purge(outbox: WebhookOutbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    outbox.mark_delivered(stored.id, now=T0)
    outbox.purge(0, now=T0 + 1)
    assert outbox.store("crm", PAYLOAD).id == stored.id + 1


# -- several processes --------------------------------------------------------------------


def _drain(location: str, owner: str, start: Any, log_path: str) -> None:
    """Child process: claim and 'deliver' (append to a shared log) until nothing is due."""
    outbox = open_outbox(location)
    start.wait()
    while (entry := outbox.claim(owner)) is not None:
        with open(log_path, "a", encoding="utf-8") as log:  # O_APPEND: whole lines
            log.write(f"{entry.id} {owner}\n")
        outbox.mark_delivered(entry.id, owner=owner)


def test_two_processes_never_deliver_the_same_webhook(
    outbox_location: str | Path, make_outbox: MakeOutbox, tmp_path: Path
) -> None:
    outbox = make_outbox()
    ids = {outbox.store("crm", {"n": str(i)}).id for i in range(150)}
    log_path = tmp_path / "deliveries.log"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    children = [
        ctx.Process(target=_drain, args=(str(outbox_location), f"p{i}", start, str(log_path)))
        for i in range(2)
    ]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(HANG_GUARD * 4)
        assert child.exitcode == 0
    lines = log_path.read_text(encoding="utf-8").splitlines()
    delivered = [int(line.split()[0]) for line in lines]
    assert sorted(delivered) == sorted(ids)  # each exactly once
    assert {line.split()[1] for line in lines} <= {"p0", "p1"}
    assert all(e.state == "delivered" and e.attempts == 1 for e in outbox.summaries())
