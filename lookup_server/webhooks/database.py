"""The outbox's SQLite file: created on first use, healed after a failure, probed by check.

A damaged or unreachable outbox must cost the webhooks only, never Live Lookup
or Request Push, so nothing here runs at import or app start: the file is
opened when a webhook first needs it, and every sqlite3 error becomes an
:class:`OutboxError` that says what to do. After an error the next use opens
(and if need be creates) the file again, so an outbox an admin repaired or
moved away is used again without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

#: How long a connection waits for another process's write to finish.
BUSY_TIMEOUT_MS = 10_000

#: Run at every first use: an outbox made by an older version gains what it lacks
#: (only new tables and indexes, and an index dropped, so IF [NOT] EXISTS is the whole upgrade).
#: It is split at every semicolon: keep them out of the comments.
SCHEMA = """
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
-- The purge finds old finished webhooks without reading the rest.
CREATE INDEX IF NOT EXISTS webhooks_finished ON webhooks (updated_at)
    WHERE state IN ('delivered', 'failed');
-- Webhooks refused as too large: HelpSpot never sends them again, so what is
-- known of them is kept (never the body) for `outbox list`.
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    refused_at REAL NOT NULL,
    target TEXT NOT NULL,
    size_bytes INTEGER,  -- NULL: not announced (chunked), more than limit_bytes
    limit_bytes INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS refusals_by_time ON refusals (refused_at);
-- Every try whose outcome was recorded, written with that outcome. A try cut
-- short by a crash or a lost lease leaves none (the webhook's attempts counts it).
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    webhook_id INTEGER NOT NULL,
    number INTEGER NOT NULL,  -- 1, 2, ... for the webhook, on across retries
    started_at REAL NOT NULL,
    duration_ms INTEGER NOT NULL,
    delivered INTEGER NOT NULL CHECK (delivered IN (0, 1)),
    status INTEGER,  -- the peer's HTTP status when it refused (NULL: none, or delivered)
    answer TEXT NOT NULL DEFAULT '',  -- the start of the peer's answer, safe to show
    error TEXT NOT NULL DEFAULT '',
    UNIQUE (webhook_id, number)
);
-- What the console reads of a large outbox without reading the table (whose rows
-- hold the payloads): counts by target and state, and the webhooks of a day by state.
-- By target, state and time: the counts, and the failed webhooks of a target
-- received in a time range (`outbox retry --failed --since`). It replaces
-- webhooks_by_target (target, state), of which it does all.
CREATE INDEX IF NOT EXISTS webhooks_by_target_created ON webhooks (target, state, created_at);
DROP INDEX IF EXISTS webhooks_by_target;
CREATE INDEX IF NOT EXISTS webhooks_by_created ON webhooks (state, created_at);
-- Each target's delivery state (its circuit breaker), shared by the claims and
-- outcomes of every process: a row once the target needs one.
CREATE TABLE IF NOT EXISTS target_states (
    target TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    paused_since REAL NOT NULL DEFAULT 0,  -- 0: the breaker is closed
    next_probe_at REAL NOT NULL DEFAULT 0
);
"""

#: Columns added since a table was first made: added in place (ALTER TABLE) when
#: PRAGMA table_info shows the table lacks them, before the statements after them.
COLUMNS = (
    # max_per_second: the target's webhooks are not claimed before this.
    ("target_states", "next_claim_at", "REAL NOT NULL DEFAULT 0"),
    # ordered: HelpSpot's request id (xRequest), "" when the payload had none.
    ("webhooks", "request_id", "TEXT NOT NULL DEFAULT ''"),
)
#: Run once the COLUMNS are there (split at every semicolon, as SCHEMA is).
AFTER_COLUMNS = """
-- ordered: a claim looks for an earlier webhook of the same target and request.
CREATE INDEX IF NOT EXISTS webhooks_by_request ON webhooks (target, request_id, id)
"""

#: What to do about each primary SQLite result code, for the admin reading the error.
_HINTS = {
    sqlite3.SQLITE_NOTADB: "is [server] outbox another kind of file, or a damaged outbox? "
    "Move it away and a new outbox is created",
    sqlite3.SQLITE_CORRUPT: "the file is damaged: move it away (a new outbox is created) and "
    "try `sqlite3 FILE .recover` on the moved copy",
    sqlite3.SQLITE_CANTOPEN: "check [server] outbox, and that its folder exists and is "
    "writable by the server (SQLite creates -wal and -shm files "
    "beside it)",
    sqlite3.SQLITE_READONLY: "the file or its folder is read-only: make both writable by the "
    "server",
    sqlite3.SQLITE_PERM: "make the file and its folder writable by the server",
    sqlite3.SQLITE_BUSY: "another process held it locked for more than "
    f"{BUSY_TIMEOUT_MS // 1000} s; try again",
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "the disk failed to read or write it",
}


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message says why and what to do."""


def describe(path: Path, exc: sqlite3.Error) -> str:
    """One line for an sqlite3 error on the outbox: what happened and what to do."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    hint = _HINTS.get(code, "check [server] outbox and the disk")
    return f"the webhook outbox {path} is unusable ({exc}); {hint}"


def connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing outbox file (mode=rw: never creates an empty one)."""
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode=rw",
        uri=True,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    # WAL with synchronous=FULL syncs the log at every commit: a webhook we
    # answered 202 for survives a power cut, not just a process crash
    # (NORMAL would only sync at checkpoints). One fsync per webhook is cheap.
    # Database.transaction sets it for each transaction.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def add_columns(conn: sqlite3.Connection) -> None:
    """Add the COLUMNS an outbox made by an older version lacks (in the caller's transaction)."""
    for table, column, definition in COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables of a database that is not an outbox (empty for an outbox or a new file)."""
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return [] if not names or "webhooks" in names else names


#: What identifies the outbox file a connection has open: its device, inode and
#: modification time. A file deleted, replaced or written by something other
#: than SQLite's WAL (a repair, a damaged header) shows as another identity.
FileIdentity = tuple[int, int, int]


def identity_of(path: Path) -> FileIdentity | None:
    """The outbox file's identity now, or None when there is no such file."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_mtime_ns)


#: Connections a forked child inherited: never used, never closed (see Database._acquire).
_INHERITED: list[sqlite3.Connection] = []


class Database:
    """One outbox file, used by any thread or process through a pool of connections.

    Opening and closing a connection cost as much as an accept's own write
    (bench/README.md), so connections are kept for the next operation, by any
    thread of this process. One is used again only while the file is the one
    it opened (:func:`identity_of`): a commit goes to the write-ahead log and
    leaves the file alone, while a file deleted, moved away or repaired is
    opened afresh, as an outbox used without a restart must be. A checkpoint
    rewrites the file too, which costs one new connection now and then.
    """

    def __init__(self, path: Path, *, create_folder: bool = False) -> None:
        self.path = path
        self.create_folder = create_folder
        self._ready = False
        self._lock = threading.Lock()
        #: Idle connections of this process, with the identity of the file each opened.
        self._idle: list[tuple[sqlite3.Connection, FileIdentity]] = []
        self._pid = os.getpid()

    def prepare(self) -> None:
        """Create the file if need be, in WAL mode and with its tables (once, until a failure)."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._create()
                self._ready = True

    def _create(self) -> None:
        if self.create_folder:
            with contextlib.suppress(OSError):  # if it fails, creating the file says why
                # a folder of its own is the server's only: others could swap the file
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            try:  # the payloads are customer data: readable by the server only
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise OutboxError(
                    f"cannot create the webhook outbox {self.path} ({exc.strerror}); check "
                    "[server] outbox and that the folder exists and is writable by the server"
                ) from None
        try:
            conn = connect(self.path)
            try:
                foreign = _foreign_tables(conn)
                if foreign:
                    raise OutboxError(
                        f"{self.path} is a database of something else (tables "
                        f"{', '.join(foreign[:5])}); is [server] outbox another kind of file?"
                    )
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                add_columns(conn)
                for statement in AFTER_COLUMNS.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise OutboxError(describe(self.path, exc)) from None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection; any sqlite3 error in the block becomes an OutboxError."""
        conn, opened = self._acquire()
        try:
            yield conn
        except sqlite3.Error as exc:
            conn.close()
            raise self._failed(exc) from None
        except BaseException:
            conn.close()  # in an unknown state: never used again
            raise
        self._release(conn, opened)

    def _acquire(self) -> tuple[sqlite3.Connection, FileIdentity]:
        """An idle connection to the file as it is now, else a new one."""
        current = identity_of(self.path)
        if current is None:
            self._ready = False  # deleted or moved away: prepare() creates it again
        self.prepare()
        current = current or identity_of(self.path)
        with self._lock:
            if self._pid != os.getpid():
                # The parent's, inherited through fork(): SQLite must not use them
                # here, nor close them (closing may touch the parent's WAL), so
                # they are only kept from the garbage collector.
                _INHERITED.extend(conn for conn, _ in self._idle)
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                conn, opened = self._idle.pop()
                if opened == current:
                    return conn, opened
                conn.close()
        try:
            conn = connect(self.path)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        # the identity seen before opening: if the file changed meanwhile, the
        # next use finds it different and opens it again
        return conn, current or (0, 0, 0)

    def _release(self, conn: sqlite3.Connection, opened: FileIdentity) -> None:
        if conn.in_transaction:  # a block that left one open: never lend it out so
            conn.close()
            return
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append((conn, opened))
                return
        conn.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock before reading.

        ``durable=False`` commits without syncing the disk (synchronous=NORMAL):
        for what the delivery workers write (claims, lease renewals, outcomes).
        A power cut may forget one of those, which only means a webhook is
        delivered again, with its idempotency key; the next durable commit (a
        webhook stored) syncs them too. A stored webhook is always synced before
        HelpSpot is answered. Writers take turns first (:meth:`_writers_turn`).
        """
        with self.reading() as conn, self._writers_turn():
            # set each time: the pooled connection may come from the other kind
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # closing rolls back anyway
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _writers_turn(self) -> Iterator[None]:
        """Every process's writers, one after another, on a lock file beside the outbox.

        SQLite's own busy wait sleeps in growing steps (up to 100 ms) while the
        write lock is held, so a webhook arriving while the delivery workers
        write waited tens to hundreds of milliseconds (bench/bench_outbox.py). A
        flock wakes the next writer the moment the lock is free.
        """
        lock = f"{self.path}.writers"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:  # out of file descriptors, a read-only folder...
            raise OutboxError(
                f"the webhook outbox {self.path} cannot be written: its lock file {lock} "
                f"cannot be opened ({exc.strerror}); check the folder and the server's limits"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _failed(self, exc: sqlite3.Error) -> OutboxError:
        # The file may have been replaced, deleted or repaired: open it afresh next time.
        self._ready = False
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()
        return OutboxError(describe(self.path, exc))


def probe(path: Path) -> tuple[bool, str]:
    """Whether the server can use the outbox at ``path``, and why not (for ``check``).

    Opens it without creating anything, runs SQLite's quick integrity check and
    writes in a transaction that it rolls back, as storing a webhook would.
    """
    if not path.exists() and not path.is_symlink():
        return _probe_folder(path)
    try:
        conn = connect(path)
        try:
            findings = [
                " ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)")
            ]  # one line each
            if findings != ["ok"]:
                return False, (
                    f"the webhook outbox {path} is damaged ({'; '.join(findings)}); "
                    f"{_HINTS[sqlite3.SQLITE_CORRUPT]}"
                )
            foreign = _foreign_tables(conn)
            if foreign:
                return False, (
                    f"{path} is a database of something else (tables "
                    f"{', '.join(foreign[:5])}); check [server] outbox"
                )
            # The write lock alone is granted even on a read-only file: write, then undo.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE lookup_server_write_probe (x)")
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, describe(path, exc)
    return True, f"{path}"


def _probe_folder(path: Path) -> tuple[bool, str]:
    """Whether the server can create an outbox that does not exist yet, and its folders."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return False, (
            f"the webhook outbox {path} cannot be created: {folder} is not a "
            "folder; check [server] outbox"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return False, (
            f"the webhook outbox {path} cannot be created: {folder} is not "
            "writable by this user; check [server] outbox"
        )
    return True, f"{path} (not created yet: the first webhook creates it)"
