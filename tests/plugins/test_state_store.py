"""The small SQLite files targets keep: private, and safe to open from many places at once."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lookup_plugins.state_store import open_store

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
