"""What targets keep for themselves: one Records interface, the same on a file and on PostgreSQL.

The SQLite files are private and safe to open from many places at once; every
test of the interface runs on both stores.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lookup_plugins.http_target import PUSHES
from lookup_plugins.state_store import Records, Table, open_records, open_store

from lookup_server.plugin import Secret, StoreLocation
from tests.support.postgres import schema_of_its_own

SCHEMA = "CREATE TABLE IF NOT EXISTS t (a)"


def test_many_first_opens_at_once_all_succeed(tmp_path: Path) -> None:
    # Several workers' first webhooks arrive together: each opens the new file.
    # Switching it to WAL does not wait for the others, so without taking turns
    # one of them got "database is locked" about once in thirty such bursts.
    def journal_mode(path: Path) -> str:
        conn = open_store(path, SCHEMA, "the record")
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            conn.close()

    for trial in range(60):
        path = tmp_path / f"record-{trial}.sqlite3"
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(journal_mode, [path] * 16)) == {"wal"}


def test_the_file_and_its_folder_are_the_servers_only(tmp_path: Path) -> None:
    path = tmp_path / "private" / "record.sqlite3"
    open_store(path, SCHEMA, "the record").close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path.with_name(path.name + ".lock")).st_mode) == 0o600


# -- the records of a target, on either store (tests/plugins/conftest.py) -----------------

TABLE = Table(
    name="things",
    shared_name="target_things",
    key="thing",
    columns=(("label", "text"), ("size", "integer"), ("at", "real")),
)


@pytest.fixture
def open_for(store_location: StoreLocation) -> Iterator[Callable[[str], Records]]:
    """Opens the records of a target by name on the store under test, as a server would."""
    opened: list[Records] = []

    def open_one(target: str = "crm") -> Records:
        records = open_records(store_location, TABLE, target=target, what="the thing record")
        opened.append(records)
        return records

    yield open_one
    for records in opened:
        records.close()


def test_a_record_is_written_read_and_replaced(open_for: Callable[[str], Records]) -> None:
    records = open_for("crm")
    assert records.get("a") is None and records.count() == 0
    records.put("a", {"label": "Zoë € <b>", "size": 2**40, "at": 1_800_000_000.123456})
    assert records.get("a") == {"label": "Zoë € <b>", "size": 2**40, "at": 1_800_000_000.123456}
    records.put("a", {"label": "again"})  # replaced whole: what is left out is NULL
    assert records.get("a") == {"label": "again", "size": None, "at": None}
    assert records.count() == 1


def test_add_writes_only_a_new_key(open_for: Callable[[str], Records]) -> None:
    records = open_for("crm")
    assert records.add("a", {"label": "first"})
    assert not records.add("a", {"label": "second"})
    assert records.get("a") == {"label": "first", "size": None, "at": None}


def test_change_and_remove_only_what_holds_the_expected_values(
    open_for: Callable[[str], Records],
) -> None:
    records = open_for("crm")
    records.put("a", {"label": "", "at": 5.0})
    assert not records.change("a", {"label": "x"}, {"at": 6.0})
    assert not records.change("missing", {"label": "x"})
    assert records.change("a", {"label": "x", "size": 3}, {"label": "", "at": 5.0})
    assert records.get("a") == {"label": "x", "size": 3, "at": 5.0}
    assert not records.remove("a", {"label": ""})
    assert records.remove("a", {"label": "x"})
    assert records.get("a") is None and not records.remove("a")


def test_two_servers_on_one_store_see_each_others_records(
    open_for: Callable[[str], Records],
) -> None:
    one, other = open_for("crm"), open_for("crm")
    one.put("a", {"label": "made on one"})
    assert other.get("a") == {"label": "made on one", "size": None, "at": None}
    assert other.change("a", {"size": 7})
    assert one.get("a") == {"label": "made on one", "size": 7, "at": None}


def test_of_many_adding_the_same_key_at_once_exactly_one_wins(
    open_for: Callable[[str], Records],
) -> None:
    servers = [open_for("crm") for _ in range(4)]
    start = threading.Barrier(8)

    def add(records: Records) -> bool:
        start.wait(timeout=30)
        return records.add("same", {"label": str(id(records))})

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(add, servers * 2))
    assert won.count(True) == 1


def test_of_two_changes_expecting_the_same_row_one_wins(
    open_for: Callable[[str], Records],
) -> None:
    one, other = open_for("crm"), open_for("crm")
    one.put("a", {"label": "", "at": 1.0})
    assert one.change("a", {"at": 2.0}, {"at": 1.0})
    assert not other.change("a", {"at": 3.0}, {"at": 1.0})  # it read the row before the first
    assert other.get("a") == {"label": "", "size": None, "at": 2.0}


def test_a_database_shared_by_several_targets_keeps_their_records_apart() -> None:
    # a file is one target's own; a database may hold the records of several
    with schema_of_its_own("records_test") as url:
        location = StoreLocation(url=Secret(url))
        crm = open_records(location, TABLE, target="crm", what="the thing record")
        erp = open_records(location, TABLE, target="erp", what="the thing record")
        try:
            crm.put("a", {"label": "crm's"})
            erp.put("a", {"label": "erp's"})
            assert crm.get("a") == {"label": "crm's", "size": None, "at": None}
            assert erp.get("a") == {"label": "erp's", "size": None, "at": None}
            assert crm.count() == erp.count() == 1
        finally:
            crm.close()
            erp.close()


def test_a_file_made_by_an_earlier_version_is_read_as_it_is(tmp_path: Path) -> None:
    # the http target's pushes before the store interface: the same table, columns, order
    path = tmp_path / "push-crm.sqlite3"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE pushes (push_id TEXT PRIMARY KEY, request_id TEXT, title TEXT,"
            " customer TEXT, pushed_at REAL, status INTEGER, answer TEXT)"
        )
        conn.execute("INSERT INTO pushes VALUES ('7', '12', 'Printer', 'Ann', 5.0, 201, '{}')")
    conn.close()
    records = open_records(StoreLocation(path=path), PUSHES, target="crm", what="the push record")
    assert records.get("7") == {
        "request_id": "12",
        "title": "Printer",
        "customer": "Ann",
        "pushed_at": 5.0,
        "status": 201,
        "answer": "{}",
    }
