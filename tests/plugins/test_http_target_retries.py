"""What the http target's refusals do to a webhook in the outbox: delivered, final, retried."""

from __future__ import annotations

import email.utils
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask, Response, request
from lookup_plugins.http_target import HttpTarget

from lookup_server.webhooks import DeliveryWorker, Outbox
from lookup_server.webhooks.records import Attempt, OutboxEntry
from tests.plugins.emulators import Running, serve
from tests.plugins.test_http_target import make_target
from tests.webhooks.conftest import T0, Fixed

#: The backoff after a first failure with Fixed(0.0): the low end of 15-30 s.
BACKOFF = 15.0


@dataclass
class Answering:
    """A receiver that answers every webhook with ``status`` and ``headers``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def app(self) -> Flask:
        app = Flask("answering")

        @app.post("/items")
        def items() -> Response:
            request.get_data()
            body = json.dumps({"message": f"said {self.status}"})
            return Response(body, self.status, self.headers, content_type="application/json")

        return app


@pytest.fixture
def peer() -> Iterator[tuple[Answering, Running]]:
    state = Answering()
    with serve(state.app()) as running:
        yield state, running


def deliver_once(target: HttpTarget, tmp_path: Path) -> tuple[Outbox, int]:
    """Store one webhook and have a worker try it once at T0; the outbox and its id."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", rng=Fixed(0.0))
    entry = outbox.store("crm", {"xRequest": "1"}, now=T0)
    target.clock = functools.partial(float, T0)
    worker = DeliveryWorker(
        outbox, lambda _name, webhook: target.deliver(webhook), clock=lambda: T0
    )
    assert worker.run_once(now=T0)
    return outbox, entry.id


def outcome(
    peer: tuple[Answering, Running], tmp_path: Path, status: int, **headers: str
) -> tuple[OutboxEntry, list[Attempt]]:
    """The webhook after one try against a peer answering ``status`` with ``headers``."""
    state, running = peer
    state.status, state.headers = status, headers
    outbox, webhook_id = deliver_once(make_target(running.base_url, tmp_path), tmp_path)
    entry = outbox.get(webhook_id)
    assert entry is not None
    return entry, outbox.attempts(webhook_id)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_a_2xx_is_delivered(peer: tuple[Answering, Running], tmp_path: Path, status: int) -> None:
    entry, (attempt,) = outcome(peer, tmp_path, status)
    assert entry.state == "delivered" and attempt.delivered


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422])
def test_any_other_4xx_is_final_at_once_with_its_answer_kept(
    peer: tuple[Answering, Running], tmp_path: Path, status: int
) -> None:
    entry, (attempt,) = outcome(peer, tmp_path, status, **{"Retry-After": "60"})
    assert (entry.state, entry.attempts) == ("failed", 1)
    assert (attempt.status, attempt.answer) == (status, json.dumps({"message": f"said {status}"}))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_408_429_and_5xx_are_retried_with_backoff(
    peer: tuple[Answering, Running], tmp_path: Path, status: int
) -> None:
    entry, (attempt,) = outcome(peer, tmp_path, status)
    assert (entry.state, entry.next_attempt_at) == ("pending", T0 + BACKOFF)
    assert attempt.status == status


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_honoured(
    peer: tuple[Answering, Running], tmp_path: Path, status: int
) -> None:
    entry, _ = outcome(peer, tmp_path, status, **{"Retry-After": "120"})
    assert (entry.state, entry.next_attempt_at) == ("pending", T0 + 120)


def test_retry_after_as_an_http_date_is_honoured(
    peer: tuple[Answering, Running], tmp_path: Path
) -> None:
    when = email.utils.formatdate(T0 + 600, usegmt=True)
    entry, _ = outcome(peer, tmp_path, 503, **{"Retry-After": when})
    assert (entry.state, entry.next_attempt_at) == ("pending", T0 + 600)


def test_a_retry_after_shorter_than_the_backoff_keeps_the_backoff(
    peer: tuple[Answering, Running], tmp_path: Path
) -> None:
    entry, _ = outcome(peer, tmp_path, 429, **{"Retry-After": "2"})
    assert entry.next_attempt_at == T0 + BACKOFF


def test_a_redirect_is_retried_not_final(peer: tuple[Answering, Running], tmp_path: Path) -> None:
    entry, _ = outcome(peer, tmp_path, 302)
    assert (entry.state, entry.next_attempt_at) == ("pending", T0 + BACKOFF)


def test_a_network_error_is_retried(tmp_path: Path) -> None:
    outbox, webhook_id = deliver_once(make_target("http://127.0.0.1:9", tmp_path), tmp_path)
    entry = outbox.get(webhook_id)
    assert entry is not None and (entry.state, entry.next_attempt_at) == ("pending", T0 + BACKOFF)
    (attempt,) = outbox.attempts(webhook_id)
    assert attempt.status is None and "cannot connect" in attempt.error
