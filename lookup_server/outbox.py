"""The durable webhook outbox: store before answering, deliver later, never lose one.

HelpSpot sends each webhook once, discards the answer and never retries
(HELPSPOT.md §6). So ``POST /webhook/<target>`` stores the webhook here and
answers 202 only after :meth:`Outbox.store` returned: by then it is committed
and synced to disk. A :class:`DeliveryWorker` thread in every server process
then hands it to the target, retrying with exponential backoff.

Several gunicorn workers share one SQLite file. A worker *claims* a webhook
with a lease (``BEGIN IMMEDIATE`` serialises claims across processes), so no
two deliver the same one at once; a lease left by a crashed process expires
and the webhook is taken over. Delivery is therefore at-least-once: a
duplicate can only follow a crash (or a delivery outlasting its lease) between
sending and recording, and it carries the same idempotency key.

Times are seconds since the epoch (wall clock), because they are compared
across processes and restarts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lookup_server.backend import BackendError
from lookup_server.models import Webhook

log = logging.getLogger(__name__)

State = Literal["pending", "delivering", "delivered", "failed"]
STATES: tuple[State, ...] = ("pending", "delivering", "delivered", "failed")

#: First retry after 30 s, doubling up to an hour between tries...
BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
#: ...and giving up after about a day (7 tries to reach the cap, then hourly).
MAX_ATTEMPTS = 30
#: Longer than any delivery may take (a target's timeout is at most 300 s):
#: a lease that expires during a delivery would let a second worker send it too.
LEASE_SECONDS = 600.0
#: How long a connection waits for another process's write to finish.
BUSY_TIMEOUT_MS = 10_000
#: last_error is shown in ``lookup-server outbox list``; keep it readable.
MAX_ERROR_CHARS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    -- AUTOINCREMENT: an id is never reused after a purge, so `outbox retry ID`
    -- can never hit a different webhook than the one the admin saw.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    last_error TEXT NOT NULL DEFAULT '',
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_expires_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhooks_by_state ON webhooks (state, next_attempt_at);
"""


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message says why and what to do."""


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


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed try: doubling, capped, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(max(attempts - 1, 0), 32))
    # Half fixed, half random: retries of a burst spread out, the order stays.
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Outbox:
    """The webhooks stored in one SQLite file (WAL mode), shared by every process."""

    def __init__(self, path: str | os.PathLike[str], *, max_attempts: int = MAX_ATTEMPTS,
                 lease_seconds: float = LEASE_SECONDS, rng: random.Random | None = None) -> None:
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._listeners: list[threading.Event] = []
        self._create()

    # -- storage -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(
                f"cannot open the webhook outbox {self.path} ({exc}); check [server] outbox "
                "and that the folder exists and is writable by the server"
            ) from None
        conn.row_factory = sqlite3.Row
        # WAL with synchronous=FULL syncs the log at every commit: a webhook we
        # answered 202 for survives a power cut, not just a process crash
        # (NORMAL would only sync at checkpoints). One fsync per webhook is cheap.
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock before reading."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _create(self) -> None:
        if not self.path.exists():
            try:  # the payloads are customer data: readable by the server only
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise OutboxError(
                    f"cannot create the webhook outbox {self.path} ({exc.strerror}); check "
                    "[server] outbox and that the folder exists and is writable by the server"
                ) from None
        try:
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
            with self._transaction() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except sqlite3.Error as exc:
            raise OutboxError(
                f"cannot use the webhook outbox {self.path} ({exc}); is [server] outbox "
                "another kind of file?"
            ) from None

    # -- the HTTP side -------------------------------------------------------------

    def store(self, target: str, payload: Mapping[str, Any], now: float | None = None,
              ) -> OutboxEntry:
        """Store a webhook for delivery; it is committed and on disk when this returns."""
        moment = time.time() if now is None else now
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            with self._transaction() as conn:
                cursor = conn.execute(
                    "INSERT INTO webhooks (target, payload, idempotency_key, created_at,"
                    " updated_at, next_attempt_at, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    (target, text, str(uuid.uuid4()), moment, moment, moment),
                )
                entry = _entry(conn.execute("SELECT * FROM webhooks WHERE id = ?",
                                            (cursor.lastrowid,)).fetchone())
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot store the webhook in {self.path} ({exc})") from None
        self._notify()
        return entry

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
        """Lease the next due webhook to ``owner`` (or take over an expired lease)."""
        moment = time.time() if now is None else now
        with self._transaction() as conn:
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
            return _entry(conn.execute("SELECT * FROM webhooks WHERE id = ?",
                                       (row["id"],)).fetchone())

    def mark_delivered(self, entry_id: int, *, owner: str | None = None,
                       now: float | None = None) -> bool:
        """Record a delivery; False when ``owner`` no longer holds the lease."""
        moment = time.time() if now is None else now
        return self._finish(entry_id, owner, "state = 'delivered', last_error = '',"
                            " updated_at = ?", (moment,))

    def mark_failed(self, entry_id: int, error: str, *, owner: str | None = None,
                    now: float | None = None) -> bool:
        """Record a failed try: retry later with backoff, or give up after max_attempts."""
        moment = time.time() if now is None else now
        entry = self.get(entry_id)
        if entry is None:
            return False
        message = error[:MAX_ERROR_CHARS]
        if entry.attempts >= self.max_attempts:
            return self._finish(entry_id, owner, "state = 'failed', last_error = ?,"
                                " updated_at = ?", (message, moment))
        retry_at = moment + backoff_delay(entry.attempts, self._rng)
        return self._finish(entry_id, owner, "state = 'pending', last_error = ?,"
                            " next_attempt_at = ?, updated_at = ?", (message, retry_at, moment))

    def _finish(self, entry_id: int, owner: str | None, assignments: str,
                values: tuple[Any, ...]) -> bool:
        where = "id = ? AND state = 'delivering'"
        params: list[object] = [entry_id]
        if owner is not None:
            # Taken over after our lease expired: the new owner records the outcome.
            where += " AND lease_owner = ?"
            params.append(owner)
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE webhooks SET {assignments}, lease_owner = '', lease_expires_at = 0"
                f" WHERE {where}", (*values, *params))
            return cursor.rowcount == 1

    # -- the admin side (lookup-server outbox ...) ---------------------------------

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The webhook with this id, or None."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT * FROM webhooks WHERE id = ?", (entry_id,)).fetchone()
        finally:
            conn.close()
        return None if row is None else _entry(row)

    def entries(self, states: Collection[State] | None = None) -> list[OutboxEntry]:
        """Stored webhooks, oldest first; only those in ``states`` when given."""
        wanted = list(STATES if states is None else states)
        marks = ", ".join("?" * len(wanted))
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT * FROM webhooks WHERE state IN ({marks}) ORDER BY id",
                                wanted).fetchall()
        finally:
            conn.close()
        return [_entry(row) for row in rows]

    def retry(self, entry_id: int, now: float | None = None) -> OutboxEntry:
        """Make a failed (or waiting) webhook due now with a fresh set of attempts."""
        moment = time.time() if now is None else now
        with self._transaction() as conn:
            row = conn.execute("SELECT state FROM webhooks WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise OutboxError(f"no webhook with id {entry_id} in the outbox")
            if row["state"] in ("delivered", "delivering"):
                raise OutboxError(f"webhook {entry_id} is {row['state']}; nothing to retry")
            conn.execute("UPDATE webhooks SET state = 'pending', attempts = 0,"
                         " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                         (moment, moment, entry_id))
        self._notify()
        entry = self.get(entry_id)
        assert entry is not None
        return entry

    def purge(self, older_than_days: float, now: float | None = None) -> int:
        """Delete delivered and failed webhooks finished more than that many days ago."""
        if older_than_days < 0:
            raise OutboxError("--older-than must be zero or more days")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM webhooks WHERE state IN ('delivered', 'failed')"
                                  " AND updated_at < ?", (cutoff,))
            return cursor.rowcount


def _entry(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"], target=row["target"], payload=json.loads(row["payload"]),
        idempotency_key=row["idempotency_key"], created_at=row["created_at"],
        updated_at=row["updated_at"], attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"], state=row["state"],
        last_error=row["last_error"], lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )


def safe_error(exc: BaseException) -> str:
    """The text to store as last_error: a BackendError's message, else only the type."""
    if isinstance(exc, BackendError):
        return str(exc) or type(exc).__name__
    # Other exceptions may quote URLs with keys or tokens; the log has the details.
    return f"{type(exc).__name__}: unexpected error (details in the server log)"


#: ``deliver(target_name, webhook)``: returns when delivered, raises when not.
Deliver = Callable[[str, Webhook], None]

#: Seconds between looks at the outbox when nothing woke the worker.
POLL_SECONDS = 5.0


class DeliveryWorker:
    """A daemon thread that delivers due webhooks: claim, deliver, record, repeat.

    Start one in every server process (after any fork): it wakes at once when
    the same process stores a webhook and polls every ``poll_seconds``
    otherwise, which picks up retries and webhooks stored by other processes.
    """

    def __init__(self, outbox: Outbox, deliver: Deliver, *, poll_seconds: float = POLL_SECONDS,
                 owner: str | None = None) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.poll_seconds = poll_seconds
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self.outbox.subscribe(self._wake)
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop after the current delivery and wait for it."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.outbox.unsubscribe(self._wake)

    def run_once(self, now: float | None = None) -> bool:
        """Claim and deliver one due webhook; False when none was due."""
        entry = self.outbox.claim(self.owner, now)
        if entry is None:
            return False
        try:
            self.deliver(entry.target, entry.webhook)
        except Exception as exc:
            if not isinstance(exc, BackendError):
                log.exception("webhook %s to target %r: unexpected error", entry.id, entry.target)
            else:
                log.warning("webhook %s to target %r failed (attempt %s): %s",
                            entry.id, entry.target, entry.attempts, exc)
            self.outbox.mark_failed(entry.id, safe_error(exc), owner=self.owner, now=now)
            return True
        self.outbox.mark_delivered(entry.id, owner=self.owner, now=now)
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.run_once():
                    continue
            except Exception:
                # A locked or full disk (or a bug) must not end deliveries for good.
                log.exception("webhook outbox %s: delivery loop error", self.outbox.path)
            self._wake.wait(self.poll_seconds)
