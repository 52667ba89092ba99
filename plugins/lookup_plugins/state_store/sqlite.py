"""A target's records in a small SQLite file of its own, shared by the processes of one host.

Each file lives at the target's ``store`` option or, by default, in the user's
state folder (:func:`~lookup_server.plugin.state_dir`), and is shared by every
server process (WAL, a 10 s busy timeout). It holds customers' names and
HelpSpot's request numbers, so the file is the server's only (mode 600) in a
folder that is the server's only (mode 700): others could otherwise read it,
or swap it for a file of their own.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookup_server.plugin import BackendError

if TYPE_CHECKING:
    from . import Table

#: How each kind of column is declared in a file.
TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL"}


def open_store(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A connection to the store at ``path``, ``schema`` (CREATE ... IF NOT EXISTS) applied.

    ``what`` names the store for the error: "the push record", "the webhook record".
    """
    conn: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # SQLite would create it 0644; its WAL files take the main file's mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Switching a file to WAL wants it alone and does not wait for that (its
        # busy handler is not called): the first calls of several threads or
        # workers would get "locked". So they take turns, on a lock file of its
        # own: a descriptor of the database closed by us would drop SQLite's locks.
        lock = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = sqlite3.connect(path, timeout=10)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(schema)
        finally:
            os.close(lock)  # and the turn with it
    except (OSError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        raise BackendError(
            f"cannot open {what} {path} ({type(exc).__name__}); set the "
            "target's store to a writable file"
        ) from None
    return conn


class SqliteRecords:
    """One table of records in the target's own file (its own: no target column)."""

    def __init__(self, path: Path, table: Table, *, what: str) -> None:
        self.path = path
        self.table = table
        self.what = what
        columns = ", ".join(f"{name} {TYPES[kind]}" for name, kind in table.columns)
        self._schema = (
            f"CREATE TABLE IF NOT EXISTS {table.name} ({table.key} TEXT PRIMARY KEY, {columns})"
        )

    @property
    def description(self) -> str:
        """The records and their file."""
        return f"{self.what} {self.path}"

    def _run(self, sql: str, args: tuple[object, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """The rows ``sql`` returns and how many it changed, in one transaction."""
        conn = open_store(self.path, self._schema, self.what)
        try:
            with conn:
                cursor = conn.execute(sql, args)
                return cursor.fetchall(), cursor.rowcount
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot use {self.description} ({type(exc).__name__}); "
                "is its disk full, or the file damaged?"
            ) from None
        finally:
            conn.close()

    def get(self, key: str) -> dict[str, Any] | None:
        """The record's columns, or None."""
        names = self.table.column_names
        rows, _ = self._run(
            f"SELECT {', '.join(names)} FROM {self.table.name} WHERE {self.table.key} = ?", (key,)
        )
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def put(self, key: str, values: Mapping[str, object]) -> None:
        """Write the record, replacing one of the same key."""
        self._insert("INSERT OR REPLACE", key, values)

    def add(self, key: str, values: Mapping[str, object]) -> bool:
        """Write the record unless one has this key."""
        return self._insert("INSERT OR IGNORE", key, values) == 1

    def _insert(self, verb: str, key: str, values: Mapping[str, object]) -> int:
        names = (self.table.key, *self.table.column_names)
        marks = ", ".join("?" for _ in names)
        sql = f"{verb} INTO {self.table.name} ({', '.join(names)}) VALUES ({marks})"
        args = (key, *(values.get(name) for name in self.table.column_names))
        return self._run(sql, args)[1]

    def change(
        self, key: str, values: Mapping[str, object], expect: Mapping[str, object] | None = None
    ) -> bool:
        """Set ``values`` if the record holds ``expect``."""
        where, checked = self._where(key, expect)
        setting = ", ".join(f"{name} = ?" for name in values)
        sql = f"UPDATE {self.table.name} SET {setting} WHERE {where}"
        return self._run(sql, (*values.values(), *checked))[1] == 1

    def remove(self, key: str, expect: Mapping[str, object] | None = None) -> bool:
        """Delete the record if it holds ``expect``."""
        where, checked = self._where(key, expect)
        return self._run(f"DELETE FROM {self.table.name} WHERE {where}", checked)[1] == 1

    def _where(
        self, key: str, expect: Mapping[str, object] | None
    ) -> tuple[str, tuple[object, ...]]:
        expect = expect or {}
        where = " AND ".join([f"{self.table.key} = ?", *(f"{name} = ?" for name in expect)])
        return where, (key, *expect.values())

    def count(self) -> int:
        """How many records the file holds."""
        rows, _ = self._run(f"SELECT count(*) FROM {self.table.name}", ())
        return int(rows[0][0])

    def close(self) -> None:
        """Nothing is held between calls: each opens the file."""
