"""The delivery worker: leases kept while a delivery runs, taken over after a crash,
an unusable outbox logged once, and the retention applied by itself."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing import synchronize
from pathlib import Path

import pytest

from lookup_server.core.calls import CallsInFlight
from lookup_server.plugin import BackendError, Webhook
from lookup_server.webhooks import BACKOFF_CAP, LEASE_SECONDS, DeliveryWorker, Outbox, records
from lookup_server.webhooks import delivery as delivery_module
from lookup_server.webhooks.leases import dead_owners, new_owner
from tests.webhooks.conftest import (
    DAY,
    HANG_GUARD,
    PAYLOAD,
    T0,
    Clock,
    Recorder,
    corrupt_header,
    restore_header,
    stored_entry,
    wait_for,
)

# -- claim, deliver, record ------------------------------------------------------------------


def test_run_once_delivers_and_records(outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    deliver = Recorder()
    worker = DeliveryWorker(outbox, deliver, owner="w1")
    assert worker.run_once(now=T0)
    assert deliver.calls == [("crm", stored.webhook)]
    assert stored_entry(outbox, stored.id).state == "delivered"
    assert not worker.run_once(now=T0)


def test_run_once_keeps_the_key_across_retries_and_hides_unexpected_errors(outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    deliver = Recorder(
        [BackendError("CRM answered HTTP 502"), ValueError("https://crm/?api_key=hunter2")]
    )
    worker = DeliveryWorker(outbox, deliver, owner="w1")
    assert worker.run_once(now=T0)
    assert stored_entry(outbox, stored.id).last_error == "CRM answered HTTP 502"
    assert worker.run_once(now=T0 + BACKOFF_CAP)
    entry = outbox.get(stored.id)
    assert entry is not None and entry.state == "pending" and "hunter2" not in entry.last_error
    assert worker.run_once(now=T0 + 2 * BACKOFF_CAP)
    keys = {webhook.idempotency_key for _, webhook in deliver.calls}
    assert keys == {stored.idempotency_key} and len(deliver.calls) == 3
    assert stored_entry(outbox, stored.id).state == "delivered"


def test_the_worker_thread_wakes_when_a_webhook_is_stored(outbox: Outbox) -> None:
    deliver = Recorder()
    # An hour between polls: only the wake-up from store() can deliver in time.
    worker = DeliveryWorker(outbox, deliver, poll_seconds=3600)
    worker.start()
    try:
        stored = outbox.store("crm", PAYLOAD)
        assert deliver.called.wait(HANG_GUARD)
    finally:
        worker.stop()
    assert deliver.calls == [("crm", stored.webhook)]
    assert stored_entry(outbox, stored.id).state == "delivered"


class WatchedCalls(CallsInFlight):
    """CallsInFlight that says when the worker begins to wait for the calls to end."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_until_idle(self, at_most: float) -> None:
        self.waiting.set()
        super().wait_until_idle(at_most)


def test_a_delivery_gives_way_to_the_calls_being_answered(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HelpSpot waits for every answer; a delivery can wait for them.
    monkeypatch.setattr(delivery_module, "GIVE_WAY_SECONDS", HANG_GUARD)
    calls = WatchedCalls()
    seen: list[int] = []
    worker = DeliveryWorker(
        outbox, lambda target, webhook: seen.append(calls.count), poll_seconds=3600, calls=calls
    )
    calls.started()
    outbox.store("crm", PAYLOAD)
    worker.start()
    try:
        assert calls.waiting.wait(HANG_GUARD)
        assert seen == []  # not while the call runs
        calls.ended()
        wait_for(lambda: seen == [0])
    finally:
        worker.stop()


def test_a_server_that_is_never_idle_still_delivers(outbox: Outbox) -> None:
    calls = CallsInFlight()
    calls.started()  # never ends
    deliver = Recorder()
    worker = DeliveryWorker(outbox, deliver, poll_seconds=3600, calls=calls)
    worker.start()
    try:
        outbox.store("crm", PAYLOAD)
        assert deliver.called.wait(HANG_GUARD)
    finally:
        worker.stop()


def test_the_worker_picks_up_what_was_stored_before_it_started(outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD)
    deliver = Recorder()
    worker = DeliveryWorker(outbox, deliver, poll_seconds=3600)
    worker.start()
    try:
        assert deliver.called.wait(HANG_GUARD)
    finally:
        worker.stop()
    assert deliver.calls == [("crm", stored.webhook)]


def test_stop_joins_the_thread(outbox: Outbox) -> None:
    worker = DeliveryWorker(outbox, Recorder(), poll_seconds=3600)
    worker.start()
    thread = worker._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    worker.stop()
    assert not thread.is_alive()
    outbox.store("crm", PAYLOAD)  # no listener left behind
    assert list(outbox.summaries(["pending"]))


def test_the_worker_survives_a_failing_delivery(outbox: Outbox) -> None:
    deliver = Recorder([RuntimeError("boom")])
    worker = DeliveryWorker(outbox, deliver, poll_seconds=3600)
    worker.start()
    try:
        first = outbox.store("crm", {"n": "1"})
        assert deliver.called.wait(HANG_GUARD)
        deliver.called.clear()
        second = outbox.store("crm", {"n": "2"})
        assert deliver.called.wait(HANG_GUARD)
    finally:
        worker.stop()
    assert stored_entry(outbox, first.id).state == "pending"
    assert stored_entry(outbox, second.id).state == "delivered"


# -- leases: kept while delivering, let go after a crash ----------------------------------------


def _lease(outbox: Outbox, entry_id: int) -> tuple[str, float]:
    entry = outbox.get(entry_id)
    assert entry is not None
    return entry.lease_owner, entry.lease_expires_at


class Blocking:
    """A deliver callable that blocks until released, as a slow target does."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, target: str, webhook: Webhook) -> None:
        self.started.set()
        assert self.release.wait(HANG_GUARD)


def test_a_long_delivery_keeps_its_lease(outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    clock, deliver = Clock(T0), Blocking()
    worker = DeliveryWorker(outbox, deliver, owner="w1", clock=clock, renew_every=0.001)
    delivering = threading.Thread(target=worker.run_once)
    delivering.start()
    try:
        assert deliver.started.wait(HANG_GUARD)
        # Far past the first lease, up to a target's longest timeout (300 s).
        for elapsed in (LEASE_SECONDS / 2, LEASE_SECONDS * 1.5, 100.0, 299.0):
            clock.now = T0 + elapsed
            wait_for(lambda: _lease(outbox, stored.id) == ("w1", clock.now + LEASE_SECONDS))
            # nobody else may deliver it meanwhile, even just before the renewed lease ends
            assert outbox.claim("w2", now=clock.now + LEASE_SECONDS - 0.001) is None
    finally:
        deliver.release.set()
        delivering.join(HANG_GUARD)
    entry = outbox.get(stored.id)
    assert entry is not None and entry.state == "delivered" and entry.attempts == 1


def test_deliveries_share_one_lease_thread(outbox: Outbox) -> None:
    # a thread started per delivery cost a millisecond of each (bench_outbox.py)
    seen: set[threading.Thread] = set()  # the threads themselves: their idents are reused
    earlier = set(threading.enumerate())  # other tests' workers' threads

    def deliver(target: str, webhook: Webhook) -> None:
        seen.update(t for t in threading.enumerate() if t.name == "webhook-lease")
        seen.difference_update(earlier)

    for _ in range(3):
        outbox.store("crm", PAYLOAD)
    worker = DeliveryWorker(outbox, deliver)
    try:
        while worker.run_once():
            pass
    finally:
        worker.stop()
    assert len(seen) == 1


def test_a_worker_that_lost_its_lease_stops_renewing_and_records_nothing(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    deliver = Blocking()
    worker = DeliveryWorker(outbox, deliver, owner="w1", clock=Clock(T0), renew_every=0.001)
    delivering = threading.Thread(target=worker.run_once)
    delivering.start()
    try:
        assert deliver.started.wait(HANG_GUARD)
        # w1 froze for longer than its lease (its clock stands still): w2 takes over
        taken = outbox.claim("w2", now=T0 + 10 * LEASE_SECONDS)
        assert taken is not None and taken.id == stored.id
        wait_for(lambda: not worker.renewal.renewing)
        assert caplog.text.count("lease lost to another worker") == 1
    finally:
        deliver.release.set()
        delivering.join(HANG_GUARD)
    entry = outbox.get(stored.id)  # w1's success is not recorded: w2 owns the outcome
    assert entry is not None and entry.state == "delivering" and entry.lease_owner == "w2"
    assert entry.lease_expires_at == T0 + 10 * LEASE_SECONDS + LEASE_SECONDS


def _deliver_until_killed(
    path: str, owner: str | None, now: float | None, delivering: synchronize.Event
) -> None:
    """Child process: claim the webhook and hang in its delivery until SIGKILL."""

    def hang(target: str, webhook: Webhook) -> None:
        delivering.set()
        threading.Event().wait()

    clock = (lambda: now) if now is not None else time.time
    DeliveryWorker(Outbox(path), hang, owner=owner, clock=clock).run_once()


def _claimed_then_killed(path: Path, owner: str | None = None, now: float | None = None) -> None:
    ctx = multiprocessing.get_context("spawn")
    delivering = ctx.Event()
    child = ctx.Process(target=_deliver_until_killed, args=(str(path), owner, now, delivering))
    child.start()
    try:
        assert delivering.wait(HANG_GUARD)
        entry = Outbox(path).get(1)
        assert entry is not None and entry.state == "delivering"
        assert entry.lease_owner == owner or entry.lease_owner.rsplit(":", 2)[1] == str(child.pid)
        # alive, with a valid lease: nobody else may take it
        assert Outbox(path).claim("other", now=now or time.time()) is None
    finally:
        child.kill()  # SIGKILL
        child.join(HANG_GUARD)
    assert child.exitcode == -signal.SIGKILL


def test_a_webhook_of_a_killed_process_on_this_host_is_taken_over_at_once(path: Path) -> None:
    outbox = Outbox(path)
    stored = outbox.store("crm", PAYLOAD)
    _claimed_then_killed(path)
    owner, expires = _lease(outbox, stored.id)
    # Still inside the dead process's lease, yet taken over: its PID is gone.
    now = time.time()
    assert now < expires
    taken = outbox.claim(new_owner(), now=now)
    assert taken is not None and taken.id == stored.id and taken.attempts == 2
    assert taken.idempotency_key == stored.idempotency_key and taken.lease_owner != owner


def test_a_webhook_of_a_killed_process_elsewhere_is_taken_over_after_one_short_lease(
    path: Path,
) -> None:
    outbox = Outbox(path)
    stored = outbox.store("crm", PAYLOAD, now=T0)
    # An owner on another host: its PID cannot be checked, only its lease can run out.
    _claimed_then_killed(path, owner="elsewhere:4242:0badcafe", now=T0)
    assert _lease(outbox, stored.id) == ("elsewhere:4242:0badcafe", T0 + LEASE_SECONDS)
    assert outbox.claim("w2", now=T0 + LEASE_SECONDS - 0.001) is None
    taken = outbox.claim("w2", now=T0 + LEASE_SECONDS)
    assert taken is not None and taken.id == stored.id
    assert LEASE_SECONDS <= 30  # picked up again within 30 s of the crash, not 600


def test_dead_owners_are_only_gone_processes_of_this_host() -> None:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=int)
    child.start()
    child.join(HANG_GUARD)  # reaped: its PID names no process now
    mine = new_owner()
    host = mine.rsplit(":", 2)[0]
    gone = f"{host}:{child.pid}:00000000"
    alive = f"{host}:{os.getppid()}:00000000"  # a live PID (maybe reused) proves nothing
    others = ["otherhost:1:00000000", f"{host}:x:y", "w1", "", f"{host}:0:00000000"]
    assert dead_owners([mine, gone, alive, *others]) == {gone}


# -- an unusable outbox ---------------------------------------------------------------------


class CountingClock(Clock):
    """A real clock that counts how often the worker read it (once per look at the outbox)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return time.time()


def test_an_unusable_outbox_is_logged_once_per_change_and_recovers_by_itself(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = Outbox(path).store("crm", PAYLOAD)
    original = corrupt_header(path)
    clock, deliver = CountingClock(), Recorder()
    worker = DeliveryWorker(Outbox(path, lazy=True), deliver, poll_seconds=0.001, clock=clock)
    caplog.set_level(logging.INFO, logger="lookup_server")

    def logged(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    worker.start()
    try:
        wait_for(lambda: clock.reads >= 50)  # it looked many times...
        assert logged("is unusable") == 1  # ...and said so once
        assert logged("is [server] outbox another kind of file") == 1
        restore_header(path, original)
        assert deliver.called.wait(HANG_GUARD)  # the webhook stored before goes out
        wait_for(lambda: logged("usable again") == 1)
        corrupt_header(path)
        wait_for(lambda: logged("is unusable") == 2)
        reads = clock.reads
        wait_for(lambda: clock.reads >= reads + 50)
        assert logged("is unusable") == 2 and logged("usable again") == 1
    finally:
        worker.stop()
    assert deliver.calls == [("crm", stored.webhook)]


# -- retention ----------------------------------------------------------------------------------


def _finished(outbox: Outbox, count: int, when: float) -> list[int]:
    ids = []
    for i in range(count):
        entry = outbox.store("crm", {"n": str(i)}, now=when)
        outbox.claim("w1", now=when)
        outbox.mark_delivered(entry.id, now=when)
        ids.append(entry.id)
    return ids


def test_the_worker_purges_after_the_retention_at_most_once_an_hour(outbox: Outbox) -> None:
    old = _finished(outbox, 2, T0)
    worker = DeliveryWorker(outbox, Recorder(), retention_days=30)
    outbox.record_refusal("crm", 5_000_000, 1_048_576, "12345", now=T0)
    assert worker.purge_if_due(now=T0 + 29 * DAY) is not None  # due, nothing old enough
    assert [e.id for e in outbox.summaries()] == old
    assert worker.purge_if_due(now=T0 + 29 * DAY + 3599) is None  # not an hour later yet
    purged = worker.purge_if_due(now=T0 + 29 * DAY + 3600)
    assert purged is not None and (purged.webhooks, purged.refusals) == (0, 0)
    purged = worker.purge_if_due(now=T0 + 31 * DAY)
    assert purged is not None and (purged.webhooks, purged.refusals) == (2, 1)
    assert list(outbox.summaries()) == [] and list(outbox.refusals()) == []


def test_retention_zero_keeps_everything(outbox: Outbox) -> None:
    _finished(outbox, 1, T0)
    worker = DeliveryWorker(outbox, Recorder(), retention_days=0)
    assert worker.purge_if_due(now=T0 + 10_000 * DAY) is None
    assert len(list(outbox.summaries())) == 1


def test_a_large_backlog_is_purged_a_pass_at_a_time(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "PURGE_BATCH_ROWS", 2)
    monkeypatch.setattr(delivery_module, "PURGE_ROWS_PER_PASS", 3)
    _finished(outbox, 7, T0)
    worker = DeliveryWorker(outbox, Recorder(), retention_days=1)
    passes = []
    now = T0 + 2 * DAY
    while (purged := worker.purge_if_due(now=now)) is not None:
        passes.append(purged.webhooks)
        if purged.complete:
            break
    assert passes == [3, 3, 1]  # one pass after another, deliveries in between
    assert worker.purge_if_due(now=now) is None  # then not again for an hour


def test_the_worker_thread_applies_the_retention_by_itself(outbox: Outbox) -> None:
    _finished(outbox, 3, time.time() - 40 * DAY)
    fresh = _finished(outbox, 1, time.time())
    worker = DeliveryWorker(outbox, Recorder(), retention_days=30, poll_seconds=3600)
    worker.start()
    try:
        wait_for(lambda: [e.id for e in outbox.summaries()] == fresh)
    finally:
        worker.stop()
