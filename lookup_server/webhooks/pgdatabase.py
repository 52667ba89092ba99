"""The outbox's PostgreSQL database: a pool per process, tables made on first use, probed by check.

As with the SQLite file, nothing connects at import or app start: a database
that is down costs the webhooks only, and every psycopg error becomes an
:class:`OutboxError` naming the outbox without its password. The connection
string is a secret: only :func:`safe_url` of it is ever shown.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from lookup_server.core.postgres import safe_url as safe_url  # one rule, also for plugins
from lookup_server.webhooks.database import OutboxError

#: The outbox's schema as this version writes it (recorded in outbox_schema).
SCHEMA_VERSION = 1
#: Where stores announce new webhooks to every server's delivery worker.
CHANNEL = "lookup_server_outbox"
#: Seconds a caller waits for a pooled connection before the webhook is refused.
POOL_TIMEOUT = 10.0
#: At most one NOTIFY per this many seconds from a process (PgDatabase.announce).
ANNOUNCE_EVERY_SECONDS = 0.01
#: A pooled connection handed back this recently is lent again without a round trip first.
CHECK_AFTER_SECONDS = 1.0
#: Serialises the creation of the tables across servers starting together.
_CREATE_LOCK = 0x6C6F6F6B7570  # "lookup"

#: Times are epoch seconds (double precision), compared as the SQLite store does.
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_webhooks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    last_error TEXT NOT NULL DEFAULT '',
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_webhooks_by_state
    ON outbox_webhooks (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_webhooks_finished ON outbox_webhooks (updated_at)
    WHERE state IN ('delivered', 'failed');
CREATE INDEX IF NOT EXISTS outbox_webhooks_by_target ON outbox_webhooks (target, state);
CREATE INDEX IF NOT EXISTS outbox_webhooks_by_created ON outbox_webhooks (state, created_at);
CREATE TABLE IF NOT EXISTS outbox_refusals (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refused_at DOUBLE PRECISION NOT NULL,
    target TEXT NOT NULL,
    size_bytes BIGINT,
    limit_bytes BIGINT NOT NULL,
    request_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_refusals_by_time ON outbox_refusals (refused_at);
CREATE TABLE IF NOT EXISTS outbox_attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id BIGINT NOT NULL,
    number INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    duration_ms INTEGER NOT NULL,
    delivered BOOLEAN NOT NULL,
    status INTEGER,
    answer TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    UNIQUE (webhook_id, number)
);
CREATE TABLE IF NOT EXISTS outbox_target_states (
    target TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    paused_since DOUBLE PRECISION NOT NULL DEFAULT 0,
    next_probe_at DOUBLE PRECISION NOT NULL DEFAULT 0
)
"""

#: Columns added since a table was first made: added in place (ADD COLUMN IF NOT
#: EXISTS), and only when missing: an ALTER TABLE locks the table even when it
#: changes nothing, which would deadlock with the claims of the servers running.
COLUMNS = (
    # max_per_second: the target's webhooks are not claimed before this.
    ("outbox_target_states", "next_claim_at", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    # ordered: HelpSpot's request id (xRequest), "" when the payload had none.
    ("outbox_webhooks", "request_id", "TEXT NOT NULL DEFAULT ''"),
)
#: Run once the COLUMNS are there (split at every semicolon, as SCHEMA is).
AFTER_COLUMNS = """
CREATE INDEX IF NOT EXISTS outbox_webhooks_by_request
    ON outbox_webhooks (target, request_id, id)
"""


def describe(url: str, exc: BaseException) -> str:
    """One line for a database error on the outbox: what happened and what to do."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return (
        f"the webhook outbox {safe_url(url)} is unusable ({detail}); check [server] outbox, "
        "that PostgreSQL is up and that the user may create tables there"
    )


class PgDatabase:
    """One outbox database; a pool of connections per process (made again after a fork)."""

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._pid = 0
        self._ready = False
        self._lock = threading.Lock()
        #: When each pooled connection was last handed back (monotonic), for _check.
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        #: Set when this process stored webhooks that no NOTIFY has announced yet.
        self._unannounced = threading.Event()
        self._announcer_pid = 0

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                # An inherited pool's connections are the parent's: never close them here.
                self._returned = weakref.WeakKeyDictionary()
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.max_connections,
                    kwargs={"autocommit": True},
                    check=self._check,
                    reset=self._stamp,
                    timeout=POOL_TIMEOUT,
                    open=True,
                    name="webhook-outbox",
                )
                self._pid = os.getpid()
            return self._pool

    def _stamp(self, conn: psycopg.Connection) -> None:
        self._returned[conn] = time.monotonic()

    def _check(self, conn: psycopg.Connection) -> None:
        """Before a connection is lent: one round trip, unless it was in use a moment ago.

        A round trip before every statement was a third of an accept's; a
        connection handed back within CHECK_AFTER_SECONDS was just seen working,
        and one that broke since (the server restarted) fails its statement,
        after which :meth:`_connected` checks the rest and the caller tries again.
        """
        if time.monotonic() - self._returned.get(conn, 0.0) > CHECK_AFTER_SECONDS:
            ConnectionPool.check_connection(conn)

    def prepare(self) -> None:
        """Create the tables if need be and check the schema version (once, until a failure)."""
        if self._ready:
            return
        with self._connected() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_columns(conn)
            for statement in AFTER_COLUMNS.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT MAX(version) FROM outbox_schema").fetchone()
            found = None if row is None else row[0]
            if found is None:
                conn.execute("INSERT INTO outbox_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif found > SCHEMA_VERSION:
                raise OutboxError(
                    f"the webhook outbox {safe_url(self.url)} was made by a newer "
                    f"lookup-server (schema {found}, this one knows {SCHEMA_VERSION}); upgrade it"
                )
        self._ready = True

    @contextmanager
    def _connected(self) -> Iterator[psycopg.Connection]:
        try:
            with self._connections().connection() as conn:
                yield conn
        except (psycopg.Error, OSError) as exc:
            self._ready = False  # the database may have been replaced: check it again
            if isinstance(exc, psycopg.OperationalError) and self._pool is not None:
                # lost connections: the others may be lost too; keep only live ones
                with contextlib.suppress(Exception):
                    self._pool.check()
            raise OutboxError(describe(self.url, exc)) from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):  # PoolTimeout and kin
                self._ready = False
                raise OutboxError(describe(self.url, exc)) from None
            raise

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection]:
        """A connection (autocommit); any database error becomes an OutboxError."""
        self.prepare()
        with self._connected() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection in one transaction, committed when the block ends without error."""
        self.prepare()
        with self._connected() as conn, conn.transaction():
            yield conn

    def announce(self) -> None:
        """Have every server's delivery workers woken (NOTIFY), soon, outside the caller's work.

        A NOTIFY in the storing transaction made every accept wait for it, and
        PostgreSQL commits notifying transactions one at a time (they take a lock
        on the notification queue until their commit is flushed). So this process
        sends them from a thread of its own, one for any number of stores since
        the last: each store is committed before it asks, so a NOTIFY sent after
        the ask finds it.
        """
        if self._announcer_pid != os.getpid():
            with self._lock:
                if self._announcer_pid != os.getpid():  # after a fork: a thread of our own
                    self._announcer_pid = os.getpid()
                    threading.Thread(
                        target=self._announce, name="outbox-notify", daemon=True
                    ).start()
        self._unannounced.set()

    def _announce(self) -> None:
        while True:
            self._unannounced.wait()
            self._unannounced.clear()
            try:
                with self._connected() as conn:
                    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            except OutboxError:
                pass  # the others find the webhooks at their next poll; claims report outages
            # one NOTIFY for every store of the next moment: each wakes every server's
            # worker, and a busy server stores hundreds a second
            time.sleep(ANNOUNCE_EVERY_SECONDS)

    def listen(self) -> psycopg.Connection:
        """A new connection of its own that LISTENs on CHANNEL (the delivery worker's)."""
        try:
            conn = psycopg.connect(self.url, autocommit=True)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise OutboxError(describe(self.url, exc)) from None
        return conn

    def close(self) -> None:
        """Close this process's pool."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None


def _add_columns(conn: psycopg.Connection) -> None:
    """Add the COLUMNS an outbox made by an older version lacks (in the caller's transaction)."""
    present = {
        (row[0], row[1])
        for row in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        )
    }
    for table, column, definition in COLUMNS:
        if (table, column) not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}")


def probe(url: str) -> tuple[bool, str]:
    """Whether the server can use the outbox database, and why not (for ``check``)."""
    try:
        with (
            psycopg.connect(url, autocommit=True, connect_timeout=10) as conn,
            conn.transaction(),
        ):
            # What the first webhook needs: create a table and write; then undo it all.
            conn.execute("CREATE TABLE lookup_server_write_probe (x int)")
            conn.execute("INSERT INTO lookup_server_write_probe VALUES (1)")
            raise _Undo
    except _Undo:
        return True, safe_url(url)
    except psycopg.Error as exc:
        return False, describe(url, exc)


class _Undo(Exception):
    """Rolls the probe's transaction back."""
