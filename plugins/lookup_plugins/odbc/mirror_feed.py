"""What a mirror of an odbc source reads from its table (see lookup_plugins.mirror).

Only simple mode can be mirrored: a table (or view) and its ``fields`` say
what every search can return, where an admin's own queries do not. Rows are
keyed by their customer id, which must be unique. With
``mirror_changed_column`` (a column the application sets to the time, or a
counter, of each row's last change) a pass reads only rows changed since the
newest value seen, plus the customer-id column of every row for deletions;
without it every pass is a full copy, which a table of 100,000 rows takes
seconds for anyway.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyodbc

from ..mirror.feed import Data, Marker, Record
from .backend import _close_quietly, _text

if TYPE_CHECKING:
    from .backend import OdbcBackend

#: Rows fetched from the driver at a time.
BATCH = 5000
_DECODE: dict[str, Any] = {
    "int": int,
    "float": float,
    "decimal": decimal.Decimal,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "str": str,
}


class OdbcMirrorFeed:
    """Reads the rows of an odbc source's table, for its mirror."""

    drops_empty = False

    def __init__(self, backend: OdbcBackend, elements: Sequence[str]) -> None:
        self.backend = backend
        opts, source, quote = backend.options, backend.source, backend.dialect.quote
        self.elements = tuple(elements)
        self._columns = [source.backend_field(e) for e in self.elements]
        self._changed = opts.mirror_changed_column
        head = ", ".join(quote(c) for c in self._columns)
        table = quote(opts.table or "")
        marker = f", {quote(self._changed)}" if self._changed else ""
        self._all = f"SELECT {head}{marker} FROM {table}"
        self._since = f"{self._all} WHERE {quote(self._changed)} >= ?" if self._changed else ""
        self._keys = f"SELECT {quote(source.backend_field('customer_id'))} FROM {table}"

    def signature(self) -> str:
        """The statements a pass runs: other columns or another table need a full copy."""
        return json.dumps([1, self.elements, self._all, self._since])

    def read_all(self) -> Iterator[Record]:
        """Every row of the table (``newest`` is None without a changed column)."""
        return self._records(self._all, ())

    def read_changed(self, since: Marker) -> Iterator[Record]:
        """Rows whose changed column is ``since`` or later."""
        return self._records(self._since, (_decoded(since),))

    def read_keys(self) -> set[str]:
        """The customer id of every row."""
        return {_text(row[0]) for row in self._rows(self._keys, ())}

    def newest(self, markers: Iterable[Marker]) -> Marker:
        """The latest value of the changed column, as JSON can hold it."""
        values = [_decoded(m) for m in markers if m is not None]
        return _encoded(max(values)) if values else None

    def customers(self, stored: Mapping[str, Data]) -> Iterator[Mapping[str, str]]:
        """Each row as simple mode answers it."""
        return iter(stored.values())

    def _records(self, sql: str, params: tuple[Any, ...]) -> Iterator[Record]:
        width = len(self.elements)
        for row in self._rows(sql, params):
            data = dict(zip(self.elements, map(_text, row[:width]), strict=True))
            marker = _encoded(row[width]) if self._changed else None
            yield Record(data["customer_id"], marker, data)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Every row of ``sql``, on a connection of its own without the lookups' query limit."""
        backend = self.backend
        try:
            conn = backend._connect(limit_queries=False)
        except pyodbc.Error as exc:
            raise backend._error(exc, connecting=True) from None
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            rows: list[Any] = []
            while batch := cursor.fetchmany(BATCH):
                rows += batch
            return rows
        except pyodbc.Error as exc:
            raise backend._error(exc) from None
        finally:
            _close_quietly(conn)


def _encoded(value: Any) -> Marker:
    """A column's value as JSON can hold it, with its type: ``["datetime", "2024-..."]``."""
    if value is None:
        return None
    for name, kind in (
        ("datetime", dt.datetime),
        ("date", dt.date),
        ("int", int),
        ("decimal", decimal.Decimal),
        ("float", float),
    ):
        if isinstance(value, kind) and not isinstance(value, bool):
            return [name, value.isoformat() if isinstance(value, dt.date) else str(value)]
    return ["str", _text(value)]


def _decoded(marker: Marker) -> Any:
    name, text = marker
    return _DECODE[name](text)
