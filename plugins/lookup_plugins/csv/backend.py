"""CSV backend: a customer file whose header row names the livelookup elements.

A million-row file cannot be re-read per lookup (HelpSpot's command-line mode
spawns a process per lookup) nor held as Python objects in every gunicorn
worker. So the file is indexed once into a SQLite database kept next to it (or
in the user's cache folder when that folder is read-only) and rebuilt when the
file changes. Workers share the index through the OS page cache; lookups are
indexed queries. A rebuild goes to a temporary file that replaces the index
atomically, so the server keeps answering from the old one meanwhile.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lookup_server.plugin import (
    PHONE_SUFFIX_DIGITS,
    BackendError,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Customer,
    FragmentSpec,
    Option,
    OptionsQuery,
    Prerendered,
    SearchTerm,
    SourceBackend,
    SourceSettings,
    phone_matches,
)

from .index import CsvIndex, IndexLayout, IndexReplaced, open_fresh_index

T = TypeVar("T")

log = logging.getLogger(__name__)
#: How often a lookup may stat the file to see whether it changed.
FRESHNESS_INTERVAL = 1.0
_TOP = "\U0010ffff"  # sorts after every string with the same prefix


@dataclass(frozen=True)
class CsvOptions:
    """Keys of a ``backend = "csv"`` source."""

    path: Path
    #: Where to keep the index; default: next to the CSV, else the user cache folder.
    index_path: Path | None = None
    delimiter: str = ","


class CsvBackend(SourceBackend[CsvOptions]):
    """Customers (and AJAX options) from a CSV file, through a persistent index."""

    Options = CsvOptions
    # Index lookups in a local SQLite file take microseconds and cannot hang on a
    # remote system, so the core calls them inline (see Backend.waits_on_network).
    waits_on_network = False

    def __init__(self, options: CsvOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        key_columns = {
            element: self.source.backend_field(element)
            for element in ("customer_id", "email", "phone", "last_name", "first_name")
        }
        self.layout = IndexLayout(
            options.path,
            options.index_path,
            options.delimiter,
            key_columns,
            dict(self.source.fields),
        )
        self._index: CsvIndex | None = None
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._rebuilding = False

    @classmethod
    def validate(cls, options: CsvOptions, source: SourceSettings) -> list[tuple[str, str]]:
        """The delimiter must be one character that cannot be part of a value's syntax."""
        if len(options.delimiter) != 1 or options.delimiter in '"\r\n':
            return [
                (
                    "delimiter",
                    "must be one character other than a quote or a line break, "
                    'like "," or ";" (a tab: "\\t")',
                )
            ]
        return []

    # -- life cycle ------------------------------------------------------------------

    def prepare(self) -> None:
        """Open the index, building it first if the file is new or changed (no deadline)."""
        with self._lock:
            self._index = self._open()

    def check(self) -> list[str]:
        """Build or open the index and report rows the file got wrong."""
        return list(self._current().warnings)

    def close(self) -> None:
        """Forget the index; connections close with their threads."""
        self._index = None

    # -- capabilities --------------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Indexed lookup of one search term."""
        return self._on_index(lambda index: self._find(index, term, limit))

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """Options from a CSV with ``value`` and ``description`` columns."""
        return self._on_index(lambda index: index.options(query, limit))

    # -- the index -------------------------------------------------------------------------

    def _on_index(self, use: Callable[[CsvIndex], T]) -> T:
        """``use`` on the current index; once more on the new one if it was replaced meanwhile."""
        try:
            return use(self._current())
        except IndexReplaced:
            return use(self._reopen())

    @staticmethod
    def _find(index: CsvIndex, term: SearchTerm, limit: int) -> list[Customer]:
        index.require_customers()
        where, params, wanted, digits = _condition(term, limit)
        rows = index.query(where, params, wanted)
        if digits is not None:
            rows = [r for r in rows if phone_matches(r.get("phone", ""), digits)]
        return [Customer(row) for row in rows[:limit]]

    def find_rendered(self, term: SearchTerm, limit: int, spec: FragmentSpec) -> Prerendered | None:
        """What find() finds, as fragments rendered ahead of time (see csv.fragments)."""
        return self._on_index(lambda index: self._find_rendered(index, term, limit, spec))

    @staticmethod
    def _find_rendered(
        index: CsvIndex, term: SearchTerm, limit: int, spec: FragmentSpec
    ) -> Prerendered | None:
        index.require_customers()
        where, params, wanted, digits = _condition(term, limit)
        found = index.rendered(where, params, wanted, spec, with_phone=digits is not None)
        if found is None:
            return None
        frame, rows = found
        if digits is not None:
            rows = [r for r in rows if phone_matches(r[0], digits)]
        # as find_customers drops customers without an id from what find returned
        return Prerendered(frame, [body for _, body in rows[:limit] if body is not None])

    def _current(self) -> CsvIndex:
        index, now = self._index, time.monotonic()
        if index is not None and now - self._checked_at < FRESHNESS_INTERVAL:
            return index
        self._checked_at = now
        if index is not None and index.is_fresh():
            return index
        if index is not None:
            # the file changed while we serve: answer from the old index meanwhile
            self._rebuild_in_background()
            return index
        with self._lock:
            if self._index is None or not self._index.is_fresh():
                self._index = self._open()
            return self._index

    def _reopen(self) -> CsvIndex:
        # A new thread connected to index files that a rebuild has replaced since
        # this process opened them: take the new ones.
        with self._lock:
            self._index = self._open()
            return self._index

    def _open(self) -> CsvIndex:
        try:
            return open_fresh_index(self.layout)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot index {self.layout.csv_path.name}: {exc}") from exc

    def _rebuild_in_background(self) -> None:
        with self._lock:
            if self._rebuilding:
                return
            self._rebuilding = True

        def rebuild() -> None:
            try:
                fresh = self._open()
                self._index = fresh
                log.info("reloaded %s (%d rows)", self.layout.csv_path, fresh.row_count)
            except BackendError as exc:
                log.error("keeping the previous index: %s", exc)
            finally:
                self._rebuilding = False

        threading.Thread(target=rebuild, name="csv-reindex", daemon=True).start()


def _condition(term: SearchTerm, limit: int) -> tuple[str, tuple[str, ...], int, str | None]:
    """The index condition of a term, its parameters, and how many rows to fetch.

    Last, the phone digits that fetched rows must then match (None: every one does).
    """
    match term:
        case ById(customer_id):
            return "customer_id = ?", (customer_id,), limit, None
        case ByEmail():
            return "email = ?", (term.folded,), limit, None
        case ByPhone(digits) if len(digits) >= PHONE_SUFFIX_DIGITS:
            return "phone_tail = ?", (digits[-PHONE_SUFFIX_DIGITS:],), limit * 20, digits
        case ByPhone(digits):  # shorter than any stored tail of a longer number
            return "phone_tail = ?", (digits,), limit, None
        case ByName():
            where = "last >= ? AND last <= ?"
            params: tuple[str, ...] = (term.last_folded, term.last_folded + _TOP)
            if term.first:
                where += " AND first >= ? AND first <= ?"
                params += (term.first_folded, term.first_folded + _TOP)
            return where, params, limit, None
