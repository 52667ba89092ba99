"""What the thermostat target did with each request: sent, or why not (its send log).

HelpSpot keeps no trace of a webhook and the outbox records only that it was
taken, so the outcomes that are not errors (surveyed too recently, not
eligible, no e-mail address) are kept here, and a push's id names its entry,
for ``details``. A small SQLite file of mode 600 (it holds customers' e-mail
addresses), by default in the user's state folder.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..state_store import open_store

#: What happened to one request.
SENT = "sent"
CAMPAIGN = "added to the campaign"
TOO_RECENT = "not sent: surveyed too recently"
NOT_ELIGIBLE = "not sent: not eligible now"
SKIPPED = "skipped: no usable e-mail address"
LIMIT = "not sent: monthly plan limit reached"


@dataclass(frozen=True)
class Send:
    """One entry of the log."""

    id: int
    at: float
    request_id: str
    email: str
    survey: str
    outcome: str
    detail: str

    @property
    def push_id(self) -> str:
        """The id a push returns for it: the survey and the entry."""
        return f"{self.survey}.{self.id}"


class SendLog:
    """The log in one SQLite file, opened per call (pushes and deliveries are rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(
        self, request_id: str, email: str, survey: str, outcome: str, detail: str = ""
    ) -> Send:
        """Keep one outcome; the entry as stored."""
        at = time.time()
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                "INSERT INTO sends (at, request_id, email, survey, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (at, request_id, email, survey, outcome, detail[:500]),
            )
            assert cursor.lastrowid is not None
        return Send(cursor.lastrowid, at, request_id, email, survey, outcome, detail[:500])

    def get(self, push_id: str) -> Send | None:
        """The entry a push id names, or None."""
        survey, _, number = push_id.rpartition(".")
        if not number.isdigit() or not survey:
            return None
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT id, at, request_id, email, survey, outcome, detail FROM sends"
                " WHERE id = ? AND survey = ?",
                (int(number), survey),
            ).fetchone()
        return None if row is None else Send(*row)

    def _connect(self) -> sqlite3.Connection:
        return open_store(
            self.path,
            "CREATE TABLE IF NOT EXISTS sends (id INTEGER PRIMARY KEY, at REAL,"
            " request_id TEXT, email TEXT, survey TEXT, outcome TEXT, detail TEXT)",
            "the send log",
        )
