"""The local index of survey responses: a SQLite file rebuilt aside and swapped in.

Thermostat's responses API cannot be searched, and Live Lookup must neither
wait on Thermostat nor fail while it is down, so responses are kept here and
lookups read only this file. It uses the CSV index's machinery
(lookup_plugins.index_files): each sync writes a copy under a temporary name
in one transaction and replaces the index with it, so readers (gunicorn's
workers, command-line lookups) open it immutable and never see it
half-written; a file lock beside it lets one process sync at a time.

Each response row also records whether its write-back job was handed to the
outbox, in the same transaction as the response itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lookup_server.plugin import PHONE_SUFFIX_DIGITS, phone_digits

from ..index_files import file_identity, lock_unless_held, read_only_uri

#: Bump when the layout changes: an older index is rebuilt from Thermostat.
FORMAT = "1"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE surveys (id TEXT PRIMARY KEY, name TEXT, type TEXT, labels TEXT,"
    " cursor INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE responses (id INTEGER PRIMARY KEY, survey_id TEXT, email TEXT,"
    " email_folded TEXT, customer_id TEXT, last_folded TEXT, first_folded TEXT,"
    " phone_tail TEXT, score INTEGER, feedback TEXT, created_at TEXT, xrequest TEXT,"
    " fields TEXT, writeback INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX by_email ON responses (email_folded)",
    "CREATE INDEX by_customer ON responses (customer_id)",
    "CREATE INDEX by_last ON responses (last_folded, first_folded)",
    "CREATE INDEX by_phone ON responses (phone_tail)",
    "CREATE INDEX pending ON responses (writeback) WHERE writeback = 0 AND xrequest != ''",
)


@dataclass(frozen=True)
class StoredResponse:
    """One response as the index holds it."""

    id: int
    survey_id: str
    email: str
    score: int | None
    feedback: str
    created_at: str
    xrequest: str
    fields: dict[str, str]


@dataclass(frozen=True)
class StoredSurvey:
    """What the index knows of a survey, to classify its scores."""

    id: str
    name: str
    type: str
    labels: dict[int, str]


def search_keys(
    email: str, fields: dict[str, str], key_fields: dict[str, str]
) -> tuple[str, str, str, str, str]:
    """The searched columns of a response: e-mail, customer id, last, first, phone tail."""
    digits = phone_digits(fields.get(key_fields["phone"], ""))
    return (
        email.casefold(),
        fields.get(key_fields["customer_id"], ""),
        fields.get(key_fields["last_name"], "").casefold(),
        fields.get(key_fields["first_name"], "").casefold(),
        digits[-PHONE_SUFFIX_DIGITS:],
    )


class Snapshot:
    """One index file as it was when opened (immutable), for this thread."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path, self.identity = path, identity
        self._conn = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
        self.meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        self.surveys = {
            row[0]: StoredSurvey(row[0], row[1], row[2], _labels(row[3]))
            for row in self._conn.execute("SELECT id, name, type, labels FROM surveys")
        }

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def emails(self, where: str, params: Sequence[str], limit: int) -> list[str]:
        """The people (folded e-mail) with a response matching ``where``, first answer first."""
        rows = self._conn.execute(
            f"SELECT email_folded FROM responses WHERE {where} GROUP BY email_folded"
            " ORDER BY MIN(id) LIMIT ?",
            (*params, limit),
        )
        return [row[0] for row in rows]

    def responses_of(self, email_folded: str) -> list[StoredResponse]:
        """Every response of one person, newest first."""
        rows = self._conn.execute(
            "SELECT id, survey_id, email, score, feedback, created_at, xrequest, fields"
            " FROM responses WHERE email_folded = ? ORDER BY id DESC",
            (email_folded,),
        )
        return [
            StoredResponse(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7])) for r in rows
        ]


class ReaderCache:
    """The current snapshot per thread, re-opened when a sync has replaced the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def current(self) -> Snapshot | None:
        """The index as it is now, or None when no sync has written one yet."""
        try:
            identity = file_identity(self.path)
        except OSError:
            return None
        held: Snapshot | None = getattr(self._local, "snapshot", None)
        if held is not None and held.identity == identity:
            return held
        try:
            fresh = Snapshot(self.path, identity)
        except sqlite3.Error:
            return None  # a damaged file: the next sync replaces it
        if fresh.meta.get("format") != FORMAT:
            fresh.close()
            return None
        if held is not None:
            held.close()
        self._local.snapshot = fresh
        return fresh


def rewrite(path: Path, change: Callable[[sqlite3.Connection], None]) -> bool:
    """Apply ``change`` to a copy of the index and put the copy in place; False if locked.

    One process at a time (a file lock beside the index): another that finds it
    held returns False at once, since that process is syncing already.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with lock_unless_held(path.with_name(path.name + ".lock")) as held:
        if not held:
            return False
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            with contextlib.closing(_copy_of(path, tmp)) as conn, conn:
                change(conn)
            os.chmod(tmp, 0o600)  # customers' addresses and answers
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return True


def _copy_of(path: Path, tmp: Path) -> sqlite3.Connection:
    """A writable copy of the index at ``tmp`` (a new, empty one without a usable index)."""
    conn = sqlite3.connect(tmp)
    if _usable(path):
        with contextlib.closing(sqlite3.connect(read_only_uri(path), uri=True)) as source:
            source.backup(conn)
        return conn
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
    conn.commit()
    return conn


def _usable(path: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(path), uri=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == FORMAT


def _labels(text: str | None) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in json.loads(text or "{}").items()}
    except (ValueError, AttributeError):
        return {}
