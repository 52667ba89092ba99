"""The delivery worker: claim, deliver, record; an unusable outbox logged once."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from lookup_server.backend import BackendError
from lookup_server.outbox import BACKOFF_CAP, DeliveryWorker, Outbox
from tests.outbox.conftest import (
    HANG_GUARD,
    PAYLOAD,
    T0,
    Clock,
    Recorder,
    corrupt_header,
    restore_header,
    wait_for,
)

# -- claim, deliver, record ------------------------------------------------------------------


def test_run_once_delivers_and_records(outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    deliver = Recorder()
    worker = DeliveryWorker(outbox, deliver, owner="w1")
    assert worker.run_once(now=T0)
    assert deliver.calls == [("crm", stored.webhook)]
    assert outbox.get(stored.id).state == "delivered"  # type: ignore[union-attr]
    assert not worker.run_once(now=T0)


def test_run_once_keeps_the_key_across_retries_and_hides_unexpected_errors(
        outbox: Outbox) -> None:
    stored = outbox.store("crm", PAYLOAD, now=T0)
    deliver = Recorder([BackendError("CRM answered HTTP 502"),
                        ValueError("https://crm/?api_key=hunter2")])
    worker = DeliveryWorker(outbox, deliver, owner="w1")
    assert worker.run_once(now=T0)
    assert outbox.get(stored.id).last_error == "CRM answered HTTP 502"  # type: ignore[union-attr]
    assert worker.run_once(now=T0 + BACKOFF_CAP)
    entry = outbox.get(stored.id)
    assert entry is not None and entry.state == "pending" and "hunter2" not in entry.last_error
    assert worker.run_once(now=T0 + 2 * BACKOFF_CAP)
    keys = {webhook.idempotency_key for _, webhook in deliver.calls}
    assert keys == {stored.idempotency_key} and len(deliver.calls) == 3
    assert outbox.get(stored.id).state == "delivered"  # type: ignore[union-attr]


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
    assert outbox.get(stored.id).state == "delivered"  # type: ignore[union-attr]


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
    assert outbox.entries(["pending"])


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
    assert outbox.get(first.id).state == "pending"  # type: ignore[union-attr]
    assert outbox.get(second.id).state == "delivered"  # type: ignore[union-attr]


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
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
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
