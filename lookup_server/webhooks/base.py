"""What both outboxes do alike, whatever their SQL: listeners, and how an outcome is decided.

A store (:mod:`.store`, SQLite; :mod:`.postgres`, PostgreSQL) subclasses
:class:`OutboxBase` and writes an outcome in its own SQL (``_finish``); what
the outcome is (delivered, retried when, failed for good) is decided here once.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from lookup_server.core.backend import ANSWER_EXCERPT_CHARS, showable_excerpt
from lookup_server.webhooks.policy import Outcome, TargetPolicy
from lookup_server.webhooks.records import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    MAX_ERROR_CHARS,
    OutboxEntry,
    next_try_at,
)


@dataclass(frozen=True)
class Tried:
    """A try as the worker saw it, to record with its outcome (see Attempt)."""

    started_at: float
    duration_ms: int
    delivered: bool
    status: int | None = None
    answer: str = ""
    error: str = ""

    @property
    def values(self) -> tuple[float, int, bool, int | None, str, str]:
        """The attempt's columns after its webhook and number, as they are stored."""
        return (
            self.started_at,
            max(0, self.duration_ms),
            self.delivered,
            self.status,
            showable_excerpt(self.answer, ANSWER_EXCERPT_CHARS),
            self.error[:MAX_ERROR_CHARS],
        )


class OutboxBase(ABC):
    """The part of an outbox that is the same in every store."""

    def __init__(
        self,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        lease_seconds: float = LEASE_SECONDS,
        rng: random.Random | None = None,
        policies: Mapping[str, TargetPolicy] | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        #: Each target's delivery settings; a target without one is never held back.
        self.policies = dict(policies or {})
        self.lease_seconds = lease_seconds
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._listeners: list[threading.Event] = []
        #: When a target held back by its rate may be claimed again, as the last claim saw it.
        self._claimable_at: float | None = None

    @abstractmethod
    def get(self, entry_id: int) -> OutboxEntry | None:
        """The webhook with this id, or None."""

    @abstractmethod
    def _finish(
        self,
        entry_id: int,
        owner: str | None,
        changes: Mapping[str, object],
        tried: Tried,
        outcome: Outcome,
        moment: float,
    ) -> bool:
        """Write ``changes`` to the webhook and its attempt, while ``owner`` holds its lease.

        Also its target's shared state after an ``outcome``; False when the lease
        was no longer ``owner``'s (None: whoever holds it).
        """

    # -- the listeners ------------------------------------------------------------

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.set()

    def subscribe(self, event: threading.Event) -> None:
        """Have ``event`` set whenever this instance stores a webhook."""
        self._listeners.append(event)

    def unsubscribe(self, event: threading.Event) -> None:
        """Stop setting ``event``."""
        if event in self._listeners:
            self._listeners.remove(event)

    # -- outcomes -----------------------------------------------------------------

    def mark_delivered(
        self,
        entry_id: int,
        *,
        owner: str | None = None,
        now: float | None = None,
        started_at: float | None = None,
        duration_ms: int = 0,
    ) -> bool:
        """Record a delivery and its attempt; False when ``owner`` no longer holds the lease."""
        moment = time.time() if now is None else now
        tried = Tried(moment if started_at is None else started_at, duration_ms, True)
        changes = {"state": "delivered", "last_error": "", "updated_at": moment}
        return self._finish(entry_id, owner, changes, tried, "delivered", moment)

    def mark_failed(
        self,
        entry_id: int,
        error: str,
        *,
        owner: str | None = None,
        now: float | None = None,
        started_at: float | None = None,
        duration_ms: int = 0,
        status: int | None = None,
        answer: str = "",
        final: bool = False,
        retry_after: float | None = None,
    ) -> bool:
        """Record a failed try and its attempt: retry later with backoff, or give up.

        It gives up after max_attempts, or at once when ``final`` (the peer said
        a retry cannot succeed). ``retry_after`` puts the next try no sooner than
        that many seconds from now. ``status`` and ``answer`` are what the peer
        said, if anything; False when ``owner`` no longer holds the lease.
        """
        moment = time.time() if now is None else now
        entry = self.get(entry_id)
        if entry is None:
            return False
        message = error[:MAX_ERROR_CHARS]
        began = moment if started_at is None else started_at
        tried = Tried(began, duration_ms, False, status, answer, message)
        retry_at = next_try_at(
            entry.attempts, self.max_attempts, final, retry_after, moment, self._rng
        )
        changes: dict[str, object] = {"last_error": message, "updated_at": moment}
        if retry_at is None:
            changes["state"] = "failed"
            return self._finish(
                entry_id, owner, changes, tried, "final" if final else "retryable", moment
            )
        changes.update(state="pending", next_attempt_at=retry_at)
        return self._finish(entry_id, owner, changes, tried, "retryable", moment)
