"""Which case or task each webhook created, so that a redelivery creates no second one.

The outbox delivers at least once: after a crash, or when the answer to a
delivery was lost, the same webhook (the same ``idempotency_key``) comes to
``deliver`` again. Trackers such as FogBugz and ActiveCollab take no
idempotency key, so the targets that create items there remember, per target,
``idempotency key -> the id created``, and answer a redelivery from that
record without calling the tracker.

The record is kept the way the http target keeps its pushes: a small SQLite
file (the target's ``store`` option; by default in the user's state folder),
in WAL mode, shared by every server process, made with mode 600 in a folder
of mode 700 (it names requests and the items made for them).

One window remains, and no record on this side can close it: the tracker has
created the item, but its answer never reaches us (the connection drops, the
target's timeout passes) or the process dies before the record is written.
The delivery then counts as failed, is retried, and creates a second item.
A record that cannot be opened fails the delivery before anything is made
(a retry could not be recognised); one that cannot be written after the item
was made is logged, and the delivery counts as done.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from lookup_server.plugin import BackendError, state_dir

from .record_files import open_record

#: An id longer than this is no id a tracker gave out; HelpSpot keeps 255 too.
MAX_ID_CHARS = 255


def default_record(target: str) -> Path:
    """``webhooks-TARGET.sqlite3`` in the user's state folder (see :func:`state_dir`)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in target)
    return state_dir() / f"webhooks-{safe}.sqlite3"


class DeliveredWebhooks:
    """``idempotency key -> created id`` of one target, in a SQLite file shared by processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return open_record(
            self.path,
            "CREATE TABLE IF NOT EXISTS delivered (idempotency_key TEXT PRIMARY KEY,"
            " created_id TEXT NOT NULL, delivered_at REAL NOT NULL)",
            "the record of delivered webhooks",
        )

    def created_for(self, key: str) -> str | None:
        """The id created for the webhook with this idempotency key, or None."""
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT created_id FROM delivered WHERE idempotency_key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"cannot read {self.path} ({type(exc).__name__})") from None
        finally:
            conn.close()
        return None if row is None else str(row[0])

    def remember(self, key: str, created_id: str) -> None:
        """Record that this webhook created ``created_id`` (the first record stays)."""
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)",
                    (key, created_id[:MAX_ID_CHARS], time.time()),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"cannot write {self.path} ({type(exc).__name__})") from None
        finally:
            conn.close()

    def count(self) -> int:
        """How many deliveries are recorded (opens the file: a check that it works)."""
        conn = self._connect()
        try:
            return int(conn.execute("SELECT count(*) FROM delivered").fetchone()[0])
        except sqlite3.Error as exc:
            raise BackendError(f"cannot read {self.path} ({type(exc).__name__})") from None
        finally:
            conn.close()
