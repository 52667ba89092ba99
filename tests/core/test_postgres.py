"""The PostgreSQL plumbing for plugins' records: tables made once, errors that say what to do."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lookup_server.plugin import BackendError, PostgresDatabase
from tests.support.postgres import schema_of_its_own

SCHEMA = ["CREATE TABLE IF NOT EXISTS plugin_things (thing TEXT PRIMARY KEY, n BIGINT)"]


def test_many_servers_using_a_new_database_at_once_all_get_its_tables() -> None:
    # without taking turns, CREATE TABLE IF NOT EXISTS of two sessions may collide in the catalog
    with schema_of_its_own("plugin_db_test") as url:
        databases = [PostgresDatabase(url, SCHEMA, "the thing record") for _ in range(6)]
        start = threading.Barrier(len(databases))

        def first_use(database: PostgresDatabase) -> int:
            start.wait(timeout=30)
            with database.transaction() as conn:
                cursor = conn.execute(b"INSERT INTO plugin_things VALUES (%s, 1)", (str(id(conn)),))
                return cursor.rowcount

        try:
            with ThreadPoolExecutor(len(databases)) as pool:
                assert list(pool.map(first_use, databases)) == [1] * len(databases)
        finally:
            for database in databases:
                database.close()


def test_a_failed_block_is_rolled_back_and_its_error_goes_through() -> None:
    with schema_of_its_own("plugin_db_test") as url:
        database = PostgresDatabase(url, SCHEMA, "the thing record")
        try:
            said_no = pytest.raises(BackendError, match="the other system said no")
            with said_no, database.transaction() as conn:
                conn.execute(b"INSERT INTO plugin_things VALUES ('a', 1)")
                raise BackendError("the other system said no")
            with database.transaction() as conn:
                assert conn.execute(b"SELECT count(*) FROM plugin_things").fetchone() == (0,)
        finally:
            database.close()


def test_an_unreachable_database_is_a_backend_error_without_the_password() -> None:
    url = "postgresql://lookup:s3cret-pw@127.0.0.1:9/records?sslmode=disable"  # nothing on 9
    database = PostgresDatabase(url, SCHEMA, "the thing record", timeout=0.5)
    try:
        with pytest.raises(BackendError) as raised, database.transaction():
            pass
    finally:
        database.close()
    message = str(raised.value)
    assert message.startswith(
        "cannot use the thing record postgresql://lookup@127.0.0.1:9/records ("
    )
    assert "s3cret-pw" not in message and "sslmode" not in message
    assert message.endswith(
        "check the target's store, that PostgreSQL is up and that its user may create tables there"
    )
