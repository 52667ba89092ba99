"""Files and folders lookup-server creates are no more readable than they must be."""

from __future__ import annotations

import os
from pathlib import Path


def test_folders_and_lock_files_it_creates_are_the_servers_only(tmp_path: Path) -> None:
    import stat

    from lookup_plugins.http_target import PushLog

    from lookup_server.plugin import StoreLocation
    from lookup_server.web.app import create_app
    from tests.conftest import write_csv

    write_csv(tmp_path / "c.csv", ["customer_id", "email"], [["1", "a@example.com"]])
    os.chmod(tmp_path / "c.csv", 0o600)
    old = os.umask(0)  # a careless service manager
    try:
        app = create_app(
            {
                "server": {"outbox": str(tmp_path / "ob" / "outbox.sqlite3")},
                "sources": {
                    "c": {
                        "backend": "csv",
                        "path": "c.csv",
                        "index_path": str(tmp_path / "ix" / "c.sqlite3"),
                    }
                },
                "targets": {
                    "t": {
                        "backend": "http",
                        "url": "http://127.0.0.1:9/x",
                        "store": str(tmp_path / "ps" / "pushes.sqlite3"),
                    }
                },
            },
            base_dir=tmp_path,
        )
        client = app.test_client()
        assert client.post("/webhook/t", data={"xRequest": "1"}).status_code == 202
        assert (
            PushLog(StoreLocation(path=tmp_path / "ps" / "pushes.sqlite3"), "t").find("none")
            is None
        )
    finally:
        os.umask(old)
    for folder in ("ob", "ix", "ps"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder
    locks = list((tmp_path / "ix").glob("*.lock"))
    assert locks and all(stat.S_IMODE(lock.stat().st_mode) == 0o600 for lock in locks)
