"""Real databases for the ODBC backend tests: PostgreSQL, MariaDB and SQLite.

Each :class:`Database` knows its ODBC connection string and dialect, whether
its driver and server are there, and how to create (and drop) a uniquely
named table holding the contract's PEOPLE under column names that differ
from the livelookup element names, one of them with a space.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyodbc

from tests.support.backend_contract import PEOPLE
from tests.support.requirements import need

#: element -> column of the people tables (``job title`` needs quoting everywhere)
FIELDS = {
    "customer_id": "cust_id",
    "first_name": "given_name",
    "last_name": "family_name",
    "email": "mail",
    "phone": "tel",
    "title": "job title",
}


@dataclass(frozen=True)
class Database:
    """One database reachable through an ODBC driver."""

    dialect: str
    driver: str
    connection: str
    #: column type for text in CREATE TABLE
    text_type: str = "VARCHAR(200)"
    open_quote: str = '"'
    close_quote: str = '"'

    def require(self) -> None:
        """Skip (fail under CI) unless the driver is installed and the server answers."""
        need(
            self.driver in pyodbc.drivers(),
            f"ODBC driver {self.driver!r} is not installed (odbcinst -q -d)",
        )
        try:
            pyodbc.connect(self.connection, timeout=3).close()
        except pyodbc.Error as exc:
            need(False, f"{self.dialect} is not reachable through ODBC: {exc.args[-1]}")

    def connect(self) -> Any:
        """An autocommit admin connection for setting up and inspecting tables."""
        return pyodbc.connect(self.connection, timeout=3, autocommit=True)

    def quote(self, name: str) -> str:
        """A quoted identifier for the test's own DDL."""
        return f"{self.open_quote}{name}{self.close_quote}"

    @contextmanager
    def people_table(self) -> Iterator[str]:
        """A new table holding PEOPLE; dropped afterwards."""
        name = f"people_{uuid.uuid4().hex[:10]}"
        columns = ", ".join(f"{self.quote(c)} {self.text_type}" for c in FIELDS.values())
        rows = [tuple(p.as_fields()[e] for e in FIELDS) for p in PEOPLE]
        with self.table(
            name, f"{columns}, PRIMARY KEY ({self.quote('cust_id')})", list(FIELDS.values()), rows
        ):
            yield name

    @contextmanager
    def table(
        self,
        name: str,
        definition: str,
        columns: Sequence[str],
        rows: Sequence[tuple[object, ...]],
    ) -> Iterator[str]:
        """Create ``name``, fill it with ``rows`` (one value per column), yield, drop it."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"CREATE TABLE {self.quote(name)} ({definition})")
            marks = ", ".join("?" for _ in columns)
            cols = ", ".join(self.quote(c) for c in columns)
            cursor.executemany(f"INSERT INTO {self.quote(name)} ({cols}) VALUES ({marks})", rows)
            yield name
        finally:
            conn.cursor().execute(f"DROP TABLE IF EXISTS {self.quote(name)}")
            conn.close()

    def count(self, table: str) -> int:
        """Rows in ``table`` (to prove an injection attempt changed nothing)."""
        conn = self.connect()
        try:
            return int(
                conn.cursor().execute(f"SELECT COUNT(*) FROM {self.quote(table)}").fetchone()[0]
            )
        finally:
            conn.close()


POSTGRES = Database(
    "postgresql",
    "PostgreSQL Unicode",
    os.environ.get(
        "LOOKUP_TEST_PG_ODBC",
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;",
    ),
)
MARIADB = Database(
    "mysql",
    "MariaDB Unicode",
    os.environ.get(
        "LOOKUP_TEST_MARIADB_ODBC",
        "Driver={MariaDB Unicode};Server=127.0.0.1;"
        "Port=3306;Database=test;Uid=root;Pwd=;CHARSET=utf8mb4;",
    ),
    text_type="VARCHAR(200) CHARACTER SET utf8mb4",
    open_quote="`",
    close_quote="`",
)


def sqlite_database(path: str) -> Database:
    """SQLite in a file of the test's own (libsqliteodbc's SQLite3 driver)."""
    return Database("sqlite", "SQLite3", f"Driver={{SQLite3}};Database={path};")


def people_source(db: Database, table: str, **extra: Any) -> dict[str, Any]:
    """The ``[sources.people]`` table of a simple-mode source over ``table``."""
    return {
        "backend": "odbc",
        "connection": db.connection,
        "dialect": db.dialect,
        "table": table,
        "fields": dict(FIELDS),
        **extra,
    }
