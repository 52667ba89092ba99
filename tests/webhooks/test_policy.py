"""Each target's circuit breaker, in both stores (SQLite, PostgreSQL), shared by every process."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lookup_server.webhooks import (
    DeliveryWorker,
    OutboxEntry,
    TargetPolicy,
    TargetState,
    WebhookOutbox,
)
from lookup_server.webhooks.policy import until_claimable
from lookup_server.webhooks.store import claimable_query
from tests.webhooks.conftest import (
    HANG_GUARD,
    PAYLOAD,
    T0,
    MakeOutbox,
    Recorder,
    sqlite_only,
    stored_entry,
    wait_for,
)

BREAKER = {"crm": TargetPolicy(breaker_failures=3, breaker_probe_seconds=60)}
#: Far enough on that every backoff of a failed try is over.
LATER = T0 + 10_000


def claimed(outbox: WebhookOutbox, now: float) -> OutboxEntry:
    entry = outbox.claim("w", now=now)
    assert entry is not None, f"nothing claimed at T0+{now - T0:g}"
    return entry


def fail(outbox: WebhookOutbox, entry: OutboxEntry, now: float, *, final: bool = False) -> None:
    assert outbox.mark_failed(entry.id, "HTTP 503", owner="w", now=now, final=final)


def state_of(outbox: WebhookOutbox, target: str) -> TargetState:
    found = {state.target: state for state in outbox.target_states()}
    return found.get(target, TargetState(target))


def trip(outbox: WebhookOutbox, now: float) -> None:
    """Three retryable failures in a row for crm (the first of its webhooks, each time)."""
    for step in range(3):
        fail(outbox, claimed(outbox, now + step), now + step)


def test_n_consecutive_failures_pause_the_target_without_touching_its_webhooks(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(policies=BREAKER, rng=random.Random(1))
    waiting = [outbox.store("crm", PAYLOAD, now=T0 + i).id for i in range(4)]
    trip(outbox, LATER)
    state = state_of(outbox, "crm")
    assert state.paused and state.paused_since == LATER + 2
    assert state.consecutive_failures == 3 and state.next_probe_at == LATER + 62
    other = outbox.store("erp", PAYLOAD, now=LATER)
    # crm's webhooks are due, yet only the other target's is claimed
    assert claimed(outbox, LATER + 3).id == other.id
    assert outbox.mark_delivered(other.id, owner="w", now=LATER + 4)
    assert outbox.claim("w", now=LATER + 61) is None
    assert [stored_entry(outbox, i).state for i in waiting] == ["pending"] * 4
    assert stored_entry(outbox, waiting[3]).attempts == 0  # waiting costs no attempt


def test_a_probe_now_and_then_and_a_success_resumes(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies=BREAKER, rng=random.Random(1))
    for i in range(3):
        outbox.store("crm", PAYLOAD, now=T0 + i)
    trip(outbox, LATER)
    probe = claimed(outbox, LATER + 62)
    assert outbox.claim("w", now=LATER + 63) is None  # one probe at a time
    fail(outbox, probe, LATER + 64)  # still down: paused, the next probe a period on
    assert state_of(outbox, "crm").paused
    assert state_of(outbox, "crm").next_probe_at == LATER + 124
    assert outbox.claim("w", now=LATER + 123) is None
    probe = claimed(outbox, LATER + 124)
    assert outbox.mark_delivered(probe.id, owner="w", now=LATER + 125)
    assert state_of(outbox, "crm") == TargetState("crm")
    # resumed: the rest go at once, one after the other
    first, second = claimed(outbox, LATER + 126), claimed(outbox, LATER + 126)
    assert first.id != second.id


def test_final_failures_do_not_count_retryable_ones_do(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies=BREAKER, rng=random.Random(1))
    for i in range(6):
        outbox.store("crm", PAYLOAD, now=T0 + i)
    for step in range(5):  # the peer refused each of these webhooks for good
        fail(outbox, claimed(outbox, LATER + step), LATER + step, final=True)
    assert state_of(outbox, "crm").consecutive_failures == 0
    fail(outbox, claimed(outbox, LATER + 10), LATER + 10)
    assert state_of(outbox, "crm").consecutive_failures == 1
    assert not state_of(outbox, "crm").paused


def test_a_success_between_failures_starts_the_count_again(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies=BREAKER, rng=random.Random(1))
    for i in range(5):
        outbox.store("crm", PAYLOAD, now=T0 + i)
    for step in range(2):
        fail(outbox, claimed(outbox, LATER + step), LATER + step)
    delivered = claimed(outbox, LATER + 2)
    assert outbox.mark_delivered(delivered.id, owner="w", now=LATER + 2)
    for step in range(2):
        fail(outbox, claimed(outbox, LATER + 3 + step), LATER + 3 + step)
    assert state_of(outbox, "crm").consecutive_failures == 2
    assert not state_of(outbox, "crm").paused


def test_the_breaker_is_shared_by_every_process(make_outbox: MakeOutbox) -> None:
    one = make_outbox(policies=BREAKER, rng=random.Random(1))
    other = make_outbox(policies=BREAKER, rng=random.Random(2))  # as another server would
    for i in range(4):
        one.store("crm", PAYLOAD, now=T0 + i)
    trip(one, LATER)
    assert other.claim("w2", now=LATER + 10) is None
    assert claimed(other, LATER + 62).target == "crm"  # the one probe...
    assert one.claim("w", now=LATER + 62) is None  # ...is nobody else's too


def test_without_a_breaker_failures_never_hold_a_target_back(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies={"crm": TargetPolicy(breaker_failures=0)})
    for i in range(6):
        outbox.store("crm", PAYLOAD, now=T0 + i)
    for step in range(5):
        fail(outbox, claimed(outbox, LATER + step), LATER + step)
    assert claimed(outbox, LATER + 5).target == "crm"


def test_one_log_line_per_change_of_state_never_per_attempt(
    make_outbox: MakeOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = make_outbox(policies=BREAKER, rng=random.Random(1))
    for i in range(4):
        outbox.store("crm", PAYLOAD, now=T0 + i)
    with caplog.at_level(logging.INFO, logger="lookup_server.webhooks.policy"):
        trip(outbox, LATER)
        fail(outbox, claimed(outbox, LATER + 62), LATER + 63)
        fail(outbox, claimed(outbox, LATER + 123), LATER + 124)
        probe = claimed(outbox, LATER + 184)
        assert outbox.mark_delivered(probe.id, owner="w", now=LATER + 185)
    lines = [r.getMessage() for r in caplog.records if r.name == "lookup_server.webhooks.policy"]
    assert len(lines) == 2, lines
    assert "'crm' paused after 3 consecutive failed attempts" in lines[0]
    assert "'crm' resumed" in lines[1] and "after 5 failed attempts" in lines[1]


def test_max_concurrent_caps_deliveries_in_flight_across_processes(
    make_outbox: MakeOutbox,
) -> None:
    policies = {"crm": TargetPolicy(max_concurrent=2)}
    one, other = make_outbox(policies=policies), make_outbox(policies=policies)
    for i in range(4):
        one.store("crm", PAYLOAD, now=T0 + i)
    erp = one.store("erp", PAYLOAD, now=T0 + 9)
    first, second = claimed(one, T0 + 10), claimed(other, T0 + 10)
    assert (first.target, second.target) == ("crm", "crm")
    assert claimed(one, T0 + 10).id == erp.id  # crm is at its limit: skipped, not waited on
    assert other.claim("w", now=T0 + 11) is None
    assert one.mark_delivered(first.id, owner="w", now=T0 + 12)
    assert claimed(other, T0 + 12).target == "crm"  # room for one again
    assert one.claim("w", now=T0 + 12) is None
    # a lease that ran out no longer holds a place: its webhook is taken over
    taken = claimed(one, T0 + 12 + one.lease_seconds)
    assert taken.target == "crm"


RATE = {"slack": TargetPolicy(max_per_second=2)}


def test_max_per_second_spaces_the_claims_of_a_target_across_processes(
    make_outbox: MakeOutbox,
) -> None:
    one, other = make_outbox(policies=RATE), make_outbox(policies=RATE)
    for i in range(3):
        one.store("slack", PAYLOAD, now=T0 + i)
    erp = one.store("erp", PAYLOAD, now=T0 + 9)
    first = claimed(one, T0 + 10)
    assert first.target == "slack"
    assert state_of(one, "slack").next_claim_at == T0 + 10.5
    # half a second to go: the other process skips slack, and takes the other target's
    assert claimed(other, T0 + 10.2).id == erp.id
    assert other.claim("w", now=T0 + 10.4) is None
    # in flight or not, the rate alone decides
    second = claimed(other, T0 + 10.5)
    assert second.target == "slack" and second.id != first.id
    assert one.claim("w", now=T0 + 10.9) is None
    assert claimed(one, T0 + 11).target == "slack"


def test_a_rate_limited_target_wakes_the_waiting_worker_when_it_is_claimable(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(policies={"slack": TargetPolicy(max_per_second=4)})
    now = time.time()
    for _ in range(2):
        outbox.store("slack", PAYLOAD, now=now)
    assert claimed(outbox, now).target == "slack"
    assert outbox.claim("w", now=now) is None  # a quarter of a second to go
    started = time.monotonic()
    # as the worker does: a wait may end early (a NOTIFY of the stores above
    # arrives once the LISTEN connection is up), then it claims and waits again
    while (entry := outbox.claim("w", now=time.time())) is None:
        outbox.wait_for_work(threading.Event(), timeout=HANG_GUARD)
        waited = time.monotonic() - started
        assert waited < 5, f"waited {waited:.2f} s for a target claimable 0.25 s on"
    assert entry.target == "slack"


def test_the_worker_delivers_a_rate_limited_target_without_waiting_a_poll(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(policies={"slack": TargetPolicy(max_per_second=10)})
    recorder = Recorder()
    worker = DeliveryWorker(outbox, recorder, poll_seconds=HANG_GUARD * 2)
    for _ in range(3):
        outbox.store("slack", PAYLOAD)
    worker.start()
    try:
        wait_for(lambda: len(recorder.calls) == 3)
    finally:
        worker.stop(timeout=5)


def test_until_claimable_shortens_a_wait_only_for_a_time_to_come() -> None:
    assert until_claimable(5.0, None, T0) == 5.0
    assert until_claimable(5.0, T0 + 1, T0) == 1.0
    assert until_claimable(5.0, T0 + 9, T0) == 5.0
    assert until_claimable(5.0, T0 - 1, T0) == 0.0


ORDERED = {"crm": TargetPolicy(ordered=True)}


def test_an_ordered_target_delivers_the_webhooks_of_a_request_in_order(
    make_outbox: MakeOutbox,
) -> None:
    one, other = make_outbox(policies=ORDERED), make_outbox(policies=ORDERED)
    first = one.store("crm", PAYLOAD, now=T0, request_id="1")
    second = one.store("crm", PAYLOAD, now=T0 + 1, request_id="1")
    elsewhere = one.store("crm", PAYLOAD, now=T0 + 2, request_id="2")
    unknown = [one.store("crm", PAYLOAD, now=T0 + 3 + i).id for i in range(2)]
    assert stored_entry(one, second.id).request_id == "1"
    assert claimed(one, T0 + 10).id == first.id
    # request 1's second waits while its first is delivering, in any process
    assert claimed(other, T0 + 10).id == elsewhere.id
    # webhooks without a request id are never held back
    assert [claimed(other, T0 + 10).id, claimed(one, T0 + 10).id] == unknown
    assert other.claim("w", now=T0 + 10) is None
    assert one.mark_delivered(first.id, owner="w", now=T0 + 11)
    assert claimed(other, T0 + 11).id == second.id


def test_an_earlier_webhook_waiting_for_its_retry_holds_the_later_back(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox(policies=ORDERED, rng=random.Random(1))
    first = outbox.store("crm", PAYLOAD, now=T0, request_id="1")
    second = outbox.store("crm", PAYLOAD, now=T0 + 1, request_id="1")
    fail(outbox, claimed(outbox, T0 + 10), T0 + 10)
    assert stored_entry(outbox, first.id).state == "pending"
    assert outbox.claim("w", now=T0 + 11) is None  # the second waits for the first's retry
    assert claimed(outbox, LATER).id == first.id
    assert outbox.mark_delivered(first.id, owner="w", now=LATER)
    assert claimed(outbox, LATER).id == second.id


def test_a_failed_webhook_no_longer_holds_its_request_back(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies=ORDERED)
    first = outbox.store("crm", PAYLOAD, now=T0, request_id="1")
    second = outbox.store("crm", PAYLOAD, now=T0 + 1, request_id="1")
    fail(outbox, claimed(outbox, T0 + 10), T0 + 10, final=True)  # a dead letter
    assert stored_entry(outbox, first.id).state == "failed"
    assert claimed(outbox, T0 + 11).id == second.id


def test_without_ordered_the_webhooks_of_a_request_go_at_once(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(policies={"crm": TargetPolicy(), "erp": TargetPolicy(ordered=True)})
    first = outbox.store("crm", PAYLOAD, now=T0, request_id="1")
    second = outbox.store("crm", PAYLOAD, now=T0 + 1, request_id="1")
    # another target's webhook of the same request holds nothing back either
    outbox.store("erp", PAYLOAD, now=T0 + 2, request_id="1")
    assert [claimed(outbox, T0 + 10).id for _ in range(2)] == [first.id, second.id]
    assert claimed(outbox, T0 + 10).target == "erp"


@sqlite_only
def test_the_earlier_webhooks_of_a_request_are_found_through_their_index(
    make_outbox: MakeOutbox, outbox_location: Path
) -> None:
    make_outbox(policies=ORDERED)
    conn = sqlite3.connect(outbox_location)
    try:
        query = f"EXPLAIN QUERY PLAN {claimable_query(1, 1)}"
        steps = [row[3] for row in conn.execute(query, (T0, T0, "erp", "crm"))]
    finally:
        conn.close()
    earlier = [step for step in steps if step.startswith("SEARCH e ")]
    assert earlier == [
        "SEARCH e USING INDEX webhooks_by_request (target=? AND request_id=? AND id<?)"
    ], steps
