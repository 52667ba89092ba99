"""Mirrored odbc sources against real PostgreSQL, MariaDB and SQLite.

The shared contract runs on each mirrored table with the table dropped once
the first copy is made, so every answer provably comes from the mirror; the
other tests change the table and watch the copy follow.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.mirror.state import read_status

from lookup_server.config.settings import ConfigError, config_from_mapping
from lookup_server.plugin import ById
from tests.plugins.databases import (
    FIELDS,
    MARIADB,
    POSTGRES,
    Database,
    people_source,
    sqlite_database,
)
from tests.plugins.mirrors import (
    SETTLE,
    Serve,
    backend_of,
    everyone,
    first_copy,
    last_names,
    mirror_of,
)
from tests.support.backend_contract import PEOPLE, BackendContract
from tests.support.hanging import wait_for

# -- the shared contract, answered from a mirror with its table gone -------------------------


def _mirrored_table(db: Database, root: Path) -> dict[str, Any]:
    db.require()
    with db.people_table() as name:
        table = people_source(db, name, mirror="1h", mirror_path=str(root / "mirror"))
        first_copy(table, root)
    return {**table, "_base_dir": str(root)}  # the table is dropped: only the mirror answers


class TestMirroredPostgresContract(BackendContract):
    backend_name = "odbc"
    mirrored = True

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return _mirrored_table(POSTGRES, tmp_path_factory.mktemp("mirrored-pg"))


class TestMirroredMariaDbContract(BackendContract):
    backend_name = "odbc"
    mirrored = True

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return _mirrored_table(MARIADB, tmp_path_factory.mktemp("mirrored-mariadb"))


class TestMirroredSqliteContract(BackendContract):
    backend_name = "odbc"
    mirrored = True

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        root = tmp_path_factory.mktemp("mirrored-sqlite")
        return _mirrored_table(sqlite_database(str(root / "people.db")), root)


# -- SQL: the changed column, deletions --------------------------------------------------------


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    db = {"postgresql": POSTGRES, "mysql": MARIADB}.get(request.param) or sqlite_database(
        str(tmp_path / "people.db")
    )
    db.require()
    return db


def test_sql_changes_come_by_the_changed_column_and_deletions_by_the_keys(
    database: Database, tmp_path: Path
) -> None:
    db, start = database, dt.datetime(2024, 1, 1, 12, 0, 0)
    kind = "TIMESTAMP" if db.dialect == "postgresql" else "DATETIME"
    columns = [*FIELDS.values(), "changed_at"]
    # each row changed a minute before the one above it: Ada (1001) last
    rows = [
        (*(p.as_fields()[e] for e in FIELDS), start - dt.timedelta(minutes=i))
        for i, p in enumerate(PEOPLE)
    ]
    definition = ", ".join(f"{db.quote(c)} {db.text_type}" for c in FIELDS.values())
    name = f"mirror_{tmp_path.name[-12:].replace('-', '_')}"
    with db.table(name, f"{definition}, {db.quote('changed_at')} {kind}", columns, rows):
        table = people_source(
            db,
            name,
            mirror="1h",
            mirror_path=str(tmp_path / "mirror"),
            mirror_changed_column="changed_at",
        )
        backend = backend_of(table, tmp_path)
        try:
            backend.prepare()
            mirror = mirror_of(backend)
            conn = db.connect()
            q = db.quote
            conn.execute(
                f"UPDATE {q(name)} SET {q('family_name')} = ?, {q('changed_at')} = ? "
                f"WHERE {q('cust_id')} = ?",
                ("Byron", start + dt.timedelta(minutes=5), "1001"),
            )
            conn.execute(f"DELETE FROM {q(name)} WHERE {q('cust_id')} = ?", ("1004",))
            conn.close()
            result = mirror.refresh_now()
            assert result is not None and result.kind == "changes"
            # only Ada is as new as the newest change seen, or newer: the rest is not read
            assert (result.changed, result.gone) == (1, 1)
            found = {c.customer_id: c.fields["last_name"] for c in everyone(backend)}
            assert found["1001"] == "Byron"
            assert "1004" not in found
        finally:
            backend.close()


def test_an_sql_mirror_needs_simple_mode(tmp_path: Path) -> None:
    table = {
        "backend": "odbc",
        "connection": "Driver={SQLite3};Database=x.db;",
        "dialect": "sqlite",
        "queries": {"customer_id": "SELECT 1 AS customer_id WHERE 1 = ?"},
        "mirror": "5m",
    }
    with pytest.raises(ConfigError, match=r"sources\.people\.mirror: needs simple mode"):
        config_from_mapping({"sources": {"people": table}}, base_dir=tmp_path)


def test_a_store_that_answers_with_nobody_keeps_the_copy(tmp_path: Path) -> None:
    db = sqlite_database(str(tmp_path / "people.db"))
    db.require()
    with db.people_table() as name:
        table = people_source(db, name, mirror="1h", mirror_path=str(tmp_path / "mirror"))
        backend = backend_of(table, tmp_path)
        try:
            backend.prepare()
            conn = db.connect()
            conn.execute(f"DELETE FROM {db.quote(name)}")  # a lost permission looks the same
            conn.close()
            assert mirror_of(backend).refresh_now() is None
            assert "no entries at all where the mirror holds 19" in "".join(backend.status())
            assert [c.customer_id for c in backend.find(ById("1001"), 5)] == ["1001"]
        finally:
            backend.close()


def test_a_change_in_a_table_shows_within_one_interval(
    database: Database, tmp_path: Path, serve: Serve
) -> None:
    db = database
    with db.people_table() as name:
        table = people_source(db, name, mirror="1s", mirror_path=str(tmp_path / "mirror"))
        client = serve(table, tmp_path)
        assert last_names(client, customer_id="1001") == ["Lovelace"]
        conn = db.connect()
        q = db.quote
        conn.execute(
            f"UPDATE {q(name)} SET {q('family_name')} = ? WHERE {q('cust_id')} = ?",
            ("Byron", "1001"),
        )
        conn.execute(f"DELETE FROM {q(name)} WHERE {q('cust_id')} = ?", ("1004",))
        conn.close()
        wait_for(lambda: last_names(client, customer_id="1001") == ["Byron"], "the change", SETTLE)
        assert last_names(client, customer_id="1004") == []
        status = read_status(tmp_path / "mirror" / "status.json")
        assert status.kind == "full copy"  # no changed column: every pass copies the table
        assert status.by not in (0, os.getpid())
