"""The persistent SQLite index of a customer CSV (see lookup_plugins.csv.backend for why)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lookup_server.plugin import (
    BackendError,
    FragmentSpec,
    Frame,
    Option,
    OptionsQuery,
    cache_dir,
    element_name_problem,
)

from ..index_files import exclusive_lock as _exclusive
from ..index_files import file_identity, lock_unless_held, read_meta
from ..index_files import read_only_uri as _read_only
from .fragments import FragmentStores

if TYPE_CHECKING:
    from .build import Shape

#: Bump when the index layout changes: older indexes are rebuilt.
#: (4: columns with reserved names are no longer elements.)
FORMAT = 4
#: Readers map up to this much of the index into memory rather than copy its
#: pages into a page cache per connection: lookups hit random pages of a file of
#: hundreds of MB (see bench/README.md). Mapped pages are shared by
#: every worker but count in each one's RSS, hence the bound.
MMAP_BYTES = 128 * 1024 * 1024
#: How often a process waiting for another's build looks whether the index is in place.
LOCK_POLL = 0.05


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
        digest = hashlib.sha256(str(self.csv_path).encode()).hexdigest()[:16]
        return cache_dir() / f"{self.csv_path.name}-{digest}.sqlite3"

    def signature(self) -> str:
        """Everything besides the file itself that the index content depends on."""
        return json.dumps(
            [FORMAT, self.delimiter, dict(self.key_columns), dict(self.fields)], sort_keys=True
        )


class IndexReplaced(Exception):
    """The index files were replaced since this CsvIndex was opened.

    The CSV changed, or its parts were merged.
    """


class CsvIndex:
    """An open, read-only index; one SQLite connection per thread.

    A large file's rows are split between the index file and shard files
    beside it (see lookup_plugins.csv.build); every query reads them all, in file order.
    """

    def __init__(self, layout: IndexLayout, path: Path, meta: Mapping[str, str], file: str) -> None:
        self.layout, self.path = layout, path
        self.identity = meta["identity"]
        #: the index file's own identity, taken before its meta was read
        self.file = file
        self.generation = meta["generation"]
        self.elements: list[str] = json.loads(meta["elements"])
        self.warnings: list[str] = json.loads(meta["warnings"])
        self.row_count = int(meta["rows"])
        self.shards = [path.with_name(name) for name in json.loads(meta["shards"])]
        self._local = threading.local()
        self._columns = ", ".join(f"c{i}" for i in range(len(self.elements)))
        self._tables = ["main.rows", *(f"s{k}.rows" for k in range(1, len(self.shards) + 1))]
        self._queries: dict[str, str] = {}  # condition -> SQL
        self.fragments = FragmentStores(path, self.generation)
        self._phone = f"rows.c{self.elements.index('phone')}" if "phone" in self.elements else "''"
        self._rendered_sql: dict[tuple[str, str, bool], str] = {}  # -> SQL

    def require_customers(self) -> None:
        """Raise unless this file has a customer id column (it may hold only options)."""
        if "customer_id" not in self.elements:
            raise BackendError(
                f"{self.layout.csv_path.name} has no "
                f"{self.layout.key_columns['customer_id']!r} column, so it cannot "
                "answer Live Lookups (it looks like an AJAX options file)"
            )

    def is_fresh(self) -> bool:
        """True while the CSV is the one this index was built from and its files are still these.

        A merge replaces the index files with one file (see merge_parts).
        """
        try:
            if file_identity(self.path) != self.file:
                return False
            return file_identity(self.layout.csv_path) == self.identity
        except OSError:
            return True  # a vanished file keeps its last index rather than failing lookups

    def query(self, where: str, params: tuple[str, ...], limit: int) -> list[dict[str, str]]:
        """Rows matching a condition on the indexed columns, in file order."""
        sql = self._queries.get(where)
        if sql is None:
            # Row ids grow in file order across the parts, and each part's index
            # yields its matches in id order: SQLite merges them without sorting.
            sql = (
                " UNION ALL ".join(
                    f"SELECT {self._columns}, id FROM {table} WHERE {where}"
                    for table in self._tables
                )
                + " ORDER BY id LIMIT ?"
            )
            self._queries[where] = sql
        cursor = self._connection().execute(sql, (*params * len(self._tables), limit))
        # the id comes last, so that zip leaves it out
        return [dict(zip(self.elements, row, strict=False)) for row in cursor]

    def rendered(
        self,
        where: str,
        params: tuple[str, ...],
        limit: int,
        spec: FragmentSpec,
        with_phone: bool = False,
    ) -> tuple[Frame, list[tuple[str, bytes | None]]] | None:
        """Rows matching a condition, as (phone, fragment) in file order; None without a store.

        The fragment is None for a row without a customer id; the phone is ""
        unless asked for (then the query reads the row, not only an index). Only an index in
        one file has stores: parts are merged within seconds, and rendering
        waits for that.
        """
        if self.shards:
            return None
        frame = self.fragments.frame(spec)
        if frame is None:
            return None
        conn = self._connection()
        attached: set[str] | None = getattr(self._local, "attached", None)
        if attached is None:
            attached = self._local.attached = set()
        alias = self.fragments.attach(conn, spec, attached)
        if alias is None:
            return None
        sql = self._rendered_sql.get((where, alias, with_phone))
        if sql is None:
            phone = self._phone if with_phone else "''"
            sql = (
                f"SELECT {phone}, f.body FROM main.rows JOIN {alias}.fragments AS f "
                f"ON f.id = rows.id WHERE {where} ORDER BY rows.id LIMIT ?"
            )
            self._rendered_sql[(where, alias, with_phone)] = sql
        return frame, conn.execute(sql, (*params, limit)).fetchall()

    def options(self, query: OptionsQuery, limit: int) -> list[Option]:
        """Rows as options: filter columns must be empty or equal the request's value."""
        if "value" not in self.elements or "description" not in self.elements:
            raise BackendError(
                f"{self.layout.csv_path.name} has no 'value' and 'description' "
                "columns, so it cannot fill an AJAX field"
            )
        filters = [e for e in self.elements if e not in ("value", "description")]
        needle = query.search.casefold()
        found: list[Option] = []
        for values in self._all_rows():
            row = dict(zip(self.elements, values, strict=True))
            if any(row[f] and row[f] != query.fields.get(f, "") for f in filters):
                continue
            if (
                needle
                and needle not in row["value"].casefold()
                and needle not in row["description"].casefold()
            ):
                continue
            found.append(Option(row["value"], row["description"]))
            if len(found) >= limit:
                break
        return found

    def _all_rows(self) -> Iterator[tuple[str, ...]]:
        conn = self._connection()
        for table in self._tables:
            yield from conn.execute(f"SELECT {self._columns} FROM {table} ORDER BY id")

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        # The index files are replaced when the CSV changes: a connection opened
        # by name now may find another generation than this object describes.
        try:
            conn = sqlite3.connect(_read_only(self.path), uri=True, check_same_thread=False)
            try:
                mmap = MMAP_BYTES // len(self._tables)
                conn.execute(f"PRAGMA mmap_size = {mmap}")
                for k, shard in enumerate(self.shards, start=1):
                    conn.execute(f"ATTACH DATABASE ? AS s{k}", (_read_only(shard),))
                    conn.execute(f"PRAGMA s{k}.mmap_size = {mmap}")
                (generation,) = conn.execute(
                    "SELECT value FROM meta WHERE key = 'generation'"
                ).fetchone()
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise IndexReplaced(str(exc)) from None
        if generation != self.generation:
            conn.close()
            raise IndexReplaced("another generation")
        return conn


def open_fresh_index(layout: IndexLayout) -> CsvIndex:
    """The index of the CSV as it is now, building it first when missing or stale."""
    if not layout.csv_path.is_file():
        raise BackendError(f"{layout.csv_path} does not exist")
    target = layout.index_file()
    found = _open_if_current(layout, target)
    if found is not None:
        return found
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a cache folder of its own
    lock = target.with_name(target.name + ".lock")
    while True:
        with lock_unless_held(lock) as mine:
            if mine:
                # another worker may have built it before we took the lock
                found = _open_if_current(layout, target)
                if found is None:
                    _build(layout, target)
                    found = _open_if_current(layout, target)
                break
        # Another process builds it, or merges its parts: not a wait for the lock,
        # which a merge holds for seconds (far longer at its low priority on a busy
        # machine), but for the index, which is current as soon as a build ends.
        found = _open_if_current(layout, target)
        if found is not None:
            return found
        time.sleep(LOCK_POLL)
    if found is None:
        raise BackendError(f"{layout.csv_path.name} changed while it was being indexed")
    return found


def _open_if_current(layout: IndexLayout, target: Path) -> CsvIndex | None:
    try:
        file = file_identity(target)  # before reading: a file replaced meanwhile is seen later
    except OSError:
        return None
    meta = read_meta(target)
    if meta is None:
        return None  # unreadable: build it
    current = (
        meta.get("identity") == file_identity(layout.csv_path)
        and meta.get("signature") == layout.signature()
    )
    return CsvIndex(layout, target, meta, file) if current else None


def _build(layout: IndexLayout, target: Path) -> None:
    """Build the index into new files, then put it in place atomically (lock held)."""
    from . import build as csv_build  # only builds need it: command-line lookups start faster

    # Servers keep answering from the current index until this one is in place.
    current = read_meta(target) or {}
    _remove_leftovers(
        target,
        keep=set(json.loads(current.get("shards", "[]"))),
        generation=current.get("generation", ""),
    )
    name = layout.csv_path.name
    identity = file_identity(layout.csv_path)
    generation = secrets.token_hex(6)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        header = csv_build.read_header(layout.csv_path, layout.delimiter)
        shape, elements, warnings = _shape(name, header, layout)
        count, shards = csv_build.build(
            layout.csv_path,
            layout.delimiter,
            shape,
            tmp,
            lambda k: target.with_name(f"{target.name}.{generation}.{k}"),
        )
        _write_meta(
            tmp,
            {
                "identity": identity,
                "signature": layout.signature(),
                "rows": str(count),
                "generation": generation,
                "shards": json.dumps([s.name for s in shards]),
                "elements": json.dumps(elements),
                "warnings": json.dumps(warnings),
            },
        )
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, csv_build.CsvFileError):
            raise BackendError(f"{name} {exc}") from None
        raise
    os.replace(tmp, target)
    # Readers of the previous generation keep the files they opened.
    _remove_leftovers(target, keep={s.name for s in shards})
    if shards:
        start_merge(target, generation)


def start_merge(target: Path, generation: str) -> None:
    """Merge an index built in parts into one file, in a process of its own.

    Parts let the first answer come sooner, but every lookup then searches
    each of them. The merge copies the
    rows within SQLite and indexes them again: seconds of work that must not
    die with the process that started it (a command-line lookup, a restarted
    worker). Servers notice the new file and switch to it.
    """
    subprocess.Popen(
        [sys.executable, "-m", "lookup_plugins.csv.index", "merge", str(target), generation],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def merge_parts(target: Path, generation: str) -> bool:
    """Replace index ``generation`` at ``target`` by one file; False if it is gone."""
    from . import build as csv_build

    with _exclusive(target.with_name(target.name + ".lock")):
        meta = read_meta(target)
        if meta is None or meta.get("generation") != generation:
            return False  # rebuilt or merged meanwhile
        shards = [target.with_name(n) for n in json.loads(meta["shards"])]
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            csv_build.merge([target, *shards], tmp)
            _write_meta(tmp, {**meta, "generation": secrets.token_hex(6), "shards": "[]"})
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        _remove_leftovers(target, keep=set())
    return True


def _write_meta(path: Path, meta: Mapping[str, str]) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.commit()


def _remove_leftovers(target: Path, keep: set[str], generation: str = "") -> None:
    """Temporary files of interrupted builds, shards and fragment stores of other generations.

    The stores of ``generation`` (the one servers answer from) are kept.
    """
    if not target.parent.is_dir():
        return
    for path in target.parent.iterdir():
        name = path.name
        if not name.startswith(target.name) or name in keep:
            continue
        rest = name[len(target.name) :]
        if generation and rest.startswith(f".{generation}.fragments-"):
            continue
        if _LEFTOVER.fullmatch(rest):
            path.unlink(missing_ok=True)


_LEFTOVER = re.compile(
    r"\.[0-9]+\.tmp|\.[0-9a-f]{12}\.[0-9]+"
    r"|\.[0-9a-f]{12}\.fragments-[0-9a-f]{16}(\.lock|\.[0-9]+\.tmp)?"
)


def _shape(name: str, header: list[str], layout: IndexLayout) -> tuple[Shape, list[str], list[str]]:
    """What the index stores of each row, the element names, and warnings."""
    is_options = "value" in header and "description" in header
    if layout.key_columns["customer_id"] not in header and not is_options:
        raise BackendError(
            f"{name} has neither a {layout.key_columns['customer_id']!r} column for Live "
            "Lookup nor 'value' and 'description' columns for AJAX fields (header: "
            f'{", ".join(header[:12])}); add them or map one: fields = {{ customer_id = "..." }}'
        )
    rename = {column: element for element, column in layout.fields.items()}
    columns: list[int] = []
    elements: list[str] = []
    warnings: list[str] = []
    for position, column in enumerate(header):
        element = rename.get(column, column)
        problem = element_name_problem(element)
        if problem:
            warnings.append(
                f"column {column!r} {problem}; it is not sent: rename it or map it in fields"
            )
        elif element in elements:
            warnings.append(f"column {column!r} appears twice; only the first is sent")
        else:
            columns.append(position)
            elements.append(element)
    keys = tuple(
        header.index(layout.key_columns[k]) if layout.key_columns[k] in header else None
        for k in ("customer_id", "email", "phone", "last_name", "first_name")
    )
    from .build import Shape

    shape = Shape(len(header), keys, tuple(columns))
    return shape, elements, warnings


if __name__ == "__main__":  # python -m lookup_plugins.csv.index merge TARGET GENERATION
    if sys.argv[1:2] == ["merge"] and len(sys.argv) == 4:
        # Background work: the lookups staff wait on come first.
        os.nice(10)
        merge_parts(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit("usage: python -m lookup_plugins.csv.index merge TARGET GENERATION")
