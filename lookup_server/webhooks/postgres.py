"""The stored webhooks in PostgreSQL: one outbox for servers on several hosts.

The same behaviour as the SQLite :class:`~lookup_server.webhooks.store.Outbox`
(the shared suite in tests/webhooks/test_store.py runs against both), with
what a database server adds:

- A claim is one short transaction: ``SELECT ... FOR UPDATE SKIP LOCKED``
  picks the next due webhook that no other server is claiming at that moment,
  so claims never queue behind each other.
- A store is one statement, committed at once; a ``NOTIFY`` follows from a
  thread of its own (:meth:`PgDatabase.announce`). Every server's delivery
  worker runs ``LISTEN`` on a connection of its own
  (:meth:`PostgresOutbox.wait_for_work`) and wakes at once, falling back to
  polling while that connection is down.

Times follow the SQLite store's rule: epoch seconds of the wall clock of the
process that writes them, compared in SQL. Servers on several hosts must keep
their clocks in sync (NTP) to well within a lease (20 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from lookup_server.webhooks import records
from lookup_server.webhooks.base import OutboxBase, Tried
from lookup_server.webhooks.database import OutboxError
from lookup_server.webhooks.leases import dead_owners
from lookup_server.webhooks.pgdatabase import CHANNEL, PgDatabase, safe_url
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

log = logging.getLogger(__name__)

#: How often a worker waiting for a NOTIFY looks whether it was asked to stop.
WAKE_CHECK_SECONDS = 0.25
#: How often a claim first frees dead servers' leases: they are taken over within this.
TIDY_SECONDS = 1.0

_SUMMARY = "id, target, created_at, updated_at, state, attempts, last_error"
_REFUSAL = "id, refused_at, target, size_bytes, limit_bytes, request_id"
_ATTEMPT = "webhook_id, number, started_at, duration_ms, delivered, status, answer, error"
_TABLES = {"webhooks": "outbox_webhooks", "refusals": "outbox_refusals"}
#: An attempt's columns: the webhook id and number, then Tried.values in their order.
_ATTEMPT_INSERT = (
    "INSERT INTO outbox_attempts (webhook_id, number, started_at, duration_ms,"
    " delivered, status, answer, error)"
)
_CLAIM = (
    "WITH due AS (SELECT id FROM outbox_webhooks AS c"
    " WHERE ((state = 'pending' AND next_attempt_at <= %(now)s)"
    # an expired lease at the last attempt is failed by _tidy_leases, not tried again
    " OR (state = 'delivering' AND lease_expires_at <= %(now)s AND attempts < %(max)s))"
    " AND NOT (target = ANY(%(held)s))"
    # ordered: an earlier webhook of the same target and request still to deliver
    # holds it back (through outbox_webhooks_by_request); a failed one does not.
    " AND NOT (target = ANY(%(ordered)s) AND c.request_id <> '' AND EXISTS ("
    "SELECT 1 FROM outbox_webhooks AS e WHERE e.target = c.target"
    " AND e.request_id = c.request_id AND e.id < c.id"
    " AND e.state IN ('pending', 'delivering')))"
    " ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " UPDATE outbox_webhooks AS w SET state = 'delivering', attempts = w.attempts + 1,"
    " lease_owner = %(owner)s, lease_expires_at = %(until)s, updated_at = %(now)s"
    " FROM due WHERE w.id = due.id RETURNING w.*"
)
_BY_HOUR = (
    "SELECT (floor(created_at / 3600) * 3600)::bigint AS hour, state, COUNT(*)"
    " FROM outbox_webhooks WHERE created_at >= %s GROUP BY hour, state ORDER BY hour, state"
)
#: Serialises the claims when a target's limits depend on the others' claims
#: (SKIP LOCKED alone would let two servers each see room for one more).
_CLAIM_LOCK = 0x6C6F6F6B7571
_OLDEST_WAITING = (
    "SELECT MIN(created_at) FROM outbox_webhooks WHERE state IN ('pending', 'delivering')"
)


class PostgresOutbox(OutboxBase):
    """The webhooks stored in one PostgreSQL database, shared by every server.

    ``url`` is a postgresql:// connection URL (a secret: :attr:`description`
    is what may be shown). ``lazy`` leaves the database alone until first use.
    """

    def __init__(
        self,
        url: str,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        lease_seconds: float = LEASE_SECONDS,
        rng: random.Random | None = None,
        lazy: bool = False,
        policies: Mapping[str, TargetPolicy] | None = None,
    ) -> None:
        super().__init__(
            max_attempts=max_attempts, lease_seconds=lease_seconds, rng=rng, policies=policies
        )
        self._db = PgDatabase(url)
        self._listening: psycopg.Connection | None = None
        self._listening_pid = 0
        #: Whether this process's delivery worker waits for work (and a store wakes it).
        self._waiting = False
        #: When _tidy_leases last ran (the claims' clock).
        self._tidied_at = -math.inf
        if not lazy:
            self._db.prepare()

    @property
    def description(self) -> str:
        """The database for messages and logs, without its password."""
        return safe_url(self._db.url)

    def close(self) -> None:
        """Close this process's connections."""
        self._drop_listener()
        self._db.close()

    # -- the HTTP side -------------------------------------------------------------

    def store(
        self,
        target: str,
        payload: Mapping[str, Any],
        now: float | None = None,
        *,
        request_id: str = "",
    ) -> OutboxEntry:
        """Store a webhook for delivery (of request ``request_id``); committed on return."""
        moment = time.time() if now is None else now
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        key = str(uuid.uuid4())
        with self._db.reading() as conn:  # one statement, committed at once (autocommit)
            row = _one(
                conn,
                "INSERT INTO outbox_webhooks (target, payload, idempotency_key, created_at,"
                " updated_at, next_attempt_at, state, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s) RETURNING id",
                (target, text, key, moment, moment, moment, request_id),
            )
        self._notify()
        if not self._waiting:
            # this process's worker is busy: have the other servers' take it. A
            # NOTIFY wakes every one of them, so it is not sent when ours is free.
            self._db.announce()
        return records.stored_entry(row["id"], target, text, key, moment, request_id)

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
            row = _one(
                conn,
                "INSERT INTO outbox_refusals (refused_at, target, size_bytes, limit_bytes,"
                " request_id) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (moment, target, size_bytes, limit_bytes, request_id),
            )
        return Refusal(row["id"], moment, target, size_bytes, limit_bytes, request_id)

    def wait_for_work(self, wake: threading.Event, timeout: float) -> None:
        """Wait for ``wake``, a NOTIFY from any server's store, or ``timeout``.

        The LISTEN connection is opened in the calling thread (the delivery
        worker's) and kept; while it cannot be had, this just polls. The wait ends
        sooner when a target held back by its rate becomes claimable.
        """
        self._waiting = True
        try:
            self._wait(wake, until_claimable(timeout, self._claimable_at, time.time()))
        finally:
            self._waiting = False

    def _wait(self, wake: threading.Event, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        conn = self._listener()
        if conn is None:
            wake.wait(timeout)
            return
        try:
            while not wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                # A NOTIFY sent while we were delivering is queued: it returns at once.
                for _ in conn.notifies(timeout=min(left, WAKE_CHECK_SECONDS), stop_after=1):
                    return
        except psycopg.Error as exc:
            log.warning("webhook outbox %s: lost its LISTEN connection: %s", self.description, exc)
            self._drop_listener()
            wake.wait(max(0.0, deadline - time.monotonic()))

    def _listener(self) -> psycopg.Connection | None:
        conn = self._listening
        if conn is not None and self._listening_pid == os.getpid() and not conn.closed:
            return conn
        self._listening = None  # after a fork it is the parent's: leave it alone
        try:
            self._listening = self._db.listen()
        except OutboxError:
            return None  # the claims report the outage; polling goes on meanwhile
        self._listening_pid = os.getpid()
        return self._listening

    def _drop_listener(self) -> None:
        conn, self._listening = self._listening, None
        if conn is not None and self._listening_pid == os.getpid():
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- the worker side -----------------------------------------------------------

    def claim(self, owner: str, now: float | None = None) -> OutboxEntry | None:
        """Lease the next due webhook to ``owner`` (or take over an expired or dead lease)."""
        moment = time.time() if now is None else now
        self._claimable_at = None
        if moment - self._tidied_at >= TIDY_SECONDS:
            self._tidy_leases(moment)
        return self._claim(owner, moment)

    def _claim(self, owner: str, moment: float) -> OutboxEntry | None:
        params = {
            "now": moment,
            "max": self.max_attempts,
            "owner": owner,
            "until": moment + self.lease_seconds,
            "held": [],
            "ordered": sorted(n for n, p in self.policies.items() if p.ordered),
        }
        if not any(p.shared for p in self.policies.values()):
            # nothing to keep across servers: the claim is one statement
            with self._db.reading() as conn:
                row = _first(conn, _CLAIM, params)
            return None if row is None else _entry(row)
        with self._db.transaction() as conn:
            params["held"] = self._held_back(conn, moment)
            row = _first(conn, _CLAIM, params)
            if row is None:
                return None
            policy = self.policies.get(row["target"])
            if policy is not None and policy.shared:
                state = after_claim(_target_state(conn, row["target"]), policy, moment)
                _write_state(conn, state)
                self._claimable_at = sooner(self._claimable_at, state.next_claim_at, moment)
        return _entry(row)

    def _tidy_leases(self, moment: float) -> None:
        """Free dead servers' leases; fail expired ones at the last attempt.

        Run before a claim at most every TIDY_SECONDS rather than in every claim:
        two statements fewer per delivery, and a claim that finds nothing (every
        server's, after a NOTIFY) costs one statement.
        """
        self._tidied_at = moment
        with self._db.transaction() as conn:
            _expire_dead_leases(conn, moment)
            # SKIP LOCKED here too: never waits for another server's claim.
            conn.execute(
                "UPDATE outbox_webhooks SET state = 'failed', updated_at = %s, lease_owner = '',"
                " last_error = 'the server stopped while delivering it (last attempt)'"
                " WHERE id IN (SELECT id FROM outbox_webhooks WHERE state = 'delivering'"
                " AND lease_expires_at <= %s AND attempts >= %s FOR UPDATE SKIP LOCKED)",
                (moment, moment, self.max_attempts),
            )

    def _held_back(self, conn: psycopg.Connection, moment: float) -> list[str]:
        """The targets whose webhooks may not be claimed now (in the claim's transaction)."""
        shared = {name: p for name, p in self.policies.items() if p.shared}
        if not shared:
            return []
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
        states = {
            row["target"]: TargetState(**row)
            for row in _all(conn, "SELECT * FROM outbox_target_states")
        }
        in_flight = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT target, COUNT(*) FROM outbox_webhooks WHERE state = 'delivering'"
                " AND lease_expires_at > %s GROUP BY target",
                (moment,),
            )
        }
        self._claimable_at = claimable_at(shared, states, moment)
        return sorted(blocked_targets(shared, states, in_flight, moment))

    def target_states(self) -> list[TargetState]:
        """Every target's shared delivery state that was ever written, by name."""
        with self._db.reading() as conn:
            rows = _all(conn, "SELECT * FROM outbox_target_states ORDER BY target")
        return [TargetState(**row) for row in rows]

    def renew(self, entry_id: int, owner: str, now: float | None = None) -> bool:
        """Extend ``owner``'s lease by lease_seconds from now; False when it was lost."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE outbox_webhooks SET lease_expires_at = %s WHERE id = %s"
                " AND state = 'delivering' AND lease_owner = %s",
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
        assignments = ", ".join(f"{column} = %s" for column in changes)
        where = "id = %s AND state = 'delivering'"
        params: list[object] = [entry_id]
        if owner is not None:
            # Taken over after our lease expired: the new owner records the outcome.
            where += " AND lease_owner = %s"
            params.append(owner)
        # the outcome and its attempt in one statement, with the webhook's target
        finish = (
            f"WITH done AS (UPDATE outbox_webhooks SET {assignments}, lease_owner = '',"
            f" lease_expires_at = 0 WHERE {where} RETURNING id, target)"
            f" {_ATTEMPT_INSERT} SELECT done.id, COALESCE((SELECT MAX(number)"
            " FROM outbox_attempts WHERE webhook_id = done.id), 0) + 1,"
            " %s, %s, %s, %s, %s, %s FROM done"
            " RETURNING webhook_id, (SELECT target FROM done) AS target"
        )
        finish_params = (*changes.values(), *params, *tried.values)
        if not any(p.shared for p in self.policies.values()):
            # no shared state to change with it: no transaction around it
            with self._db.reading() as conn:
                return _first(conn, finish, finish_params) is not None
        change = None
        with self._db.transaction() as conn:
            row = _first(conn, finish, finish_params)
            if row is None:
                return False
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
            row = _first(conn, "SELECT * FROM outbox_webhooks WHERE id = %s", (entry_id,))
        return None if row is None else _entry(row)

    def summaries(
        self, states: Collection[State] | None = None, *, after_id: int = 0
    ) -> Iterator[OutboxSummary]:
        """Webhooks with an id above ``after_id``, oldest first, read a page at a time."""
        where, params = _in_states(states)
        for row in self._pages("outbox_webhooks", _SUMMARY, where, params, after_id):
            yield OutboxSummary(**row)

    def refusals(self, *, after_id: int = 0) -> Iterator[Refusal]:
        """Refused webhooks with an id above ``after_id``, oldest first, a page at a time."""
        for row in self._pages("outbox_refusals", _REFUSAL, "TRUE", [], after_id):
            yield Refusal(**row)

    def newest(
        self,
        limit: int,
        states: Collection[State] | None = None,
        *,
        table: Literal["webhooks", "refusals"] = "webhooks",
    ) -> tuple[int, int]:
        """Where the newest ``limit`` rows begin, as ``(after_id, older)``."""
        where, params = _in_states(states) if table == "webhooks" else ("TRUE", [])
        name = _TABLES[table]
        with self._db.reading() as conn:
            row = _first(
                conn,
                f"SELECT id FROM {name} WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET %s",
                (*params, limit),
            )
            if row is None:
                return 0, 0
            older = _one(
                conn,
                f"SELECT COUNT(*) AS n FROM {name} WHERE {where} AND id <= %s",
                (*params, row["id"]),
            )
        return int(row["id"]), int(older["n"])

    def _pages(
        self, table: str, columns: str, where: str, params: list[object], after_id: int
    ) -> Iterator[dict[str, Any]]:
        while True:  # keyset pagination: each page a fresh short read
            with self._db.reading() as conn:
                rows = _all(
                    conn,
                    f"SELECT {columns} FROM {table} WHERE {where} AND id > %s ORDER BY id LIMIT %s",
                    (*params, after_id, records.PAGE_ROWS),
                )
            yield from rows
            if len(rows) < records.PAGE_ROWS:
                return
            after_id = rows[-1]["id"]

    def attempts(self, webhook_id: int) -> list[Attempt]:
        """The recorded tries at delivering this webhook, first first ([] for none)."""
        with self._db.reading() as conn:
            rows = _all(
                conn,
                f"SELECT {_ATTEMPT} FROM outbox_attempts WHERE webhook_id = %s ORDER BY number",
                (webhook_id,),
            )
        return [Attempt(**row) for row in rows]

    def counts(self) -> dict[tuple[str, State], int]:
        """How many webhooks each target has in each state (only those with any)."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT target, state, COUNT(*) FROM outbox_webhooks GROUP BY target, state"
            ).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    def created_by_hour(self, since: float) -> dict[tuple[int, State], int]:
        """Webhooks created from ``since`` on, counted by hour (UTC, epoch s) and state."""
        with self._db.reading() as conn:
            rows = conn.execute(_BY_HOUR, (since,)).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    def oldest_pending(self) -> float | None:
        """When the oldest webhook still to deliver (pending or being delivered) was stored."""
        with self._db.reading() as conn:
            row = conn.execute(_OLDEST_WAITING).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def retry_failed(
        self,
        target: str,
        now: float | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Make every failed webhook of ``target`` due now, in one transaction; how many.

        Only those received from ``since`` on and before ``until``, when given.
        """
        moment = time.time() if now is None else now
        start = -math.inf if since is None else since
        end = math.inf if until is None else until
        if start >= end:
            raise OutboxError("the time range is empty: --since must come before --until")
        with self._db.transaction() as conn:
            count = conn.execute(
                "UPDATE outbox_webhooks SET state = 'pending', attempts = 0,"
                " next_attempt_at = %s, updated_at = %s WHERE target = %s AND state = 'failed'"
                " AND created_at >= %s AND created_at < %s",
                (moment, moment, target, start, end),
            ).rowcount
            if count:
                conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        if count:
            self._notify()
        return int(count)

    def retry(self, entry_id: int, now: float | None = None) -> OutboxEntry:
        """Make a failed (or waiting) webhook due now with a fresh set of attempts."""
        moment = time.time() if now is None else now
        with self._db.transaction() as conn:
            row = _first(
                conn, "SELECT state FROM outbox_webhooks WHERE id = %s FOR UPDATE", (entry_id,)
            )
            if row is None:
                raise OutboxError(f"no webhook with id {entry_id} in the outbox")
            if row["state"] in ("delivered", "delivering"):
                raise OutboxError(f"webhook {entry_id} is {row['state']}; nothing to retry")
            updated = _one(
                conn,
                "UPDATE outbox_webhooks SET state = 'pending', attempts = 0,"
                " next_attempt_at = %s, updated_at = %s WHERE id = %s RETURNING *",
                (moment, moment, entry_id),
            )
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        self._notify()
        return _entry(updated)

    def purge(
        self, older_than_days: float, now: float | None = None, *, max_rows: int | None = None
    ) -> Purged:
        """Delete finished webhooks (with their attempts) and refusals older than that.

        A small transaction at a time, at most ``max_rows`` webhooks and refusals in all.
        """
        if older_than_days < 0:
            raise OutboxError("--older-than must be zero or more days")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        webhooks = self._purge_rows(
            "SELECT id FROM outbox_webhooks WHERE state IN ('delivered', 'failed')"
            " AND updated_at < %s LIMIT %s FOR UPDATE SKIP LOCKED",
            (
                "DELETE FROM outbox_attempts WHERE webhook_id = ANY(%s)",
                "DELETE FROM outbox_webhooks WHERE id = ANY(%s)",
            ),
            cutoff,
            max_rows,
        )
        left = None if max_rows is None else max_rows - webhooks
        refusals = (
            0
            if left == 0
            else self._purge_rows(
                "SELECT id FROM outbox_refusals WHERE refused_at < %s"
                " LIMIT %s FOR UPDATE SKIP LOCKED",
                ("DELETE FROM outbox_refusals WHERE id = ANY(%s)",),
                cutoff,
                left,
            )
        )
        complete = max_rows is None or webhooks + refusals < max_rows
        return Purged(webhooks, refusals, complete)

    def _purge_rows(
        self, select: str, deletes: tuple[str, ...], cutoff: float, max_rows: int | None
    ) -> int:
        removed = 0
        while max_rows is None or removed < max_rows:
            size = records.PURGE_BATCH_ROWS
            batch = size if max_rows is None else min(size, max_rows - removed)
            with self._db.transaction() as conn:
                ids = [row[0] for row in conn.execute(select, (cutoff, batch))]
                for delete in deletes:
                    if ids:
                        conn.execute(delete, (ids,))
            removed += len(ids)
            if len(ids) < batch:
                break
        return removed


def _in_states(states: Collection[State] | None) -> tuple[str, list[object]]:
    wanted = list(STATES if states is None else states)
    if not wanted:
        return "FALSE", []
    return "state = ANY(%s)", [wanted]


def _expire_dead_leases(conn: psycopg.Connection, moment: float) -> None:
    """Leases held by a process of this host that is gone: expired now, taken over next."""
    owners = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT lease_owner FROM outbox_webhooks"
            " WHERE state = 'delivering' AND lease_expires_at > %s",
            (moment,),
        )
    ]
    for owner in dead_owners(owners):
        conn.execute(
            "UPDATE outbox_webhooks SET lease_expires_at = %s WHERE id IN (SELECT id"
            " FROM outbox_webhooks WHERE state = 'delivering' AND lease_owner = %s"
            " FOR UPDATE SKIP LOCKED)",
            (moment, owner),
        )


def _target_state(conn: psycopg.Connection, target: str) -> TargetState:
    # FOR UPDATE: two outcomes of one target recorded at once must both count.
    conn.execute(
        "INSERT INTO outbox_target_states (target) VALUES (%s) ON CONFLICT DO NOTHING", (target,)
    )
    row = _first(
        conn,
        "SELECT * FROM outbox_target_states WHERE target = %s FOR UPDATE",
        (target,),
    )
    return TargetState(target) if row is None else TargetState(**row)


def _write_state(conn: psycopg.Connection, state: TargetState) -> None:
    conn.execute(
        "UPDATE outbox_target_states SET consecutive_failures = %s, paused_since = %s,"
        " next_probe_at = %s, next_claim_at = %s WHERE target = %s",
        (
            state.consecutive_failures,
            state.paused_since,
            state.next_probe_at,
            state.next_claim_at,
            state.target,
        ),
    )


def _all(conn: psycopg.Connection, query: str, params: Any = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def _first(conn: psycopg.Connection, query: str, params: Any = ()) -> dict[str, Any] | None:
    rows = _all(conn, query, params)
    return rows[0] if rows else None


def _one(conn: psycopg.Connection, query: str, params: Any = ()) -> dict[str, Any]:
    row = _first(conn, query, params)
    assert row is not None, query
    return row


def _entry(row: Mapping[str, Any]) -> OutboxEntry:
    fields = dict(row)
    fields["payload"] = json.loads(fields["payload"])
    return OutboxEntry(**fields)
