"""The stored webhooks: store, claim under a lease, record the outcome, list, purge.

Each outcome is recorded with the try that led to it (an :class:`Attempt`), in
the same transaction, for ``outbox show`` and the console; these also read
counts by target and state, and by hour, through indexes of their own.

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
import math
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from lookup_server.webhooks import records
from lookup_server.webhooks.base import OutboxBase, Tried
from lookup_server.webhooks.database import Database, OutboxError
from lookup_server.webhooks.leases import dead_owners
from lookup_server.webhooks.policy import (
    Outcome,
    TargetPolicy,
    TargetState,
    after_attempt,
    after_claim,
    blocked_targets,
    claimable_at,
    log_change,
    sooner,
    until_claimable,
)
from lookup_server.webhooks.records import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    STATES,
    Attempt,
    OutboxEntry,
    OutboxSummary,
    Purged,
    Refusal,
    State,
)

#: The columns of OutboxSummary, Refusal and Attempt, in the order of their fields.
_SUMMARY = "id, target, created_at, updated_at, state, attempts, last_error"
_REFUSAL = "id, refused_at, target, size_bytes, limit_bytes, request_id"
_ATTEMPT = "webhook_id, number, started_at, duration_ms, delivered, status, answer, error"
#: The console's reads: each one query through an index that holds all it needs
#: (tests/webhooks/test_attempts.py checks the plans), never the payload rows.
_COUNTS = "SELECT target, state, COUNT(*) FROM webhooks GROUP BY target, state"
_BY_HOUR = (
    "SELECT CAST(created_at / 3600 AS INTEGER) * 3600 AS hour, state, COUNT(*)"
    " FROM webhooks"
    # every state named: the index, by (state, created_at), is then read a range per state
    " WHERE state IN ('pending', 'delivering', 'delivered', 'failed') AND created_at >= ?"
    " GROUP BY hour, state ORDER BY hour, state"
)
#: ordered: an earlier webhook of the same target and request still to deliver holds
#: ``w`` back (through webhooks_by_request); a failed one does not, nor a webhook
#: without a request id.
_EARLIER_WAITING = (
    "w.request_id != '' AND EXISTS (SELECT 1 FROM webhooks AS e"
    " WHERE e.target = w.target AND e.request_id = w.request_id AND e.id < w.id"
    " AND e.state IN ('pending', 'delivering'))"
)


def claimable_query(held: int, ordered: int) -> str:
    """The claim's pick: the next due webhook, skipping ``held`` targets, ordering ``ordered``.

    Its parameters: now (twice), then the held targets, then the ordered ones.
    """
    return (
        "SELECT id, target FROM webhooks AS w"
        " WHERE ((state = 'pending' AND next_attempt_at <= ?)"
        " OR (state = 'delivering' AND lease_expires_at <= ?))"
        f" AND target NOT IN ({', '.join('?' * held)})"
        f" AND NOT (target IN ({', '.join('?' * ordered)}) AND {_EARLIER_WAITING})"
        " ORDER BY next_attempt_at, id LIMIT 1"
    )


#: Received from the first time on, before the second (an open bound: -inf or inf).
_RETRY_FAILED = (
    "UPDATE webhooks SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?"
    " WHERE target = ? AND state = 'failed' AND created_at >= ? AND created_at < ?"
)
_OLDEST_WAITING = (
    "SELECT MIN(oldest) FROM ("
    "SELECT MIN(created_at) AS oldest FROM webhooks WHERE state = 'pending'"
    " UNION ALL SELECT MIN(created_at) FROM webhooks WHERE state = 'delivering')"
)
#: What the purge deletes, found through the indexes made for it (INDEXED BY: the
#: planner, without statistics, would rather read every finished webhook).
_OLD_WEBHOOKS = (
    "SELECT id FROM webhooks INDEXED BY webhooks_finished"
    " WHERE state IN ('delivered', 'failed') AND updated_at < ? LIMIT ?"
)
_OLD_REFUSALS = "SELECT id FROM refusals INDEXED BY refusals_by_time WHERE refused_at < ? LIMIT ?"
#: What goes with each id found, in the purge's transaction: a webhook's attempts go with it.
_WEBHOOK_ROWS = (
    "DELETE FROM attempts WHERE webhook_id IN ({ids})",
    "DELETE FROM webhooks WHERE id IN ({ids})",
)
_REFUSAL_ROWS = ("DELETE FROM refusals WHERE id IN ({ids})",)
#: A Tried as the webhook's next attempt: its id, Tried.values, its id again.
_RECORD_ATTEMPT = (
    "INSERT INTO attempts (webhook_id, number, started_at, duration_ms, delivered,"
    " status, answer, error) SELECT ?, COALESCE(MAX(number), 0) + 1, ?, ?, ?, ?, ?, ?"
    " FROM attempts WHERE webhook_id = ?"
)


class Outbox(OutboxBase):
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
        policies: Mapping[str, TargetPolicy] | None = None,
    ) -> None:
        super().__init__(
            max_attempts=max_attempts, lease_seconds=lease_seconds, rng=rng, policies=policies
        )
        self.path = Path(path)
        self._db = Database(self.path, create_folder=create_folder)
        if not lazy:
            self._db.prepare()

    # -- the HTTP side -------------------------------------------------------------

    def store(
        self,
        target: str,
        payload: Mapping[str, Any],
        now: float | None = None,
        *,
        request_id: str = "",
    ) -> OutboxEntry:
        """Store a webhook for delivery; it is committed and on disk when this returns.

        ``request_id`` is HelpSpot's request (xRequest), which orders the
        webhooks of an ``ordered`` target; "" when unknown (never held back).
        """
        moment = time.time() if now is None else now
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        key = str(uuid.uuid4())
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO webhooks (target, payload, idempotency_key, created_at,"
                " updated_at, next_attempt_at, state, request_id)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (target, text, key, moment, moment, moment, request_id),
            )
        assert cursor.lastrowid is not None
        self._notify()
        return records.stored_entry(cursor.lastrowid, target, text, key, moment, request_id)

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

    @property
    def description(self) -> str:
        """The outbox for messages and logs: its file."""
        return str(self.path)

    def wait_for_work(self, wake: threading.Event, timeout: float) -> None:
        """Wait for ``wake`` (set by a store in this process) or ``timeout``.

        Webhooks stored by other processes are found at the next poll; the wait
        ends sooner when a target held back by its rate becomes claimable.
        """
        wake.wait(until_claimable(timeout, self._claimable_at, time.time()))

    # -- the worker side -----------------------------------------------------------

    def claim(self, owner: str, now: float | None = None) -> OutboxEntry | None:
        """Lease the next due webhook to ``owner`` (or take over an expired or dead lease)."""
        moment = time.time() if now is None else now
        self._claimable_at = None
        with self._db.transaction(durable=False) as conn:
            _expire_dead_leases(conn, moment)
            # An expired lease at the last attempt: the worker died delivering it.
            conn.execute(
                "UPDATE webhooks SET state = 'failed', updated_at = ?, lease_owner = '',"
                " last_error = 'the server stopped while delivering it (last attempt)'"
                " WHERE state = 'delivering' AND lease_expires_at <= ? AND attempts >= ?",
                (moment, moment, self.max_attempts),
            )
            held = self._held_back(conn, moment)
            ordered = sorted(name for name, p in self.policies.items() if p.ordered)
            row = conn.execute(
                claimable_query(len(held), len(ordered)), (moment, moment, *held, *ordered)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE webhooks SET state = 'delivering', attempts = attempts + 1,"
                " lease_owner = ?, lease_expires_at = ?, updated_at = ? WHERE id = ?",
                (owner, moment + self.lease_seconds, moment, row["id"]),
            )
            policy = self.policies.get(row["target"])
            if policy is not None and policy.shared:
                state = after_claim(_target_state(conn, row["target"]), policy, moment)
                _write_state(conn, state)
                self._claimable_at = sooner(self._claimable_at, state.next_claim_at, moment)
            return _entry(
                conn.execute("SELECT * FROM webhooks WHERE id = ?", (row["id"],)).fetchone()
            )

    def _held_back(self, conn: sqlite3.Connection, moment: float) -> list[str]:
        """The targets whose webhooks may not be claimed now (in the claim's transaction)."""
        shared = {name: p for name, p in self.policies.items() if p.shared}
        if not shared:
            return []
        states = {row["target"]: _state(row) for row in conn.execute("SELECT * FROM target_states")}
        in_flight = dict(
            conn.execute(
                "SELECT target, COUNT(*) FROM webhooks WHERE state = 'delivering'"
                " AND lease_expires_at > ? GROUP BY target",
                (moment,),
            ).fetchall()
        )
        self._claimable_at = claimable_at(shared, states, moment)
        return sorted(blocked_targets(shared, states, in_flight, moment))

    def target_states(self) -> list[TargetState]:
        """Every target's shared delivery state that was ever written, by name."""
        with self._db.reading() as conn:
            rows = conn.execute("SELECT * FROM target_states ORDER BY target").fetchall()
        return [_state(row) for row in rows]

    def renew(self, entry_id: int, owner: str, now: float | None = None) -> bool:
        """Extend ``owner``'s lease by lease_seconds from now; False when it was lost."""
        moment = time.time() if now is None else now
        with self._db.transaction(durable=False) as conn:
            cursor = conn.execute(
                "UPDATE webhooks SET lease_expires_at = ? WHERE id = ? AND state = 'delivering'"
                " AND lease_owner = ?",
                (moment + self.lease_seconds, entry_id, owner),
            )
            return cursor.rowcount == 1

    def _finish(
        self,
        entry_id: int,
        owner: str | None,
        changes: Mapping[str, object],
        tried: Tried,
        outcome: Outcome,
        moment: float,
    ) -> bool:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        where = "id = ? AND state = 'delivering'"
        params: list[object] = [entry_id]
        if owner is not None:
            # Taken over after our lease expired: the new owner records the outcome.
            where += " AND lease_owner = ?"
            params.append(owner)
        change = None
        with self._db.transaction(durable=False) as conn:
            row = conn.execute(
                f"UPDATE webhooks SET {assignments}, lease_owner = '', lease_expires_at = 0"
                f" WHERE {where} RETURNING target",
                (*changes.values(), *params),
            ).fetchone()
            if row is None:
                return False
            conn.execute(_RECORD_ATTEMPT, (entry_id, *tried.values, entry_id))
            policy = self.policies.get(row["target"])
            if policy is not None and policy.shared:
                before = _target_state(conn, row["target"])
                after = after_attempt(before, policy, outcome, moment)
                if after != before:
                    _write_state(conn, after)
                change = (before, after, policy)
        if change is not None:
            log_change(*change)
        return True

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

    def _pages(
        self, table: str, columns: str, where: str, params: list[object], after_id: int
    ) -> Iterator[sqlite3.Row]:
        # Keyset pagination: each page is a fresh short read, so neither memory nor
        # a reader's snapshot grows with the outbox.
        while True:
            with self._db.reading() as conn:
                rows = conn.execute(
                    f"SELECT {columns} FROM {table} WHERE {where} AND id > ? ORDER BY id LIMIT ?",
                    (*params, after_id, records.PAGE_ROWS),
                ).fetchall()
            yield from rows
            if len(rows) < records.PAGE_ROWS:
                return
            after_id = rows[-1]["id"]

    def attempts(self, webhook_id: int) -> list[Attempt]:
        """The recorded tries at delivering this webhook, first first ([] for none)."""
        with self._db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_ATTEMPT} FROM attempts WHERE webhook_id = ? ORDER BY number",
                (webhook_id,),
            ).fetchall()
        return [_attempt(row) for row in rows]

    def counts(self) -> dict[tuple[str, State], int]:
        """How many webhooks each target has in each state (only those with any)."""
        with self._db.reading() as conn:
            return {(row[0], row[1]): row[2] for row in conn.execute(_COUNTS)}

    def created_by_hour(self, since: float) -> dict[tuple[int, State], int]:
        """Webhooks created from ``since`` on, counted by hour and state, oldest hour first.

        An hour is its start in epoch seconds (whole UTC hours); only non-zero
        counts are there, and the first hour counts only from ``since``.
        """
        with self._db.reading() as conn:
            return {(row[0], row[1]): row[2] for row in conn.execute(_BY_HOUR, (since,))}

    def oldest_pending(self) -> float | None:
        """When the oldest webhook still to deliver (pending or being delivered) was stored.

        None when there is none. A webhook being delivered still waits: its
        delivery may fail, and a crashed worker leaves it so until taken over.
        """
        with self._db.reading() as conn:
            oldest = conn.execute(_OLDEST_WAITING).fetchone()[0]
        return None if oldest is None else float(oldest)

    def retry_failed(
        self,
        target: str,
        now: float | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Make every failed webhook of ``target`` due now, as retry does; how many.

        Only those received from ``since`` on and before ``until``, when given
        (epoch seconds). One transaction, through an index by target, state and
        time: either all of them are pending again or none. Their recorded
        attempts are kept.
        """
        moment = time.time() if now is None else now
        start = -math.inf if since is None else since
        end = math.inf if until is None else until
        if start >= end:
            raise OutboxError("the time range is empty: --since must come before --until")
        with self._db.transaction() as conn:
            count = conn.execute(_RETRY_FAILED, (moment, moment, target, start, end)).rowcount
        if count:
            self._notify()
        return int(count)

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
        """Delete finished webhooks (with their attempts) and refusals older than that.

        Delivered and failed webhooks age from when they finished, refusals from
        when they were made. A small transaction at a time, at most ``max_rows``
        webhooks and refusals in all.
        """
        if older_than_days < 0:
            raise OutboxError("--older-than must be zero or more days")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        webhooks = self._purge_rows(_OLD_WEBHOOKS, _WEBHOOK_ROWS, cutoff, max_rows)
        left = None if max_rows is None else max_rows - webhooks
        refusals = 0 if left == 0 else self._purge_rows(_OLD_REFUSALS, _REFUSAL_ROWS, cutoff, left)
        complete = max_rows is None or webhooks + refusals < max_rows
        return Purged(webhooks, refusals, complete)

    def _purge_rows(
        self, select: str, deletes: tuple[str, ...], cutoff: float, max_rows: int | None
    ) -> int:
        """Delete what ``select`` finds a batch at a time, with each of ``deletes``."""
        removed = 0
        while max_rows is None or removed < max_rows:
            size = records.PURGE_BATCH_ROWS
            batch = size if max_rows is None else min(size, max_rows - removed)
            with self._db.transaction() as conn:
                ids = [row[0] for row in conn.execute(select, (cutoff, batch))]
                if ids:
                    marks = ", ".join("?" * len(ids))
                    for delete in deletes:
                        conn.execute(delete.format(ids=marks), ids)
            removed += len(ids)
            if len(ids) < batch:
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


def _target_state(conn: sqlite3.Connection, target: str) -> TargetState:
    row = conn.execute("SELECT * FROM target_states WHERE target = ?", (target,)).fetchone()
    return TargetState(target) if row is None else _state(row)


def _write_state(conn: sqlite3.Connection, state: TargetState) -> None:
    conn.execute(
        "INSERT INTO target_states (target, consecutive_failures, paused_since, next_probe_at,"
        " next_claim_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (target) DO UPDATE SET"
        " consecutive_failures = excluded.consecutive_failures,"
        " paused_since = excluded.paused_since, next_probe_at = excluded.next_probe_at,"
        " next_claim_at = excluded.next_claim_at",
        (
            state.target,
            state.consecutive_failures,
            state.paused_since,
            state.next_probe_at,
            state.next_claim_at,
        ),
    )


def _state(row: sqlite3.Row) -> TargetState:
    return TargetState(
        target=row["target"],
        consecutive_failures=row["consecutive_failures"],
        paused_since=row["paused_since"],
        next_probe_at=row["next_probe_at"],
        next_claim_at=row["next_claim_at"],
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        webhook_id=row["webhook_id"],
        number=row["number"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        delivered=bool(row["delivered"]),
        status=row["status"],
        answer=row["answer"],
        error=row["error"],
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
        request_id=row["request_id"],
    )
