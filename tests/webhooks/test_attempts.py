"""Every delivery attempt, recorded with its outcome, and what the console reads of the outbox."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from lookup_server.core.backend import ANSWER_EXCERPT_CHARS
from lookup_server.plugin import BackendError, DeliveryFailed
from lookup_server.webhooks import (
    Attempt,
    DeliveryWorker,
    Outbox,
    OutboxError,
    WebhookOutbox,
    records,
)
from lookup_server.webhooks import store as store_module
from tests.webhooks.conftest import (
    DAY,
    PAYLOAD,
    T0,
    Clock,
    MakeOutbox,
    Recorder,
    sqlite_only,
    stored_entry,
)


@pytest.fixture
def outbox(any_outbox: WebhookOutbox) -> WebhookOutbox:
    """Each test here runs against both stores, unless marked sqlite_only."""
    return any_outbox


HOUR = 3600.0


class Stopwatch:
    """A monotonic timer that moves on by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def worker(
    outbox: WebhookOutbox, deliver: Recorder, clock: Clock, step: float = 0.25
) -> DeliveryWorker:
    return DeliveryWorker(outbox, deliver, owner="w1", clock=clock, timer=Stopwatch(step))


def finished(outbox: WebhookOutbox, target: str, state: str, when: float) -> int:
    """A webhook of ``target`` stored at ``when`` and left ``state`` by one try at ``when``.

    Nothing else may be due by then: the try is made by claiming the next due webhook.
    """
    entry = outbox.store(target, {"n": f"{target}-{state}-{when}"}, now=when)
    claimed = outbox.claim("w1", now=when)
    assert claimed is not None and claimed.id == entry.id
    if state == "delivered":
        assert outbox.mark_delivered(entry.id, now=when)
    else:  # with max_attempts=1 the first failure is the last
        assert outbox.mark_failed(entry.id, "refused", now=when)
    assert stored_entry(outbox, entry.id).state == state
    return entry.id


# -- what is recorded ----------------------------------------------------------------------------


def test_every_try_is_recorded_with_its_outcome(outbox: WebhookOutbox) -> None:
    clock = Clock()
    refused = DeliveryFailed("peer refused (HTTP 503)", status=503, answer='{"busy": true}')
    deliver = Recorder([refused, RuntimeError("https://h/?token=secret")])
    run = worker(outbox, deliver, clock, step=0.75)  # each delivery takes 750 ms
    entry = outbox.store("crm", PAYLOAD, now=T0)
    started = []
    for _ in range(3):
        clock.now = stored_entry(outbox, entry.id).next_attempt_at
        started.append(clock.now)
        assert run.run_once()
    unexpected = "RuntimeError: unexpected error (details in the server log)"
    assert outbox.attempts(entry.id) == [
        Attempt(entry.id, 1, T0, 750, False, 503, '{"busy": true}', "peer refused (HTTP 503)"),
        Attempt(entry.id, 2, started[1], 750, False, None, "", unexpected),
        Attempt(entry.id, 3, started[2], 750, True, None, "", ""),
    ]
    assert T0 < started[1] < started[2]
    assert stored_entry(outbox, entry.id).state == "delivered"


def test_a_backend_error_without_a_status_records_none(outbox: WebhookOutbox) -> None:
    run = worker(outbox, Recorder([BackendError("cannot connect to crm")]), Clock())
    entry = outbox.store("crm", PAYLOAD, now=T0)
    run.run_once()
    (attempt,) = outbox.attempts(entry.id)
    assert (attempt.status, attempt.answer, attempt.error) == (None, "", "cannot connect to crm")


def test_the_answer_is_bounded_and_showable(outbox: WebhookOutbox) -> None:
    unsafe = "ok\r\n\x1b[2J\x07\u202eevil\ttab" + "y" * 5000
    failure = DeliveryFailed("refused", status=500, answer=unsafe)
    assert failure.answer.startswith("ok\n[2Jevil\ttab") and len(failure.answer) == 1000
    # the store bounds what it is given, whoever calls it
    entry = outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)
    outbox.mark_failed(entry.id, "e" * 2000, now=T0, status=500, answer=unsafe)
    (attempt,) = outbox.attempts(entry.id)
    assert attempt.answer == failure.answer and len(attempt.answer) == ANSWER_EXCERPT_CHARS
    assert attempt.error == "e" * records.MAX_ERROR_CHARS


def test_nothing_is_recorded_by_a_worker_that_lost_its_lease(outbox: WebhookOutbox) -> None:
    entry = outbox.store("crm", PAYLOAD, now=T0)
    assert outbox.claim("w1", now=T0) is not None
    later = T0 + outbox.lease_seconds + 1
    assert outbox.claim("w2", now=later) is not None  # w1's lease expired: taken over
    assert not outbox.mark_failed(entry.id, "late", owner="w1", now=later, status=500)
    assert not outbox.mark_delivered(entry.id, owner="w1", now=later)
    assert outbox.attempts(entry.id) == []
    assert outbox.mark_delivered(entry.id, owner="w2", now=later, duration_ms=12)
    assert outbox.attempts(entry.id) == [Attempt(entry.id, 1, later, 12, True, None, "", "")]


def test_numbers_go_on_across_a_retry(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    entry = outbox.store("crm", PAYLOAD, now=T0)
    for when in (T0, T0 + 1):
        outbox.claim("w1", now=when)
        outbox.mark_failed(entry.id, "refused", now=when)
        assert stored_entry(outbox, entry.id).state == "failed"
        outbox.retry(entry.id, now=when + 0.5)
    assert stored_entry(outbox, entry.id).attempts == 0
    assert [a.number for a in outbox.attempts(entry.id)] == [1, 2]


def test_an_unknown_webhook_has_no_attempts(outbox: WebhookOutbox) -> None:
    assert outbox.attempts(404) == []


# -- purged with their webhook ------------------------------------------------------------------


def test_the_purge_removes_attempts_with_their_webhook_in_the_same_batches(
    make_outbox: MakeOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "PURGE_BATCH_ROWS", 2)
    outbox = make_outbox(max_attempts=1)

    def with_attempts() -> list[int]:
        return [i for i in [*old, kept] if outbox.attempts(i)]

    old = [finished(outbox, "crm", "failed", T0 + i) for i in range(5)]
    kept = finished(outbox, "crm", "delivered", T0 + 9 * DAY)
    first = outbox.purge(7, now=T0 + 10 * DAY, max_rows=3)  # stops after two batches
    assert (first.webhooks, first.complete) == (3, False)
    assert with_attempts() == [*old[3:], kept]  # none left of a webhook that is gone
    outbox.purge(7, now=T0 + 10 * DAY)
    assert with_attempts() == [kept]


# -- an outbox made by an older version --------------------------------------------------------

#: The schema before attempts were recorded (as released), to make an old file with.
OLD_SCHEMA = """
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    last_error TEXT NOT NULL DEFAULT '',
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_expires_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_by_state ON webhooks (state, next_attempt_at);
CREATE INDEX webhooks_finished ON webhooks (updated_at) WHERE state IN ('delivered', 'failed');
CREATE TABLE refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    refused_at REAL NOT NULL,
    target TEXT NOT NULL,
    size_bytes INTEGER,
    limit_bytes INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX refusals_by_time ON refusals (refused_at);
"""


def _old_outbox(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(OLD_SCHEMA)
        conn.executemany(
            "INSERT INTO webhooks (target, payload, idempotency_key, created_at, updated_at,"
            " attempts, next_attempt_at, state, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("crm", '{"xRequest": "1"}', "k-1", T0, T0, 3, T0, "pending", "HTTP 500"),
                ("crm", '{"xRequest": "2"}', "k-2", T0, T0, 1, T0, "delivered", ""),
            ],
        )
        conn.commit()
    finally:
        conn.close()


def _names(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_an_old_outbox_is_upgraded_in_place_and_keeps_its_webhooks(path: Path) -> None:
    _old_outbox(path)
    assert "attempts" not in _names(path)
    outbox = Outbox(path)
    assert {"attempts", "webhooks_by_target_created", "webhooks_by_created"} <= _names(path)
    old = stored_entry(outbox, 1)
    assert (old.payload, old.attempts, old.last_error) == ({"xRequest": "1"}, 3, "HTTP 500")
    assert outbox.attempts(1) == []  # tried before attempts were recorded
    assert outbox.counts() == {("crm", "pending"): 1, ("crm", "delivered"): 1}
    claimed = outbox.claim("w1", now=T0)
    assert claimed is not None and claimed.id == 1
    assert outbox.mark_failed(1, "refused", now=T0, status=502)
    assert [(a.number, a.status) for a in outbox.attempts(1)] == [(1, 502)]
    Outbox(path)  # opening it again changes nothing
    assert [(a.number, a.status) for a in Outbox(path).attempts(1)] == [(1, 502)]


# -- what the console reads -----------------------------------------------------------------------


def test_counts_by_target_and_state(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    finished(outbox, "crm", "failed", T0)
    finished(outbox, "chat", "delivered", T0)
    finished(outbox, "chat", "failed", T0)
    for _ in range(3):
        outbox.store("crm", PAYLOAD, now=T0)
    outbox.claim("w1", now=T0)  # one of crm's pending is being delivered
    assert outbox.counts() == {
        ("chat", "delivered"): 1,
        ("chat", "failed"): 1,
        ("crm", "delivering"): 1,
        ("crm", "failed"): 1,
        ("crm", "pending"): 2,
    }


def test_counts_of_an_empty_outbox(outbox: WebhookOutbox) -> None:
    assert outbox.counts() == {}
    assert outbox.created_by_hour(T0) == {}
    assert outbox.oldest_pending() is None


def test_created_by_hour_counts_each_hour_and_state_since(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    hour = (T0 // HOUR) * HOUR  # T0 is 20 minutes into an hour
    since = hour + 10 * 60
    finished(outbox, "crm", "delivered", since - 1)  # before: not counted
    finished(outbox, "crm", "delivered", since)
    finished(outbox, "crm", "failed", since + 5)
    finished(outbox, "crm", "delivered", hour + 2 * HOUR + 1)
    finished(outbox, "chat", "delivered", hour + 2 * HOUR + 59 * 60)
    outbox.store("crm", PAYLOAD, now=hour + 3 * HOUR)  # pending, in the next hour
    assert outbox.created_by_hour(since) == {
        (int(hour), "delivered"): 1,
        (int(hour), "failed"): 1,
        (int(hour + 2 * HOUR), "delivered"): 2,
        (int(hour + 3 * HOUR), "pending"): 1,
    }
    assert list(outbox.created_by_hour(since)) == sorted(outbox.created_by_hour(since))


def test_oldest_pending_counts_webhooks_being_delivered_too(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_attempts=1)
    finished(outbox, "crm", "delivered", T0 - 3 * DAY)  # finished: not waiting
    finished(outbox, "crm", "failed", T0 - 2 * DAY)
    outbox.store("crm", PAYLOAD, now=T0)
    assert outbox.oldest_pending() == T0
    in_flight = outbox.store("crm", PAYLOAD, now=T0 - DAY)  # older, and then claimed
    claimed = outbox.claim("w1", now=T0 + 1)
    assert claimed is not None and claimed.id == in_flight.id
    assert outbox.oldest_pending() == T0 - DAY


def test_retry_failed_makes_every_failed_webhook_of_a_target_due_at_once(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(max_attempts=1)
    failed = [finished(outbox, "crm", "failed", T0 + i) for i in range(2)]
    other = finished(outbox, "chat", "failed", T0)
    done = finished(outbox, "crm", "delivered", T0)
    woken = threading.Event()
    outbox.subscribe(woken)
    assert outbox.retry_failed("crm", now=T0 + DAY) == 2
    assert woken.is_set()
    for webhook_id in failed:
        entry = stored_entry(outbox, webhook_id)
        assert (entry.state, entry.attempts, entry.next_attempt_at) == ("pending", 0, T0 + DAY)
        assert len(outbox.attempts(webhook_id)) == 1  # their history is kept
    assert stored_entry(outbox, other).state == "failed"
    assert stored_entry(outbox, done).state == "delivered"
    assert outbox.retry_failed("crm", now=T0 + DAY) == 0
    assert outbox.retry_failed("nope") == 0


def test_retry_failed_retries_all_or_none(path: Path) -> None:
    outbox = Outbox(path, max_attempts=1)
    ids = [finished(outbox, "crm", "failed", T0 + i) for i in range(3)]
    conn = sqlite3.connect(path)
    try:  # the second of them cannot be written
        conn.execute(
            "CREATE TRIGGER lost AFTER UPDATE OF state ON webhooks"
            f" WHEN NEW.id = {ids[1]} BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
        )
    finally:
        conn.close()
    with pytest.raises(OutboxError, match="disk gone"):
        outbox.retry_failed("crm", now=T0 + DAY)
    assert [stored_entry(outbox, i).state for i in ids] == ["failed"] * 3


def test_retry_failed_in_a_time_range_takes_only_those_received_in_it(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(max_attempts=1)
    ids = [finished(outbox, "crm", "failed", T0 + 60 * i) for i in range(4)]
    other = finished(outbox, "other", "failed", T0 + 90)
    done = finished(outbox, "crm", "delivered", T0 + 100)
    # from T0+60 on, before T0+180: the second and third
    assert outbox.retry_failed("crm", now=T0 + DAY, since=T0 + 60, until=T0 + 180) == 2
    states = [stored_entry(outbox, i).state for i in [*ids, other, done]]
    assert states == ["failed", "pending", "pending", "failed", "failed", "delivered"]
    assert stored_entry(outbox, ids[1]).next_attempt_at == T0 + DAY
    assert outbox.retry_failed("crm", now=T0 + DAY, until=T0 + 60) == 1  # open start
    assert outbox.retry_failed("crm", now=T0 + DAY, since=T0 + 180) == 1  # open end
    assert outbox.retry_failed("crm", now=T0 + DAY) == 0  # nothing failed is left


def test_an_empty_time_range_is_an_error(outbox: Outbox) -> None:
    with pytest.raises(OutboxError, match="--since must come before --until"):
        outbox.retry_failed("crm", since=T0, until=T0)


def test_the_index_by_target_alone_goes_when_an_outbox_is_opened(path: Path) -> None:
    Outbox(path)
    conn = sqlite3.connect(path)
    try:  # an outbox of the previous version had it
        conn.execute("CREATE INDEX webhooks_by_target ON webhooks (target, state)")
    finally:
        conn.close()
    Outbox(path)
    assert "webhooks_by_target" not in _names(path)
    assert "webhooks_by_target_created" in _names(path)


#: The retry of a target's failed webhooks reads only those in its time range.
_BY_TARGET_AND_TIME = (
    "INDEX webhooks_by_target_created (target=? AND state=? AND created_at>? AND created_at<?)"
)


@pytest.mark.parametrize(
    ("query", "params", "index"),
    [
        (store_module._COUNTS, (), "COVERING INDEX webhooks_by_target_created"),
        (
            store_module._BY_HOUR,
            (T0,),
            "COVERING INDEX webhooks_by_created (state=? AND created_at>?)",
        ),
        (store_module._OLDEST_WAITING, (), "COVERING INDEX webhooks_by_created (state=?)"),
        (
            store_module._RETRY_FAILED,
            (T0, T0, "crm", T0 - 3600, T0),
            _BY_TARGET_AND_TIME,
        ),
        (
            store_module._RETRY_FAILED,
            (T0, T0, "crm", float("-inf"), float("inf")),
            _BY_TARGET_AND_TIME,
        ),
    ],
)
@sqlite_only
def test_the_console_reads_an_index_never_the_payload_rows(
    outbox: WebhookOutbox, path: Path, query: str, params: tuple[object, ...], index: str
) -> None:
    conn = sqlite3.connect(path)
    try:
        steps = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", params)]
    finally:
        conn.close()
    reads = [step for step in steps if step.startswith(("SCAN", "SEARCH"))]
    # every read of the table goes through the index (a scan of the index is a count)
    webhooks = [step for step in reads if " webhooks " in f"{step} "]
    assert webhooks and all(index in step for step in webhooks), steps
