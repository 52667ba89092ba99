"""A target's records in a PostgreSQL database, shared by every server pointed at it.

Several targets (and several lookup-server installations) may share one
database: each kind of record has one table, whose rows carry the target's
name beside their key. The table is created on first use
(:class:`~lookup_server.plugin.PostgresDatabase`), so the user needs CREATE
on the schema; another schema than ``public`` is chosen in the URL, as for the
outbox (``?options=-csearch_path%3Dlookup``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lookup_server.plugin import PostgresDatabase

if TYPE_CHECKING:
    from . import Table

#: How each kind of column is declared: times are epoch seconds, as in the files.
TYPES = {"text": "TEXT", "integer": "BIGINT", "real": "DOUBLE PRECISION"}


class PostgresRecords:
    """One target's rows of one shared table."""

    def __init__(self, url: str, table: Table, *, target: str, what: str) -> None:
        self.table = table
        self.target = target
        columns = "".join(f", {name} {TYPES[kind]}" for name, kind in table.columns)
        schema = (
            f"CREATE TABLE IF NOT EXISTS {table.shared_name} (target TEXT NOT NULL, "
            f"{table.key} TEXT NOT NULL{columns}, PRIMARY KEY (target, {table.key}))"
        )
        self.database = PostgresDatabase(url, [schema], what)

    @property
    def description(self) -> str:
        """The records and their database (no password)."""
        return self.database.description

    def _run(self, sql: str, args: tuple[object, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """The rows ``sql`` returns (if any) and how many it changed, in one transaction."""
        with self.database.transaction() as conn:
            cursor = conn.execute(sql.encode(), args)  # our own SQL, of identifiers we chose
            rows = cursor.fetchall() if cursor.description is not None else []
            return rows, cursor.rowcount

    def get(self, key: str) -> dict[str, Any] | None:
        """The record's columns, or None."""
        names = self.table.column_names
        rows, _ = self._run(
            f"SELECT {', '.join(names)} FROM {self.table.shared_name}"
            f" WHERE target = %s AND {self.table.key} = %s",
            (self.target, key),
        )
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def put(self, key: str, values: Mapping[str, object]) -> None:
        """Write the record, replacing one of the same key."""
        replace = ", ".join(f"{name} = EXCLUDED.{name}" for name in self.table.column_names)
        self._insert(f"DO UPDATE SET {replace}", key, values)

    def add(self, key: str, values: Mapping[str, object]) -> bool:
        """Write the record unless one has this key (of two servers at once, one wins)."""
        return self._insert("DO NOTHING", key, values) == 1

    def _insert(self, on_conflict: str, key: str, values: Mapping[str, object]) -> int:
        names = ("target", self.table.key, *self.table.column_names)
        marks = ", ".join("%s" for _ in names)
        sql = (
            f"INSERT INTO {self.table.shared_name} ({', '.join(names)}) VALUES ({marks})"
            f" ON CONFLICT (target, {self.table.key}) {on_conflict}"
        )
        args = (self.target, key, *(values.get(name) for name in self.table.column_names))
        return self._run(sql, args)[1]

    def change(
        self, key: str, values: Mapping[str, object], expect: Mapping[str, object] | None = None
    ) -> bool:
        """Set ``values`` if the record holds ``expect`` (checked in the same statement)."""
        where, checked = self._where(key, expect)
        setting = ", ".join(f"{name} = %s" for name in values)
        sql = f"UPDATE {self.table.shared_name} SET {setting} WHERE {where}"
        return self._run(sql, (*values.values(), *checked))[1] == 1

    def remove(self, key: str, expect: Mapping[str, object] | None = None) -> bool:
        """Delete the record if it holds ``expect``."""
        where, checked = self._where(key, expect)
        return self._run(f"DELETE FROM {self.table.shared_name} WHERE {where}", checked)[1] == 1

    def _where(
        self, key: str, expect: Mapping[str, object] | None
    ) -> tuple[str, tuple[object, ...]]:
        expect = expect or {}
        conditions = ["target = %s", f"{self.table.key} = %s", *(f"{n} = %s" for n in expect)]
        return " AND ".join(conditions), (self.target, key, *expect.values())

    def count(self) -> int:
        """How many records this target has."""
        rows, _ = self._run(
            f"SELECT count(*) FROM {self.table.shared_name} WHERE target = %s", (self.target,)
        )
        return int(rows[0][0])

    def close(self) -> None:
        """Close this process's connections."""
        self.database.close()
