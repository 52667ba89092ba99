"""What the rest of the server uses of an outbox, whichever database holds it.

:class:`~lookup_server.webhooks.store.Outbox` keeps the webhooks in one SQLite
file (one host, any number of processes);
:class:`~lookup_server.webhooks.postgres.PostgresOutbox` in a PostgreSQL
database (any number of hosts). Both pass the same behavioural suite
(tests/webhooks/test_store.py); :func:`open_outbox` picks one from
``[server] outbox``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from lookup_server.config.schema import POSTGRES_SCHEMES
from lookup_server.webhooks.database import OutboxError
from lookup_server.webhooks.policy import TargetPolicy, TargetState
from lookup_server.webhooks.records import (
    Attempt,
    OutboxEntry,
    OutboxSummary,
    Purged,
    Refusal,
    State,
)
from lookup_server.webhooks.store import Outbox

_NO_PSYCOPG = (
    "[server] outbox names a PostgreSQL database, but psycopg is not installed ({exc}); "
    "pip install 'lookup-server[postgres]'"
)


class WebhookOutbox(Protocol):
    """The stored webhooks: store, claim under a lease, record outcomes, list, purge."""

    #: How long a claim lasts unless renewed; the worker renews it while delivering.
    lease_seconds: float
    max_attempts: int
    #: Each target's delivery settings (breaker, limits, order), by target name.
    policies: dict[str, TargetPolicy]

    @property
    def description(self) -> str:
        """The outbox for messages and logs (never a password)."""
        ...

    def store(
        self,
        target: str,
        payload: Mapping[str, Any],
        now: float | None = None,
        *,
        request_id: str = "",
    ) -> OutboxEntry:
        """Store a webhook (of HelpSpot's request ``request_id``, if known); durable on return."""
        ...

    def record_refusal(
        self,
        target: str,
        size_bytes: int | None,
        limit_bytes: int,
        request_id: str = "",
        now: float | None = None,
    ) -> Refusal:
        """Keep what is known of a webhook refused as too large."""
        ...

    def subscribe(self, event: threading.Event) -> None:
        """Have ``event`` set whenever this instance stores a webhook."""
        ...

    def unsubscribe(self, event: threading.Event) -> None:
        """Stop setting ``event``."""
        ...

    def wait_for_work(self, wake: threading.Event, timeout: float) -> None:
        """Return once ``wake`` is set, a webhook may be due, or ``timeout`` passed."""
        ...

    def claim(self, owner: str, now: float | None = None) -> OutboxEntry | None:
        """Lease the next due webhook to ``owner`` (or take over an expired lease)."""
        ...

    def renew(self, entry_id: int, owner: str, now: float | None = None) -> bool:
        """Extend ``owner``'s lease; False when it was lost."""
        ...

    def mark_delivered(
        self,
        entry_id: int,
        *,
        owner: str | None = None,
        now: float | None = None,
        started_at: float | None = None,
        duration_ms: int = 0,
    ) -> bool:
        """Record a delivery and its attempt; False when ``owner`` lost the lease."""
        ...

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
        """Record a failed try and its attempt: retry later with backoff, or give up."""
        ...

    def target_states(self) -> list[TargetState]:
        """Every target's shared delivery state (breaker, next claim) ever written, by name."""
        ...

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The webhook with this id, or None."""
        ...

    def summaries(
        self, states: Collection[State] | None = None, *, after_id: int = 0
    ) -> Iterator[OutboxSummary]:
        """Webhooks with an id above ``after_id``, oldest first, a page at a time."""
        ...

    def refusals(self, *, after_id: int = 0) -> Iterator[Refusal]:
        """Refused webhooks with an id above ``after_id``, oldest first."""
        ...

    def newest(
        self,
        limit: int,
        states: Collection[State] | None = None,
        *,
        table: Literal["webhooks", "refusals"] = "webhooks",
    ) -> tuple[int, int]:
        """Where the newest ``limit`` rows begin, as ``(after_id, older)``."""
        ...

    def attempts(self, webhook_id: int) -> list[Attempt]:
        """The recorded tries at delivering this webhook, first first."""
        ...

    def counts(self) -> dict[tuple[str, State], int]:
        """How many webhooks each target has in each state (only those with any)."""
        ...

    def created_by_hour(self, since: float) -> dict[tuple[int, State], int]:
        """Webhooks created from ``since`` on, counted by hour and state."""
        ...

    def oldest_pending(self) -> float | None:
        """When the oldest webhook still to deliver was stored; None when none is."""
        ...

    def retry(self, entry_id: int, now: float | None = None) -> OutboxEntry:
        """Make a failed (or waiting) webhook due now with a fresh set of attempts."""
        ...

    def retry_failed(
        self,
        target: str,
        now: float | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Make every failed webhook of ``target`` received in [since, until) due now; how many."""
        ...

    def purge(
        self, older_than_days: float, now: float | None = None, *, max_rows: int | None = None
    ) -> Purged:
        """Delete finished webhooks (with their attempts) and refusals older than that."""
        ...


def is_postgres(location: str | Path) -> bool:
    """Whether ``[server] outbox`` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_outbox(
    location: str | Path, *, lazy: bool = False, create_folder: bool = False, **options: Any
) -> WebhookOutbox:
    """The outbox at ``location``: a postgresql:// URL, else an SQLite file's path."""
    if is_postgres(location):
        try:  # psycopg only when used
            from lookup_server.webhooks.postgres import PostgresOutbox
        except ImportError as exc:
            raise OutboxError(_NO_PSYCOPG.format(exc=exc)) from None
        return PostgresOutbox(str(location), lazy=lazy, **options)
    return Outbox(location, lazy=lazy, create_folder=create_folder, **options)


def probe(location: str | Path) -> tuple[bool, str]:
    """Whether the server can use the outbox at ``location``, and why not (for ``check``)."""
    if is_postgres(location):
        try:
            from lookup_server.webhooks.pgdatabase import probe as probe_database
        except ImportError as exc:
            return False, _NO_PSYCOPG.format(exc=exc)

        return probe_database(str(location))
    from lookup_server.webhooks.database import probe as probe_file

    return probe_file(Path(location))
