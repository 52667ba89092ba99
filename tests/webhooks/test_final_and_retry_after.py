"""What a peer says about retrying: a final refusal fails at once; a wait is honoured."""

from __future__ import annotations

from pathlib import Path

from lookup_server.webhooks.records import BACKOFF_CAP
from lookup_server.webhooks.store import Outbox


def test_a_final_refusal_fails_the_webhook_at_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    entry = outbox.store("survey", {"xRequest": "1"}, now=100.0)
    assert outbox.claim("me", now=100.0) is not None
    assert outbox.mark_failed(entry.id, "plan limit", owner="me", now=101.0, status=402, final=True)
    done = outbox.get(entry.id)
    assert done is not None and (done.state, done.attempts) == ("failed", 1)
    assert outbox.attempts(entry.id)[0].status == 402


def test_a_retry_is_no_sooner_than_the_peer_asked(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3")
    entry = outbox.store("survey", {"xRequest": "1"}, now=100.0)
    assert outbox.claim("me", now=100.0) is not None
    assert outbox.mark_failed(entry.id, "throttled", owner="me", now=101.0, retry_after=600)
    waiting = outbox.get(entry.id)
    assert waiting is not None and waiting.state == "pending"
    assert waiting.next_attempt_at >= 701.0  # the backoff alone would be 15-30 s
    # a peer asking for a day is held to the backoff's cap
    assert outbox.claim("me", now=waiting.next_attempt_at) is not None
    assert outbox.mark_failed(entry.id, "throttled", owner="me", now=1000.0, retry_after=10**6)
    later = outbox.get(entry.id)
    assert later is not None and later.next_attempt_at <= 1000.0 + BACKOFF_CAP
