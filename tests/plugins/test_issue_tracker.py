"""The trackers' webhook record: one issue per webhook, however many servers deliver it.

Every test runs on a SQLite file and on PostgreSQL (tests/plugins/conftest.py):
two :class:`CreatedIssues` on one store are two servers sharing it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from lookup_plugins.issue_tracker import CreatedIssues

from lookup_server.plugin import BackendError, DeliveryFailed, StoreLocation, Webhook

WEBHOOK = Webhook(41, "7c9e6679-7425-40de-944b-e07fc1f90ae7", {"xRequest": "12400"})
#: Guards against a hang only; a passing test never waits this long.
HANG_GUARD = 30.0


@pytest.fixture
def server(store_location: StoreLocation) -> Iterator[Callable[..., CreatedIssues]]:
    """Opens the webhook record on the store under test, as another server would."""
    opened: list[CreatedIssues] = []

    def open_one(attempt_seconds: float = HANG_GUARD) -> CreatedIssues:
        record = CreatedIssues(store_location, "jira", "Jira", attempt_seconds=attempt_seconds)
        opened.append(record)
        return record

    yield open_one
    for record in opened:
        record.close()


class Tracker:
    """Creates numbered issues; ``hold`` keeps each creation waiting until released."""

    def __init__(self, hold: bool = False) -> None:
        self.made: list[str] = []
        self.inside = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def create(self) -> str:
        self.inside.set()
        assert self.release.wait(HANG_GUARD)
        with self._lock:
            issue = f"HS-{next(self._numbers)}"
            self.made.append(issue)
        return issue


def test_a_webhook_delivered_by_two_servers_at_once_makes_one_issue(
    server: Callable[..., CreatedIssues],
) -> None:
    one, other = server(), server()
    tracker = Tracker(hold=True)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(one.create_once, WEBHOOK, tracker.create)
        assert tracker.inside.wait(HANG_GUARD)  # the first is creating the issue now
        second = pool.submit(other.create_once, WEBHOOK, tracker.create)
        tracker.release.set()
        assert first.result(HANG_GUARD) == second.result(HANG_GUARD) == "HS-1"
    assert tracker.made == ["HS-1"]
    assert other.find(WEBHOOK.idempotency_key) is not None


def test_many_deliveries_racing_from_the_start_make_one_issue(
    server: Callable[..., CreatedIssues],
) -> None:
    servers = [server() for _ in range(3)]
    tracker = Tracker()
    start = threading.Barrier(6)

    def deliver(record: CreatedIssues) -> str:
        start.wait(HANG_GUARD)
        return record.create_once(WEBHOOK, tracker.create)

    with ThreadPoolExecutor(6) as pool:
        issues = set(pool.map(deliver, servers * 2))
    assert issues == {"HS-1"} and tracker.made == ["HS-1"]


def test_an_attempt_at_work_elsewhere_for_longer_than_the_wait_is_retried_later(
    server: Callable[..., CreatedIssues],
) -> None:
    one = server()
    one.records.put(WEBHOOK.idempotency_key, {"issue": "", "started_at": one.clock()})
    tracker = Tracker()
    with pytest.raises(DeliveryFailed, match="another attempt is creating") as raised:
        server(attempt_seconds=0.2).create_once(WEBHOOK, tracker.create)
    assert not raised.value.final and (raised.value.retry_after or 0) >= 1
    assert tracker.made == []


def test_an_abandoned_attempt_is_taken_over_by_one_of_two_servers(
    server: Callable[..., CreatedIssues], caplog: pytest.LogCaptureFixture
) -> None:
    # a server died between sending the create and recording its answer, long ago
    one, other = server(), server()
    one.records.put(WEBHOOK.idempotency_key, {"issue": "", "request_id": "1", "started_at": 1.0})
    tracker = Tracker()
    start = threading.Barrier(2)

    def deliver(record: CreatedIssues) -> str:
        start.wait(HANG_GUARD)
        return record.create_once(WEBHOOK, tracker.create)

    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(2) as pool:
        issues = set(pool.map(deliver, [one, other]))
    assert issues == {"HS-1"} and tracker.made == ["HS-1"]
    assert caplog.text.count("never finished") == 1


def test_an_attempt_that_lost_its_answer_lets_the_next_one_go_at_once(
    server: Callable[..., CreatedIssues], caplog: pytest.LogCaptureFixture
) -> None:
    one = server()

    def lost() -> str:
        raise BackendError("Jira did not answer within 10 s")

    with pytest.raises(BackendError, match="did not answer"):
        one.create_once(WEBHOOK, lost)
    assert server().create_once(WEBHOOK, Tracker().create) == "HS-1"  # no wait for the first
    assert "a second one" in caplog.text


def test_a_refusal_leaves_no_record_behind(server: Callable[..., CreatedIssues]) -> None:
    one = server()

    def refused() -> str:
        raise DeliveryFailed("Jira refused the issue (HTTP 400)", status=400)

    with pytest.raises(DeliveryFailed):
        one.create_once(WEBHOOK, refused)
    assert one.find(WEBHOOK.idempotency_key) is None
