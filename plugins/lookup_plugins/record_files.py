"""Small SQLite records a target keeps of its own (pushes made, webhooks delivered, sends).

They name requests and customers, so each is made with mode 600 in a folder
of mode 700 (another user could otherwise read it, or swap the file), in WAL
mode so that every server process may use it at once. One function opens
them all, so they are all made the same way.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from lookup_server.plugin import BackendError


def open_record(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A connection to the record at ``path``, its table made with ``schema`` if need be.

    ``what`` names the record in the error: ``the push record``, ...
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # SQLite would create it 0644; readable by the server only (its WAL files follow)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, timeout=10)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(schema)
    except (OSError, sqlite3.Error) as exc:
        raise BackendError(
            f"cannot open {what} {path} ({type(exc).__name__}); set the target's store "
            "to a writable file"
        ) from None
    return conn
