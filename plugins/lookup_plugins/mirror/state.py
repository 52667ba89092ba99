"""What a mirror keeps on disk: its records, and the status every process reads.

The records (``records.sqlite3``) are the refreshing process's working copy:
one transaction per pass, so a pass that fails half-way leaves them as they
were. Lookups never read them; they read the CSV index published from them.
The status (``status.json``) says how old the published copy is; it is
replaced in one step (written aside, renamed) and read by every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .feed import Data, Record

#: Set with every change of the records, cleared once they are published.
UNPUBLISHED = "unpublished"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class MirrorStatus:
    """The published copy and the last pass, as times of ``time.time()``."""

    #: when the pass that made the published copy started: its data is at least this new
    as_of: float = 0.0
    entries: int = 0
    #: "full copy" or "changes"
    kind: str = ""
    #: seconds that pass took
    took: float = 0.0
    #: when the last pass (successful or not) started
    attempted_at: float = 0.0
    #: why the last pass failed ("" when it worked)
    error: str = ""
    failed_at: float = 0.0
    #: records that pass found changed, and dropped, and read
    changed: int = 0
    gone: int = 0
    read: int = 0
    #: the process that ran that pass
    by: int = 0


def read_status(path: Path) -> MirrorStatus:
    """The status at ``path``; an empty one when there is none yet (or it is unreadable)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return MirrorStatus()
    known = {f.name for f in fields(MirrorStatus)}
    return MirrorStatus(**{k: v for k, v in raw.items() if k in known})


def write_status(path: Path, status: MirrorStatus) -> None:
    """Replace the status at ``path`` in one step."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write_private(tmp, json.dumps(asdict(status)).encode())
    os.replace(tmp, path)


def write_private(path: Path, content: bytes) -> None:
    """A new file at ``path`` that only the server may read (customers' data)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def _json(data: Data) -> str:
    # sorted, so that a record read again unchanged compares equal to the stored one
    return json.dumps(data, sort_keys=True)


class RecordStore:
    """The records of one mirror, with what the last passes left to go on (``meta``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path)
        try:
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    def meta(self) -> dict[str, str]:
        """What the last pass left beside the records: signature, marker, last full copy."""
        with self._connection() as conn:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def replace_all(self, records: Iterable[Record], meta: dict[str, str]) -> int:
        """Make ``records`` all there is, in one transaction; how many there are."""
        with self._connection() as conn, conn:
            conn.execute("DELETE FROM records")
            conn.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?)",
                ((r.key, _json(r.data)) for r in records),
            )
            self._write_meta(conn, {**meta, UNPUBLISHED: "1"})
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def apply(
        self, changed: Iterable[Record], keep: set[str], meta: dict[str, str]
    ) -> tuple[int, int, int]:
        """Store ``changed``, drop each record whose key is not in ``keep``.

        Returns how many records differed from what was stored, how many went,
        and how many there are now.
        """
        with self._connection() as conn, conn:
            rows = [(r.key, _json(r.data)) for r in changed]
            differ = [
                (key, data)
                for key, data in rows
                if conn.execute("SELECT data FROM records WHERE key = ?", (key,)).fetchone()
                != (data,)
            ]
            conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?)", differ)
            stored = {key for (key,) in conn.execute("SELECT key FROM records")}
            gone = stored - keep
            conn.executemany("DELETE FROM records WHERE key = ?", ((k,) for k in gone))
            touched = {UNPUBLISHED: "1"} if differ or gone else {}
            self._write_meta(conn, {**meta, **touched})
            return len(differ), len(gone), len(stored) - len(gone)

    def published(self) -> None:
        """The records as they are now are what lookups read (see ``unpublished``)."""
        with self._connection() as conn, conn:
            self._write_meta(conn, {UNPUBLISHED: "0"})

    def unpublished(self) -> bool:
        """True while records changed since they were last published (a publish failed)."""
        return self.meta().get(UNPUBLISHED, "1") == "1"

    def count(self) -> int:
        """How many records there are."""
        with self._connection() as conn:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def everything(self) -> dict[str, Data]:
        """Key -> data of every record."""
        with self._connection() as conn:
            return {key: json.loads(data) for key, data in conn.execute("SELECT * FROM records")}

    @staticmethod
    def _write_meta(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
