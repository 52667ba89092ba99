"""Small SQLite files a target keeps for itself: what it pushed, which webhook made which issue.

Each lives at the target's ``store`` option or, by default, in the user's
state folder (:func:`~lookup_server.plugin.state_dir`), and is shared by every
server process (WAL, a 10 s busy timeout). It holds customers' names and
HelpSpot's request numbers, so the file is the server's only (mode 600) in a
folder that is the server's only (mode 700): others could otherwise read it,
or swap it for a file of their own.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from lookup_server.plugin import BackendError, state_dir


def store_path(kind: str, target: str) -> Path:
    """``KIND-TARGET.sqlite3`` in the user's state folder, the target's name made file-safe."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in target)
    return state_dir() / f"{kind}-{safe}.sqlite3"


def open_store(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """A connection to the store at ``path``, ``schema`` (CREATE ... IF NOT EXISTS) applied.

    ``what`` names the store for the error: "the push record", "the webhook record".
    """
    conn: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # SQLite would create it 0644; its WAL files take the main file's mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Switching a file to WAL wants it alone and does not wait for that (its
        # busy handler is not called): the first calls of several threads or
        # workers would get "locked". So they take turns, on a lock file of its
        # own: a descriptor of the database closed by us would drop SQLite's locks.
        lock = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = sqlite3.connect(path, timeout=10)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(schema)
        finally:
            os.close(lock)  # and the turn with it
    except (OSError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        raise BackendError(
            f"cannot open {what} {path} ({type(exc).__name__}); set the "
            "target's store to a writable file"
        ) from None
    return conn
