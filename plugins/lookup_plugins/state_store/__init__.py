"""What a target keeps for itself: what it pushed, which webhook made which issue.

A target's records are one table of rows under a text key (:class:`Table`),
read and written through :class:`Records`, whichever database holds them
(its ``store`` option):

- :mod:`.sqlite` — a private file of one host (the default, in the user's state
  folder), shared by the server processes of that host;
- :mod:`.postgres` — a PostgreSQL database (``store = "postgresql://..."``),
  shared by every server pointed at it: a push made through one server shows
  its details on any other, and a webhook redelivered by another server after
  a crash still finds the issue it made.

Both pass the same tests (tests/plugins/test_state_store.py). ``add`` and
``change`` with ``expect`` are single statements (an insert that does nothing
when the key exists, an update that checks the row in its WHERE), so that of
two servers racing for the same record exactly one wins, on either database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from lookup_server.plugin import StoreLocation, state_dir

from .postgres import PostgresRecords
from .sqlite import SqliteRecords, open_store

#: A column's kind; each database stores it in its own type.
Column = Literal["text", "integer", "real"]

__all__ = ["Column", "Records", "Table", "open_records", "open_store", "store_path"]


@dataclass(frozen=True)
class Table:
    """One kind of record: its table, its text key and its other columns, in order."""

    #: The table in the target's own file.
    name: str
    #: The table in a database several targets may share: it has a ``target`` column too.
    shared_name: str
    key: str
    columns: tuple[tuple[str, Column], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        """The columns but the key, in order."""
        return tuple(name for name, _ in self.columns)


class Records(Protocol):
    """One target's records of one :class:`Table`, by key; each call is one transaction."""

    @property
    def description(self) -> str:
        """What and where, for messages (never a password)."""
        ...

    def get(self, key: str) -> dict[str, Any] | None:
        """The record's columns (the key left out), or None when there is none."""
        ...

    def put(self, key: str, values: Mapping[str, object]) -> None:
        """Write the record, replacing one of the same key (missing columns: NULL)."""
        ...

    def add(self, key: str, values: Mapping[str, object]) -> bool:
        """Write the record unless one has this key; whether this call wrote it."""
        ...

    def change(
        self, key: str, values: Mapping[str, object], expect: Mapping[str, object] | None = None
    ) -> bool:
        """Set ``values`` in the record if its columns hold ``expect``; whether it did."""
        ...

    def remove(self, key: str, expect: Mapping[str, object] | None = None) -> bool:
        """Delete the record if its columns hold ``expect``; whether it did."""
        ...

    def count(self) -> int:
        """How many records there are (opens the database: a check that it works)."""
        ...

    def close(self) -> None:
        """Let go of connections held between calls."""
        ...


def store_path(kind: str, target: str) -> Path:
    """``KIND-TARGET.sqlite3`` in the user's state folder, the target's name made file-safe."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in target)
    return state_dir() / f"{kind}-{safe}.sqlite3"


def open_records(location: StoreLocation, table: Table, *, target: str, what: str) -> Records:
    """``target``'s records of ``table`` at ``location``: a PostgreSQL URL, else a file.

    ``what`` names them in errors ("the push record"). Nothing is opened yet.
    """
    if location.url is not None:  # psycopg is imported at the first use
        return PostgresRecords(location.url.reveal(), table, target=target, what=what)
    if location.path is None:
        raise ValueError("a StoreLocation holds a path or a URL")
    return SqliteRecords(location.path, table, what=what)
