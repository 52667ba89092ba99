"""The stored webhooks: store, claim under a lease, record the outcome, list, purge.

Several gunicorn workers share one SQLite file. A worker *claims* a webhook
with a lease (``BEGIN IMMEDIATE`` serialises claims across processes), so no
two deliver the same one at once. The lease is short and renewed while the
delivery runs (:class:`~lookup_server.webhooks.delivery.LeaseRenewal`): a
process that dies mid-delivery lets go of its webhook within one lease, or at
once when another process on the same host sees that its PID is gone.

Times are seconds since the epoch (wall clock), because they are compared
across processes and restarts.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lookup_server.core.models import Webhook
from lookup_server.webhooks.database import Database, OutboxError
from lookup_server.webhooks.leases import dead_owners

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

#: The columns of OutboxSummary and Refusal, in the order of their fields.
_SUMMARY = "id, target, created_at, updated_at, state, attempts, last_error"
_REFUSAL = "id, refused_at, target, size_bytes, limit_bytes, request_id"
#: What the purge deletes, found through the indexes made for it (INDEXED BY: the
#: planner, without statistics, would rather read every finished webhook).
_OLD_WEBHOOKS = (
    "SELECT id FROM webhooks INDEXED BY webhooks_finished"
    " WHERE state IN ('delivered', 'failed') AND updated_at < ? LIMIT ?"
)
_OLD_REFUSALS = "SELECT id FROM refusals INDEXED BY refusals_by_time WHERE refused_at < ? LIMIT ?"


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

    @property
    def webhook(self) -> Webhook:
        """The webhook as handed to a target's ``deliver``."""
        return Webhook(self.id, self.idempotency_key, self.payload)


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
class OutboxCounts:
    """How many webhooks each target has in each state, and the oldest one still to deliver."""

    #: (state, target) -> webhooks; a pair with none is left out.
    by_state_and_target: Mapping[tuple[State, str], int]
    #: created_at of the oldest webhook pending or being delivered; None when there is none.
    oldest_undelivered_at: float | None


@dataclass(frozen=True)
class Purged:
    """What a purge deleted; ``complete`` is False when it stopped at its row budget."""

    webhooks: int
    refusals: int
    complete: bool


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed try: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(max(attempts - 1, 0), 32))
    # Half fixed, half random: retries of a burst spread out, the order stays.
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Outbox:
    """The webhooks stored in one SQLite file (WAL mode), shared by every process.

    ``lazy`` leaves the file alone until first use (the server: a bad outbox
    must not stop it from starting); ``create_folder`` creates missing folders.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_attempts: int = MAX_ATTEMPTS,
        lease_seconds: float = LEASE_SECONDS,
        rng: random.Random | None = None,
        lazy: bool = False,
        create_folder: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self._db = Database(self.path, create_folder=create_folder)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._listeners: list[threading.Event] = []
        if not lazy:
            self._db.prepare()

    # -- the HTTP side -------------------------------------------------------------

    def store(
        self,
        target: str,
        payload: Mapping[str, Any],
        now: float | None = None,
    ) -> OutboxEntry:
        """Store a webhook for delivery; it is committed and on disk when this returns."""
        moment = time.time() if now is None else now
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO webhooks (target, payload, idempotency_key, created_at,"
                " updated_at, next_attempt_at, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (target, text, str(uuid.uuid4()), moment, moment, moment),
            )
            entry = _entry(
                conn.execute("SELECT * FROM webhooks WHERE id = ?", (cursor.lastrowid,)).fetchone()
            )
        self._notify()
        return entry

    def record_refusal(
        self,
        target: str,
        size_bytes: int | None,
        limit_bytes: int,
        request_id: str = "",
        now: float | None = None,
    ) -> Refusal:
        """Keep what is known of a webhook refused as too large (never its body)."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO refusals (refused_at, target, size_bytes, limit_bytes, request_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (moment, target, size_bytes, limit_bytes, request_id),
            )
            assert cursor.lastrowid is not None
        return Refusal(cursor.lastrowid, moment, target, size_bytes, limit_bytes, request_id)

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

    # -- the worker side -----------------------------------------------------------

    def claim(self, owner: str, now: float | None = None) -> OutboxEntry | None:
        """Lease the next due webhook to ``owner`` (or take over an expired or dead lease)."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            _expire_dead_leases(conn, moment)
            # An expired lease at the last attempt: the worker died delivering it.
            conn.execute(
                "UPDATE webhooks SET state = 'failed', updated_at = ?, lease_owner = '',"
                " last_error = 'the server stopped while delivering it (last attempt)'"
                " WHERE state = 'delivering' AND lease_expires_at <= ? AND attempts >= ?",
                (moment, moment, self.max_attempts),
            )
            row = conn.execute(
                "SELECT id FROM webhooks WHERE (state = 'pending' AND next_attempt_at <= ?)"
                " OR (state = 'delivering' AND lease_expires_at <= ?)"
                " ORDER BY next_attempt_at, id LIMIT 1",
                (moment, moment),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE webhooks SET state = 'delivering', attempts = attempts + 1,"
                " lease_owner = ?, lease_expires_at = ?, updated_at = ? WHERE id = ?",
                (owner, moment + self.lease_seconds, moment, row["id"]),
            )
            return _entry(
                conn.execute("SELECT * FROM webhooks WHERE id = ?", (row["id"],)).fetchone()
            )

    def renew(self, entry_id: int, owner: str, now: float | None = None) -> bool:
        """Extend ``owner``'s lease by lease_seconds from now; False when it was lost."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE webhooks SET lease_expires_at = ? WHERE id = ? AND state = 'delivering'"
                " AND lease_owner = ?",
                (moment + self.lease_seconds, entry_id, owner),
            )
            return cursor.rowcount == 1

    def mark_delivered(
        self, entry_id: int, *, owner: str | None = None, now: float | None = None
    ) -> bool:
        """Record a delivery; False when ``owner`` no longer holds the lease."""
        moment = time.time() if now is None else now
        return self._finish(
            entry_id, owner, "state = 'delivered', last_error = '', updated_at = ?", (moment,)
        )

    def mark_failed(
        self, entry_id: int, error: str, *, owner: str | None = None, now: float | None = None
    ) -> bool:
        """Record a failed try: retry later with backoff, or give up after max_attempts."""
        moment = time.time() if now is None else now
        entry = self.get(entry_id)
        if entry is None:
            return False
        message = error[:MAX_ERROR_CHARS]
        if entry.attempts >= self.max_attempts:
            return self._finish(
                entry_id,
                owner,
                "state = 'failed', last_error = ?, updated_at = ?",
                (message, moment),
            )
        retry_at = moment + backoff_delay(entry.attempts, self._rng)
        return self._finish(
            entry_id,
            owner,
            "state = 'pending', last_error = ?, next_attempt_at = ?, updated_at = ?",
            (message, retry_at, moment),
        )

    def _finish(
        self, entry_id: int, owner: str | None, assignments: str, values: tuple[Any, ...]
    ) -> bool:
        where = "id = ? AND state = 'delivering'"
        params: list[object] = [entry_id]
        if owner is not None:
            # Taken over after our lease expired: the new owner records the outcome.
            where += " AND lease_owner = ?"
            params.append(owner)
        with self._db.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE webhooks SET {assignments}, lease_owner = '', lease_expires_at = 0"
                f" WHERE {where}",
                (*values, *params),
            )
            return cursor.rowcount == 1

    # -- the admin side (lookup-server outbox ...) ---------------------------------

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The webhook with this id, or None."""
        with self._db.reading() as conn:
            row = conn.execute("SELECT * FROM webhooks WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else _entry(row)

    def summaries(
        self,
        states: Collection[State] | None = None,
        *,
        after_id: int = 0,
    ) -> Iterator[OutboxSummary]:
        """Webhooks with an id above ``after_id``, oldest first, read a page at a time."""
        where, params = _in_states(states)
        for row in self._pages("webhooks", _SUMMARY, where, params, after_id):
            yield OutboxSummary(*row)

    def refusals(self, *, after_id: int = 0) -> Iterator[Refusal]:
        """Refused webhooks with an id above ``after_id``, oldest first, a page at a time."""
        for row in self._pages("refusals", _REFUSAL, "1", [], after_id):
            yield Refusal(*row)

    def newest(
        self,
        limit: int,
        states: Collection[State] | None = None,
        *,
        table: Literal["webhooks", "refusals"] = "webhooks",
    ) -> tuple[int, int]:
        """Where the newest ``limit`` rows begin, as ``(after_id, older)``.

        Listing from ``after_id`` shows those rows; ``older`` rows come before them.
        """
        where, params = _in_states(states) if table == "webhooks" else ("1", [])
        with self._db.reading() as conn:
            row = conn.execute(
                f"SELECT id FROM {table} WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?",
                (*params, limit),
            ).fetchone()
            if row is None:
                return 0, 0
            older = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {where} AND id <= ?", (*params, row["id"])
            ).fetchone()[0]
        return int(row["id"]), int(older)

    def counts(self) -> OutboxCounts:
        """Webhooks by state and target, and when the oldest undelivered one arrived."""
        with self._db.reading() as conn:
            # One read transaction: both answers describe the same moment.
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT state, target, COUNT(*) FROM webhooks GROUP BY state, target"
            ).fetchall()
            oldest = conn.execute(
                "SELECT MIN(created_at) FROM webhooks WHERE state IN ('pending', 'delivering')"
            ).fetchone()[0]
            conn.execute("COMMIT")
        return OutboxCounts({(row[0], row[1]): int(row[2]) for row in rows}, oldest)

    def _pages(
        self, table: str, columns: str, where: str, params: list[object], after_id: int
    ) -> Iterator[sqlite3.Row]:
        # Keyset pagination: each page is a fresh short read, so neither memory nor
        # a reader's snapshot grows with the outbox.
        while True:
            with self._db.reading() as conn:
                rows = conn.execute(
                    f"SELECT {columns} FROM {table} WHERE {where} AND id > ? ORDER BY id LIMIT ?",
                    (*params, after_id, PAGE_ROWS),
                ).fetchall()
            yield from rows
            if len(rows) < PAGE_ROWS:
                return
            after_id = rows[-1]["id"]

    def retry(self, entry_id: int, now: float | None = None) -> OutboxEntry:
        """Make a failed (or waiting) webhook due now with a fresh set of attempts."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            row = conn.execute("SELECT state FROM webhooks WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise OutboxError(f"no webhook with id {entry_id} in the outbox")
            if row["state"] in ("delivered", "delivering"):
                raise OutboxError(f"webhook {entry_id} is {row['state']}; nothing to retry")
            conn.execute(
                "UPDATE webhooks SET state = 'pending', attempts = 0,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (moment, moment, entry_id),
            )
        self._notify()
        entry = self.get(entry_id)
        assert entry is not None
        return entry

    def purge(
        self, older_than_days: float, now: float | None = None, *, max_rows: int | None = None
    ) -> Purged:
        """Delete finished webhooks and refusals more than ``older_than_days`` old.

        Delivered and failed webhooks age from when they finished, refusals from
        when they were made. A small transaction at a time, at most ``max_rows``
        in all.
        """
        if older_than_days < 0:
            raise OutboxError("--older-than must be zero or more days")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        webhooks = self._purge_rows("webhooks", _OLD_WEBHOOKS, cutoff, max_rows)
        left = None if max_rows is None else max_rows - webhooks
        refusals = 0 if left == 0 else self._purge_rows("refusals", _OLD_REFUSALS, cutoff, left)
        complete = max_rows is None or webhooks + refusals < max_rows
        return Purged(webhooks, refusals, complete)

    def _purge_rows(self, table: str, select: str, cutoff: float, max_rows: int | None) -> int:
        removed = 0
        while max_rows is None or removed < max_rows:
            batch = (
                PURGE_BATCH_ROWS if max_rows is None else min(PURGE_BATCH_ROWS, max_rows - removed)
            )
            with self._db.transaction() as conn:
                count = conn.execute(
                    f"DELETE FROM {table} WHERE id IN ({select})", (cutoff, batch)
                ).rowcount
            removed += count
            if count < batch:
                break
        return removed


def _in_states(states: Collection[State] | None) -> tuple[str, list[object]]:
    wanted = list(STATES if states is None else states)
    if not wanted:
        return "0", []
    return f"state IN ({', '.join('?' * len(wanted))})", list(wanted)


def _expire_dead_leases(conn: sqlite3.Connection, moment: float) -> None:
    """Leases held by a process of this host that is gone: expired now, taken over below."""
    owners = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT lease_owner FROM webhooks"
            " WHERE state = 'delivering' AND lease_expires_at > ?",
            (moment,),
        )
    ]
    for owner in dead_owners(owners):
        conn.execute(
            "UPDATE webhooks SET lease_expires_at = ? WHERE state = 'delivering'"
            " AND lease_owner = ?",
            (moment, owner),
        )


def _entry(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        target=row["target"],
        payload=json.loads(row["payload"]),
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        state=row["state"],
        last_error=row["last_error"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )
