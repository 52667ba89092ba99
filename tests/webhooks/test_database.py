"""Bad outbox files, for real: a damaged header or page, a folder out of reach, a file
that is not SQLite. Each is a clear OutboxError, is reported by probe(), and heals."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lookup_server.webhooks import Outbox, OutboxError, probe
from lookup_server.webhooks.database import Database
from tests.webhooks.conftest import (
    AS_ROOT,
    PAYLOAD,
    T0,
    corrupt_header,
    corrupt_pages,
    restore_header,
)

ROOT_WRITES_ANYWAY = (
    "running as root: chmod does not stop root from writing (the "
    "parent-is-a-file variant covers an unusable folder)"
)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding a used outbox, then made read-only (chmod 0555)."""
    if AS_ROOT:
        pytest.skip(ROOT_WRITES_ANYWAY)
    folder = tmp_path / "ro"
    folder.mkdir()
    Outbox(folder / "outbox.sqlite3").store("crm", PAYLOAD)
    folder.chmod(0o555)
    yield folder / "outbox.sqlite3"
    folder.chmod(0o755)


def under_a_file(tmp_path: Path) -> Path:
    """An outbox path whose "folder" is a regular file: unusable even for root."""
    (tmp_path / "a-file").write_text("not a folder\n")
    return tmp_path / "a-file" / "outbox.sqlite3"


def with_damaged_header(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("crm", PAYLOAD)
    corrupt_header(path)
    return path


def with_damaged_pages(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    for i in range(40):
        outbox.store("crm", {"n": str(i), "text": "x" * 2000})
    corrupt_pages(path, first_page=3)
    return path


def not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("[server]\n" * 100)
    return path


def a_folder(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    path.mkdir()
    return path


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "damaged header": (with_damaged_header, "is [server] outbox another kind of file"),
    "not SQLite": (not_sqlite, "is [server] outbox another kind of file"),
    "parent is a file": (under_a_file, "[server] outbox"),
    "a folder": (a_folder, "[server] outbox"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_outbox_is_one_clear_error(tmp_path: Path, name: str) -> None:
    make, hint = BAD[name]
    path = make(tmp_path)
    with pytest.raises(OutboxError) as info:
        Outbox(path)
    assert hint in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)
    lazy = Outbox(path, lazy=True)  # what the server builds: no error until used
    with pytest.raises(OutboxError):
        lazy.store("crm", PAYLOAD)


def test_a_damaged_page_is_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(with_damaged_pages(tmp_path), lazy=True)
    with pytest.raises(
        OutboxError,
        match=r"is unusable \(database disk image is malformed\);"
        r" the file is damaged",
    ):
        list(outbox.summaries())


def test_a_read_only_folder_is_a_clear_error(read_only_folder: Path) -> None:
    with pytest.raises(OutboxError, match=r"writable by the server|read-only"):
        Outbox(read_only_folder, lazy=True).store("crm", PAYLOAD)


def test_a_database_of_something_else_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "customers.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(OutboxError, match=r"database of something else \(tables customers\)"):
        Outbox(path)
    conn = sqlite3.connect(path)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()
    assert tables == ["customers"]
    assert probe(path)[0] is False


def test_a_repaired_outbox_is_used_again_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    stored = Outbox(path).store("crm", PAYLOAD, now=T0)
    outbox = Outbox(path, lazy=True)  # as a running server holds it
    original = corrupt_header(path)
    with pytest.raises(OutboxError):
        outbox.store("crm", PAYLOAD)
    restore_header(path, original)
    assert outbox.store("crm", PAYLOAD).id == stored.id + 1
    assert [e.id for e in outbox.summaries()] == [stored.id, stored.id + 1]


def test_an_outbox_moved_away_is_created_again_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.store("crm", PAYLOAD)
    corrupt_header(path)
    with pytest.raises(OutboxError):
        outbox.store("crm", PAYLOAD)
    path.rename(tmp_path / "outbox.sqlite3.damaged")  # what the error tells the admin to do
    assert outbox.store("crm", PAYLOAD).id == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_missing_folders_are_created_for_the_server(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lookup-server" / "outbox.sqlite3"
    Outbox(path, lazy=True, create_folder=True).store("crm", PAYLOAD)
    assert path.is_file()


# -- probe (lookup-server check) ----------------------------------------------------------------


def test_probe_passes_a_good_outbox_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("crm", PAYLOAD)
    before = path.read_bytes()
    assert probe(path) == (True, str(path))
    assert path.read_bytes() == before


def test_probe_passes_an_outbox_not_created_yet_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "outbox.sqlite3"  # the server creates the folder too
    ok, detail = probe(path)
    assert ok and "not created yet" in detail
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "make", [with_damaged_header, with_damaged_pages, not_sqlite, under_a_file, a_folder]
)
def test_probe_fails_a_bad_outbox(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    ok, detail = probe(path)
    assert not ok and str(path) in detail and "\n" not in detail


def test_probe_fails_an_outbox_it_cannot_write(read_only_folder: Path) -> None:
    ok, detail = probe(read_only_folder)
    assert not ok and ("read-only" in detail or "writable" in detail)


def test_probe_fails_a_file_it_cannot_write(tmp_path: Path) -> None:
    if AS_ROOT:
        pytest.skip(ROOT_WRITES_ANYWAY)
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("crm", PAYLOAD)
    path.chmod(0o400)  # readable, and quick_check passes: only the write lock fails
    ok, detail = probe(path)
    assert not ok and "read-only" in detail


def test_probe_fails_a_folder_it_cannot_create_in(tmp_path: Path) -> None:
    if AS_ROOT:
        pytest.skip(ROOT_WRITES_ANYWAY)
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    ok, detail = probe(folder / "outbox.sqlite3")
    assert not ok and "not writable" in detail


def test_a_writers_lock_that_cannot_be_opened_is_an_outbox_error(tmp_path: Path) -> None:
    # Out of file descriptors, or something else in the lock file's place: the
    # delivery loop must get the outbox's own error, logged once, not a traceback.
    path = tmp_path / "outbox.sqlite3"
    (tmp_path / "outbox.sqlite3.writers").mkdir()
    with pytest.raises(OutboxError, match=r"lock file .*outbox\.sqlite3\.writers cannot be opened"):
        Outbox(path).store("crm", {"xRequest": "1"})


# -- the pool of connections ---------------------------------------------------------------------


def test_a_durable_write_after_bookkeeping_on_the_same_connection_syncs(tmp_path: Path) -> None:
    # Connections are used again: a store must not inherit synchronous=NORMAL
    # from the claim or outcome that used its connection before.
    database = Database(tmp_path / "outbox.sqlite3")
    with database.transaction(durable=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with database.transaction() as again:
        assert again is conn
        assert again.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_file_replaced_under_an_open_connection_gets_the_webhooks(tmp_path: Path) -> None:
    # An outbox moved away and another put in its place (a restore): a kept
    # connection would write to the old file, lost to the server.
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.store("crm", PAYLOAD)
    path.rename(tmp_path / "old.sqlite3")
    Outbox(path).store("crm", {"xRequest": "elsewhere"})
    outbox.store("crm", {"xRequest": "after"})
    assert _requests(Outbox(path)) == ["elsewhere", "after"]


def test_connections_are_not_used_in_a_forked_child(tmp_path: Path) -> None:
    # SQLite forbids using a connection across fork(): gunicorn's workers are forked.
    database = Database(tmp_path / "outbox.sqlite3")
    with database.reading() as parents:
        pass
    pid = os.fork()
    if pid == 0:  # the child: its exit status says whether it was lent the parent's
        code = 1
        try:
            with database.reading() as childs:
                code = 0 if childs is not parents else 3
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with database.reading() as again:
        assert again is parents  # the parent's own is still its own


def _requests(outbox: Outbox) -> list[object]:
    """Each stored webhook's xRequest, oldest first."""
    found = [outbox.get(summary.id) for summary in outbox.summaries()]
    return [entry.payload["xRequest"] for entry in found if entry is not None]
