"""What the console shows of HelpSpot's calls: the last few hundred, and per-minute figures.

Under gunicorn each worker answers some of the calls, and the console's page is
served by any of them; so every process of a server writes what it saw into one
SQLite file beside the outbox, and the console reads it back. A call only goes
on a queue (no disk on a lookup's path): a thread per process writes the
queue out every second, with synchronous=OFF, because these are figures for
people, not data anyone would miss after a power cut. A failure to write is
logged once and costs HelpSpot nothing.

Names come from URLs, which anyone can send: figures and last errors are kept
per configured source and target only (CallRecord.name is folded to
``(unknown)`` for the rest before it gets here).
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lookup_server.telemetry import ERROR_OUTCOMES, SOURCE_ENDPOINTS, CallRecord, Telemetry

log = logging.getLogger(__name__)

#: Calls kept for the console's "recent calls" page.
KEEP_CALLS = 500
#: Per-minute figures are kept this long (the console shows the last hour).
KEEP_MINUTES = 120
#: Seconds between two writes of a process's queue.
FLUSH_SECONDS = 1.0
#: Calls waiting to be written, at most; past that the oldest are dropped (a
#: stuck disk must not grow the server's memory).
MAX_QUEUED = 10_000
#: Upper bounds of the latency histogram, in ms: 0.1 ms to 100 s, each a fourth
#: of an octave above the last, so a percentile read from it is within 19 %.
BOUNDS_MS: tuple[float, ...] = tuple(0.1 * 2 ** (i / 4) for i in range(81))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, at REAL, endpoint TEXT, name TEXT, outcome TEXT,
    status INTEGER, duration_ms REAL, count INTEGER, detail TEXT, path TEXT,
    remote_addr TEXT);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER, kind TEXT, name TEXT, calls INTEGER, errors INTEGER, histogram TEXT,
    PRIMARY KEY (kind, name, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_errors (
    kind TEXT, name TEXT, at REAL, endpoint TEXT, detail TEXT,
    PRIMARY KEY (kind, name)) WITHOUT ROWID;
"""
_CALL_COLUMNS = "at, endpoint, name, outcome, status, duration_ms, count, detail, path, remote_addr"


def activity_file(outbox: Path) -> Path:
    """Where the console's figures are kept: beside the outbox, shared by every process."""
    return outbox.with_name(f"{outbox.stem}.activity.sqlite3")


def kind_of(endpoint: str) -> str:
    """``source`` for Live Lookup and AJAX calls, ``target`` for pushes and webhooks."""
    return "source" if endpoint in SOURCE_ENDPOINTS else "target"


@dataclass(frozen=True)
class Figures:
    """One source's or target's calls over a period, with a per-minute series."""

    calls: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    #: (calls, errors) for each minute of the period, oldest first.
    per_minute: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class LastError:
    """The last failed call of a source or target."""

    at: float
    endpoint: str
    detail: str


class Activity(Telemetry):
    """The calls of every process of one server, in one SQLite file."""

    def __init__(self, path: Path, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = path
        self.flush_seconds = flush_seconds
        self._queue: collections.deque[CallRecord] = collections.deque(maxlen=MAX_QUEUED)
        self._wake = threading.Event()
        self._writer_pid = 0
        self._lock = threading.Lock()
        self._failing = False

    def call(self, record: CallRecord) -> None:
        """Queue the call; this process's writer thread stores it within a second."""
        self._queue.append(record)
        if self._writer_pid != os.getpid():
            self._start_writer()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer_pid == os.getpid():
                return
            # after a fork the parent's thread is not here: start our own
            self._writer_pid = os.getpid()
        threading.Thread(target=self._write_forever, name="console-activity", daemon=True).start()

    def _write_forever(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write the queued calls now (the writer thread does this every second)."""
        records = []
        while self._queue:
            records.append(self._queue.popleft())
        self.store(records)

    def store(self, records: Sequence[CallRecord]) -> None:
        """Write ``records`` now, on this thread (the command line: no queue, no thread).

        A failure is logged once until writing works again, never raised.
        """
        if not records:
            return
        try:
            with self._connect() as conn:
                _store(conn, records)
        except (sqlite3.Error, OSError) as exc:
            if not self._failing:
                log.error(
                    "console activity %s cannot be written (%s): the console's "
                    "figures stop until it can; HelpSpot's calls are not affected",
                    self.path,
                    exc,
                )
            self._failing = True
        else:
            if self._failing:
                log.warning("console activity %s: written again", self.path)
            self._failing = False

    def recent(
        self,
        limit: int = KEEP_CALLS,
        *,
        endpoint: str = "",
        name: str = "",
        outcome: str = "",
    ) -> list[CallRecord]:
        """The newest calls first, those of ``endpoint``, ``name`` and ``outcome`` if given."""
        where, args = [], []
        for column, value in (("endpoint", endpoint), ("name", name), ("outcome", outcome)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_CALL_COLUMNS} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*args, limit)).fetchall()
        return [CallRecord(*row) for row in rows]

    def figures(
        self, kind: str, names: Iterable[str], minutes: int = 60, now: float | None = None
    ) -> dict[str, Figures]:
        """Each name's figures over the last ``minutes`` (the current one included)."""
        last = int((time.time() if now is None else now) // 60)
        first = last - minutes + 1
        wanted = list(names)
        series: dict[str, dict[int, tuple[int, int, list[int]]]] = {n: {} for n in wanted}
        with self._connect() as conn:
            for name, minute, calls, errors, histogram in conn.execute(
                "SELECT name, minute, calls, errors, histogram FROM minutes "
                f"WHERE kind = ? AND minute >= ? AND name IN ({','.join('?' * len(wanted))})",
                (kind, first, *wanted),
            ):
                series[name][minute] = (calls, errors, json.loads(histogram))
        return {name: _figures(rows, first, last) for name, rows in series.items()}

    def last_errors(self, kind: str) -> dict[str, LastError]:
        """The last failed call of each source (or target) that ever failed."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, at, endpoint, detail FROM last_errors WHERE kind = ?", (kind,)
            ).fetchall()
        return {name: LastError(at, endpoint, detail) for name, at, endpoint, detail in rows}

    def _connect(self) -> _Connection:
        return _Connection(self.path)


class _Connection:
    """A connection to the activity file for one ``with`` block, the schema made first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the calls' paths hold what staff looked up: for the server's user only
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self.conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.executescript(_SCHEMA)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _store(conn: sqlite3.Connection, records: Sequence[CallRecord]) -> None:
    """Add the calls, their minutes and last errors, and drop what is no longer kept."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.at,
                    r.endpoint,
                    r.name,
                    r.outcome,
                    r.status,
                    r.duration_ms,
                    r.count,
                    r.detail,
                    r.path,
                    r.remote_addr,
                )
                for r in records
            ],
        )
        conn.execute("DELETE FROM calls WHERE id <= (SELECT MAX(id) FROM calls) - ?", (KEEP_CALLS,))
        for (kind, name, minute), (calls, errors, histogram) in _by_minute(records).items():
            _add_minute(conn, kind, name, minute, calls, errors, histogram)
        for r in records:
            if r.outcome in ERROR_OUTCOMES:
                conn.execute(
                    "INSERT OR REPLACE INTO last_errors VALUES (?, ?, ?, ?, ?)",
                    (kind_of(r.endpoint), r.name, r.at, r.endpoint, r.detail),
                )
        oldest = int(time.time() // 60) - KEEP_MINUTES
        conn.execute("DELETE FROM minutes WHERE minute < ?", (oldest,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _by_minute(
    records: Sequence[CallRecord],
) -> dict[tuple[str, str, int], tuple[int, int, list[int]]]:
    totals: dict[tuple[str, str, int], tuple[int, int, list[int]]] = {}
    for r in records:
        key = (kind_of(r.endpoint), r.name, int(r.at // 60))
        calls, errors, histogram = totals.get(key) or (0, 0, [0] * (len(BOUNDS_MS) + 1))
        histogram[bisect.bisect_left(BOUNDS_MS, r.duration_ms)] += 1
        totals[key] = (calls + 1, errors + (r.outcome in ERROR_OUTCOMES), histogram)
    return totals


def _add_minute(
    conn: sqlite3.Connection,
    kind: str,
    name: str,
    minute: int,
    calls: int,
    errors: int,
    histogram: list[int],
) -> None:
    row = conn.execute(
        "SELECT calls, errors, histogram FROM minutes WHERE kind = ? AND name = ? AND minute = ?",
        (kind, name, minute),
    ).fetchone()
    if row is not None:
        calls, errors = calls + row[0], errors + row[1]
        histogram = [a + b for a, b in zip(histogram, json.loads(row[2]), strict=True)]
    conn.execute(
        "INSERT OR REPLACE INTO minutes VALUES (?, ?, ?, ?, ?, ?)",
        (minute, kind, name, calls, errors, json.dumps(histogram)),
    )


def _figures(rows: dict[int, tuple[int, int, list[int]]], first: int, last: int) -> Figures:
    merged = [0] * (len(BOUNDS_MS) + 1)
    for _, _, histogram in rows.values():
        merged = [a + b for a, b in zip(merged, histogram, strict=True)]
    per_minute = tuple(rows[m][:2] if m in rows else (0, 0) for m in range(first, last + 1))
    return Figures(
        calls=sum(c for c, _ in per_minute),
        errors=sum(e for _, e in per_minute),
        p50_ms=percentile(merged, 0.50),
        p99_ms=percentile(merged, 0.99),
        per_minute=per_minute,
    )


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a BOUNDS_MS histogram, interpolated within its bucket."""
    total = sum(histogram)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = BOUNDS_MS[i - 1] if i else 0.0
            high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return BOUNDS_MS[-1]
