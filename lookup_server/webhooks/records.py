"""What an outbox holds, whichever store keeps it: the records, their states, the limits.

Both stores (:mod:`.store`, SQLite; :mod:`.postgres`, PostgreSQL) return these
and apply these limits; the page and batch sizes are read at each use, so a
test may shrink them for both at once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from lookup_server.core.models import Webhook
from lookup_server.webhooks.database import OutboxError

State = Literal["pending", "delivering", "delivered", "failed"]
STATES: tuple[State, ...] = ("pending", "delivering", "delivered", "failed")

#: First retry after 30 s, doubling up to an hour between tries...
BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
#: ...and giving up after about a day (7 tries to reach the cap, then hourly).
MAX_ATTEMPTS = 30
#: A claimed webhook is held this long, and renewed while its delivery runs: a
#: process that dies delivering lets go of it within this time.
LEASE_SECONDS = 20.0
#: last_error is shown in ``lookup-server outbox list``; keep it readable.
MAX_ERROR_CHARS = 500
#: Rows read per query when listing, rows deleted per transaction when purging:
#: memory stays constant and no purge holds the write lock for long.
PAGE_ROWS = 500
PURGE_BATCH_ROWS = 200


@dataclass(frozen=True)
class OutboxEntry:
    """One stored webhook with its delivery state."""

    id: int
    target: str
    payload: Mapping[str, object]
    idempotency_key: str
    created_at: float
    updated_at: float
    attempts: int
    next_attempt_at: float
    state: State
    last_error: str
    lease_owner: str
    lease_expires_at: float
    #: HelpSpot's request id (xRequest) when the payload had one, else "".
    request_id: str = ""

    @property
    def webhook(self) -> Webhook:
        """The webhook as handed to a target's ``deliver``."""
        return Webhook(self.id, self.idempotency_key, self.payload)


def stored_entry(
    entry_id: int, target: str, text: str, key: str, moment: float, request_id: str
) -> OutboxEntry:
    """A webhook as a store just wrote it (``text``: its payload's JSON), not read back."""
    return OutboxEntry(
        id=entry_id,
        target=target,
        payload=json.loads(text),
        idempotency_key=key,
        created_at=moment,
        updated_at=moment,
        attempts=0,
        next_attempt_at=moment,
        state="pending",
        last_error="",
        lease_owner="",
        lease_expires_at=0.0,
        request_id=request_id,
    )


@dataclass(frozen=True)
class OutboxSummary:
    """What ``outbox list`` shows of a webhook (its payload is never read for that)."""

    id: int
    target: str
    created_at: float
    updated_at: float
    state: State
    attempts: int
    last_error: str


@dataclass(frozen=True)
class Refusal:
    """A webhook refused as too large: what is known of it, never its body."""

    id: int
    refused_at: float
    target: str
    #: None: not announced (a chunked body), only known to exceed limit_bytes.
    size_bytes: int | None
    limit_bytes: int
    #: HelpSpot's request id (xRequest) when it was found in the body, else "".
    request_id: str


@dataclass(frozen=True)
class Attempt:
    """One try at delivering a webhook, recorded with its outcome."""

    webhook_id: int
    #: 1, 2, ... for the webhook; a retry goes on counting (its attempts restart at 0).
    number: int
    started_at: float
    duration_ms: int
    delivered: bool
    #: The HTTP status the peer refused it with; None when it gave none, and when
    #: delivered (a target's deliver returns nothing: it took the webhook, that is all).
    status: int | None
    #: The start of the peer's answer, safe to show ("" when none).
    answer: str
    error: str


@dataclass(frozen=True)
class Purged:
    """What a purge deleted; ``complete`` is False when it stopped at its row budget."""

    webhooks: int
    refusals: int
    complete: bool


def parse_moment(text: str, what: str = "a time") -> float:
    """Epoch seconds of an ISO 8601 time; without an offset it is this machine's local time.

    Local, as ``outbox list`` and the console show times. OutboxError when unreadable.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OutboxError(
            f"{what} {text!r} is not an ISO 8601 time, e.g. 2024-05-01T14:30 or "
            "2024-05-01T12:30:00+00:00"
        ) from None
    return moment.timestamp()  # a naive datetime is read as local time


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed try: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(max(attempts - 1, 0), 32))
    # Half fixed, half random: retries of a burst spread out, the order stays.
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def next_try_at(
    attempts: int,
    max_attempts: int,
    final: bool,
    retry_after: float | None,
    moment: float,
    rng: random.Random,
) -> float | None:
    """When a webhook that just failed is tried again; None when it has failed for good.

    For good when ``final`` (the peer said a retry cannot succeed) or after
    ``max_attempts``; else after the backoff, and no sooner than the peer's
    ``retry_after``, itself never more than BACKOFF_CAP. Both stores decide so.
    """
    if final or attempts >= max_attempts:
        return None
    delay = backoff_delay(attempts, rng)
    return moment + max(delay, min(retry_after or 0.0, BACKOFF_CAP))
