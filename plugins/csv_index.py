"""The persistent SQLite index of a customer CSV (see csv_backend for why)."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from lookup_server.backend import BackendError
from lookup_server.models import Option, OptionsQuery
from lookup_server.search import PHONE_SUFFIX_DIGITS

#: SQLite page cache of each reading connection (one per serving thread).
READ_CACHE_KIB = 64 * 1024
#: Bump when the index layout changes: older indexes are rebuilt.
FORMAT = 2
_ELEMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_NON_DIGITS = re.compile(r"[^0-9]+")  # as lookup_server.search.phone_digits, inlined for speed
#: Searched keys, normalised; then one column per emitted CSV column (c0, c1, ...),
#: so that no row is encoded or decoded on the way in or out.
_KEYS = "customer_id, email, phone, phone_tail, last, first"
# A number shorter than PHONE_SUFFIX_DIGITS is its own tail, so the phone_tail
# index also serves exact searches for short numbers.
_INDEXES = """
CREATE INDEX rows_customer_id ON rows (customer_id);
CREATE INDEX rows_email ON rows (email);
CREATE INDEX rows_phone_tail ON rows (phone_tail);
CREATE INDEX rows_last ON rows (last);
"""
_FAST_BUILD = """
PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = MEMORY;
PRAGMA cache_size = -262144; PRAGMA threads = 2;
"""


@dataclass(frozen=True)
class IndexLayout:
    """Which CSV, where its index lives, and which columns feed the searched keys."""

    csv_path: Path
    index_path: Path | None
    delimiter: str
    #: searched element -> CSV column
    key_columns: Mapping[str, str]
    #: element -> CSV column, to rename columns on output
    fields: Mapping[str, str] = field(default_factory=dict)

    def index_file(self) -> Path:
        """The explicit index path, else next to the CSV, else the user cache folder."""
        if self.index_path is not None:
            return self.index_path
        beside = self.csv_path.with_name(self.csv_path.name + ".lookup-index.sqlite3")
        if os.access(self.csv_path.parent, os.W_OK):
            return beside
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha256(str(self.csv_path).encode()).hexdigest()[:16]
        return cache / "lookup-server" / f"{self.csv_path.name}-{digest}.sqlite3"

    def signature(self) -> str:
        """Everything besides the file itself that the index content depends on."""
        return json.dumps([FORMAT, self.delimiter, dict(self.key_columns), dict(self.fields)],
                          sort_keys=True)


def file_identity(path: Path) -> str:
    """Changes whenever the file is rewritten or replaced."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


class CsvIndex:
    """An open, read-only index; one SQLite connection per thread."""

    def __init__(self, layout: IndexLayout, path: Path, meta: Mapping[str, str]) -> None:
        self.layout, self.path = layout, path
        self.identity = meta["identity"]
        self.elements: list[str] = json.loads(meta["elements"])
        self.warnings: list[str] = json.loads(meta["warnings"])
        self.row_count = int(meta["rows"])
        self._local = threading.local()
        self._columns = ", ".join(f"c{i}" for i in range(len(self.elements)))

    def require_customers(self) -> None:
        """Raise unless this file has a customer id column (it may hold only options)."""
        if "customer_id" not in self.elements:
            raise BackendError(f"{self.layout.csv_path.name} has no "
                               f"{self.layout.key_columns['customer_id']!r} column, so it cannot "
                               "answer Live Lookups (it looks like an AJAX options file)")

    def is_fresh(self) -> bool:
        """True while the CSV is the one this index was built from."""
        try:
            return file_identity(self.layout.csv_path) == self.identity
        except OSError:
            return True  # a vanished file keeps its last index rather than failing lookups

    def query(self, where: str, params: tuple[str, ...], limit: int) -> list[dict[str, str]]:
        """Rows matching a condition on the indexed columns, in file order."""
        sql = f"SELECT {self._columns} FROM rows WHERE {where} ORDER BY id LIMIT ?"
        cursor = self._connection().execute(sql, (*params, limit))
        return [dict(zip(self.elements, row, strict=True)) for row in cursor]

    def options(self, query: OptionsQuery, limit: int) -> list[Option]:
        """Rows as options: filter columns must be empty or equal the request's value."""
        if "value" not in self.elements or "description" not in self.elements:
            raise BackendError(f"{self.layout.csv_path.name} has no 'value' and 'description' "
                               "columns, so it cannot fill an AJAX field")
        filters = [e for e in self.elements if e not in ("value", "description")]
        needle = query.search.casefold()
        found: list[Option] = []
        sql = f"SELECT {self._columns} FROM rows ORDER BY id"
        for values in self._connection().execute(sql):
            row = dict(zip(self.elements, values, strict=True))
            if any(row[f] and row[f] != query.fields.get(f, "") for f in filters):
                continue
            if needle and needle not in row["value"].casefold() \
                    and needle not in row["description"].casefold():
                continue
            found.append(Option(row["value"], row["description"]))
            if len(found) >= limit:
                break
        return found

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)
            # Lookups hit random pages of a file of hundreds of MB: SQLite's default
            # 2 MB page cache missed on most of them (measured 58 -> 17 us a query).
            conn.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")
            self._local.conn = conn
        return conn


def open_fresh_index(layout: IndexLayout) -> CsvIndex:
    """The index of the CSV as it is now, building it first when missing or stale."""
    if not layout.csv_path.is_file():
        raise BackendError(f"{layout.csv_path} does not exist")
    target = layout.index_file()
    found = _open_if_current(layout, target)
    if found is not None:
        return found
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(target.name + ".lock")):
        # another worker may have built it while we waited for the lock
        found = _open_if_current(layout, target)
        if found is None:
            _build(layout, target)
            found = _open_if_current(layout, target)
    if found is None:
        raise BackendError(f"{layout.csv_path.name} changed while it was being indexed")
    return found


def _open_if_current(layout: IndexLayout, target: Path) -> CsvIndex | None:
    try:
        with contextlib.closing(sqlite3.connect(f"{target.as_uri()}?mode=ro", uri=True)) as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return None  # missing or unreadable: build it
    current = (meta.get("identity") == file_identity(layout.csv_path)
               and meta.get("signature") == layout.signature())
    return CsvIndex(layout, target, meta) if current else None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(layout: IndexLayout, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    identity = file_identity(layout.csv_path)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_FAST_BUILD)  # a throw-away file until os.replace: no journal
        elements, warnings, count = _load_rows(layout, conn)
        conn.executescript(_INDEXES)
        meta = {"identity": identity, "signature": layout.signature(), "rows": str(count),
                "elements": json.dumps(elements), "warnings": json.dumps(warnings)}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.commit()
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    conn.close()
    os.replace(tmp, target)


def _load_rows(layout: IndexLayout, conn: sqlite3.Connection) -> tuple[list[str], list[str], int]:
    name = layout.csv_path.name
    with open(layout.csv_path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=layout.delimiter)
        try:
            header = next(reader)
            columns, elements, warnings = _columns(name, header, layout)
            keys = [header.index(layout.key_columns[k]) if layout.key_columns[k] in header
                    else None
                    for k in ("customer_id", "email", "phone", "last_name", "first_name")]
            data = [f"c{i}" for i in range(len(columns))]
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(f"CREATE TABLE rows (id INTEGER PRIMARY KEY, {_KEYS}, "
                         f"{', '.join(data)})")
            conn.executemany(
                f"INSERT INTO rows ({_KEYS}, {', '.join(data)}) "
                f"VALUES ({', '.join('?' * (6 + len(data)))})",
                _rows(reader, columns, keys, len(header)),
            )
        except StopIteration:
            raise BackendError(f"{name} is empty: it needs a header row") from None
        except UnicodeDecodeError:
            raise BackendError(f"{name} line {_first_non_utf8_line(layout.csv_path)}: not "
                               "UTF-8 text; save the file as UTF-8") from None
        except csv.Error as exc:
            raise BackendError(f"{name} line {reader.line_num}: {exc}") from None
    (count,) = conn.execute("SELECT count(*) FROM rows").fetchone()
    return elements, warnings, count


def _first_non_utf8_line(path: Path) -> int:
    # the text layer decodes in large chunks, so the csv reader's line count is not it
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _picker(positions: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """Like itemgetter(*positions), but always returning a tuple (even of 0 or 1)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    return lambda row: tuple(row[i] for i in positions)


def _columns(name: str, header: list[str], layout: IndexLayout
             ) -> tuple[list[int], list[str], list[str]]:
    """Positions of the emitted columns, their element names, and warnings."""
    is_options = "value" in header and "description" in header
    if layout.key_columns["customer_id"] not in header and not is_options:
        raise BackendError(
            f"{name} has neither a {layout.key_columns['customer_id']!r} column for Live "
            "Lookup nor 'value' and 'description' columns for AJAX fields (header: "
            f"{', '.join(header[:12])}); add them or map one: fields = {{ customer_id = \"...\" }}")
    rename = {column: element for element, column in layout.fields.items()}
    columns, elements, warnings = [], [], []
    for position, column in enumerate(header):
        element = rename.get(column, column)
        if not _ELEMENT.match(element):
            warnings.append(f"column {column!r} is not a valid XML element name and is not "
                            "sent; rename it or map it in fields")
        elif element in elements:
            warnings.append(f"column {column!r} appears twice; only the first is sent")
        else:
            columns.append(position)
            elements.append(element)
    return columns, elements, warnings


def _rows(reader: Iterator[list[str]], columns: list[int], keys: list[int | None], width: int
          ) -> Iterator[tuple[str, ...]]:
    """Each CSV row as the index stores it: normalised keys, then the emitted columns.

    This runs once per row of files with millions of them, hence the shortcuts:
    rows of the header's width take the fast path; others are padded or cut,
    and a key column the file lacks reads an empty cell added after the row.
    """
    blank = width  # the index of the empty cell appended to every row
    get_keys = itemgetter(*(blank if k is None else k for k in keys))
    get_columns = None if columns == list(range(width)) else _picker(columns)
    tail, sub = -PHONE_SUFFIX_DIGITS, _NON_DIGITS.sub
    for row in reader:
        if len(row) != width:
            row = (row + [""] * width)[:width]
        row.append("")
        cid, email, phone, last, first = get_keys(row)
        digits = sub("", phone)
        data = row[:width] if get_columns is None else get_columns(row)
        yield (cid.strip(), email.strip().casefold(), digits, digits[tail:],
               last.strip().casefold(), first.strip().casefold(), *data)
