"""Building the SQLite index of a customer CSV on every core (see lookup_plugins.csv.backend).

Parsing, normalising, inserting and indexing a million rows takes seconds of
CPU. So a large file is cut at line ends into one byte range per core: this
process indexes the first range into the index file itself, and child
processes index the others into shard files that readers attach beside it.

Whether a cut falls between two records can only be known by parsing up to it
(a quoted value may span lines). So every range but the last is parsed with a
sentinel line after it, which must come out as a record of its own. When it
does not, or anything else goes wrong, the whole file is indexed again in this
process alone, which also reports errors with their exact line numbers.

Run as ``python -m lookup_plugins.csv.build`` it indexes one range described
by the JSON of its one argument: that is how the child processes start.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import chain, pairwise
from operator import itemgetter
from pathlib import Path

from lookup_server.plugin import PHONE_SUFFIX_DIGITS, phone_digits

log = logging.getLogger(__name__)
#: Ranges smaller than this are not worth a process of their own.
MIN_SHARD_BYTES = 8 * 1024 * 1024
MAX_SHARDS = 8
#: Searched keys, normalised; then one column per emitted CSV column (c0, c1, ...),
#: so that no row is encoded or decoded on the way in or out.
KEYS = ("customer_id", "email", "phone_tail", "last", "first")
# phone_tail holds a number's last PHONE_SUFFIX_DIGITS digits: a shorter number is
# its own tail, and a longer one's tail has exactly that many digits, so the
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
#: Page size of the parts of an index built in parallel, which serve lookups only
#: until they are merged: their indexes build faster than with SQLite's default
#: 4 KiB pages, which files kept for lookups use because lookups are faster on
#: them (see bench/README.md).
PART_PAGE_SIZE = 16384
#: Private-use characters no customer file holds, without quotes or delimiters.
_SENTINEL = "\ue000\ue001\ue000"


class CsvFileError(Exception):
    """The file cannot be indexed; the message says where and why."""


class _BadCut(Exception):
    """A cut fell inside a quoted value, or a child failed: index on one core instead."""


_CUT_INSIDE = "a quoted value spans a cut between parts (the sentinel was read inside it)"


@dataclass(frozen=True)
class Shape:
    """What the header says about every row: how wide, which columns feed what."""

    width: int
    #: positions of the customer_id, email, phone, last_name, first_name columns
    keys: tuple[int | None, ...]
    #: positions of the emitted columns, in order
    columns: tuple[int, ...]


@dataclass(frozen=True)
class Job:
    """One byte range of a CSV to index into one SQLite file."""

    csv_path: str
    start: int
    end: int
    output: str
    delimiter: str
    shape: Shape
    #: the range starts with the header row (it is the first)
    header: bool
    #: the range ends where the file ends (else it is checked with the sentinel)
    at_end: bool
    #: row id of the range's first row: ids grow in file order across ranges
    first_id: int = 1


def read_header(csv_path: Path, delimiter: str) -> list[str]:
    """The first record of the file: the element names."""
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), None)
    except UnicodeDecodeError:
        raise CsvFileError(_not_utf8(csv_path)) from None
    except csv.Error as exc:
        raise CsvFileError(f"line 1: {exc}") from None
    if header is None:
        raise CsvFileError("is empty: it needs a header row")
    return header


def build(
    csv_path: Path, delimiter: str, shape: Shape, output: Path, shard_path: Callable[[int], Path]
) -> tuple[int, list[Path]]:
    """Index the rows of ``csv_path`` into ``output`` and shard files beside it.

    Returns the number of rows and the shard files besides ``output`` that
    hold some of them, in file order; ``shard_path(k)`` names the k-th one.
    """
    size = csv_path.stat().st_size
    cuts = cut_points(csv_path, size, _shard_count(size))
    if len(cuts) > 2:
        try:
            return _build_in_parallel(csv_path, delimiter, shape, output, shard_path, cuts)
        except _BadCut as exc:
            log.warning("indexing %s on one core: %s", csv_path.name, exc)
            output.unlink(missing_ok=True)
    job = Job(str(csv_path), 0, size, str(output), delimiter, shape, header=True, at_end=True)
    return index_range(job), []


def _shard_count(size: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(cores, MAX_SHARDS, size // MIN_SHARD_BYTES))


def cut_points(path: Path, size: int, shards: int) -> list[int]:
    """Byte offsets 0 = c0 < c1 < ... = size, each cut just after a line end.

    Each cut is the first line end past its share of the file that follows an
    even number of quote characters: in a well-formed file, one outside any
    quoted value. Files that break the rule are caught by the sentinel.
    """
    cuts = [0]
    with open(path, "rb") as handle:
        quotes = 0
        for k in range(1, shards):
            handle.seek(cuts[-1])
            chunk = handle.read(size * k // shards - cuts[-1])
            quotes += chunk.count(b'"')
            position = cuts[-1] + len(chunk)
            while True:
                line = handle.readline()
                if not line:
                    break
                position += len(line)
                quotes += line.count(b'"')
                if quotes % 2 == 0:
                    break
            if position >= size:
                break
            cuts.append(position)
    return [*cuts, size]


def _build_in_parallel(
    csv_path: Path,
    delimiter: str,
    shape: Shape,
    output: Path,
    shard_path: Callable[[int], Path],
    cuts: list[int],
) -> tuple[int, list[Path]]:
    jobs = [
        Job(
            str(csv_path),
            start,
            end,
            str(output if k == 0 else shard_path(k)),
            delimiter,
            shape,
            header=k == 0,
            at_end=end == cuts[-1],
            first_id=(k << 40) + 1,
        )
        for k, (start, end) in enumerate(pairwise(cuts))
    ]
    shards = [Path(job.output) for job in jobs[1:]]
    # New interpreters rather than fork(): the server's threads and locks stay behind.
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "lookup_plugins.csv.build", json.dumps(asdict(job))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs[1:]
    ]
    try:
        try:
            rows = index_range(jobs[0])
        except CsvFileError as exc:  # reported with its exact line by the one-core build
            raise _BadCut(str(exc)) from None
        for child in children:
            out, err = child.communicate()
            if child.returncode != 0:
                raise _BadCut(f"a helper process failed: {err.strip()[-300:]}")
            rows += int(out)
    except BaseException:
        for child in children:
            child.kill()
            child.wait()
        for shard in shards:
            shard.unlink(missing_ok=True)
        raise
    return rows, shards


def create_index_file(path: Path, source: Path) -> None:
    """Create ``path`` empty, for SQLite to fill: readable by no one who cannot read ``source``.

    SQLite would create it 0644, so the customers of a CSV only its owner may
    read would be readable by every user. The owner (the server) must write
    it; group and others get read access only where ``source`` grants it, and
    group access only for the source's own group. A file or link already at
    ``path`` (from an interrupted build) is removed first, never written through.
    """
    found = source.stat()
    mode = 0o600 | (found.st_mode & 0o044)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # umask applies too
    try:
        if mode & 0o040 and os.fstat(descriptor).st_gid != found.st_gid:
            try:
                os.fchown(descriptor, -1, found.st_gid)
            except PermissionError:  # not a member: our group's members may not read the CSV
                os.fchmod(descriptor, mode & ~0o040)
    finally:
        os.close(descriptor)


def merge(parts: list[Path], output: Path) -> None:
    """Copy the rows of an index built in parts into one new file, and index them."""
    create_index_file(output, parts[0])  # the parts were made as private as their CSV
    conn = sqlite3.connect(output)
    try:
        conn.executescript(_FAST_BUILD)
        for k, part in enumerate(parts):
            conn.execute(f"ATTACH DATABASE ? AS p{k}", (f"{part.as_uri()}?mode=ro",))
        (schema,) = conn.execute("SELECT sql FROM p0.sqlite_master WHERE name = 'rows'").fetchone()
        conn.execute(schema)
        for k in range(len(parts)):  # ids grow across the parts: every insert appends
            conn.execute(f"INSERT INTO main.rows SELECT * FROM p{k}.rows ORDER BY id")
        conn.executescript(_INDEXES)
        conn.commit()
    finally:
        conn.close()


def index_range(job: Job) -> int:
    """Index one byte range of the CSV into a new SQLite file; the number of rows."""
    data = [f"c{i}" for i in range(len(job.shape.columns))]
    create_index_file(Path(job.output), Path(job.csv_path))
    conn = sqlite3.connect(job.output)
    try:
        conn.executescript(_FAST_BUILD)  # a throw-away file until it is complete: no journal
        if not (job.start == 0 and job.at_end):
            conn.execute(f"PRAGMA page_size = {PART_PAGE_SIZE}")
        conn.execute(
            f"CREATE TABLE rows (id INTEGER PRIMARY KEY, {', '.join(KEYS)}, {', '.join(data)})"
        )
        with open(job.csv_path, "rb") as raw:
            text = io.TextIOWrapper(
                io.BufferedReader(_ByteRange(raw, job.start, job.end), 1 << 16),
                encoding="utf-8-sig" if job.start == 0 else "utf-8",
                newline="",
            )
            reader = csv.reader(
                text if job.at_end else chain(text, [_SENTINEL + "\n"]), delimiter=job.delimiter
            )
            # SQLite numbers rows one past the largest id: a placeholder row makes
            # this range's ids start at first_id (one value fewer to pass a row)
            conn.execute("INSERT INTO rows (id) VALUES (?)", (job.first_id - 1,))
            try:
                if job.header:
                    next(reader, None)
                conn.executemany(
                    f"INSERT INTO rows ({', '.join(KEYS)}, {', '.join(data)}) "
                    f"VALUES ({', '.join('?' * (len(KEYS) + len(data)))})",
                    _index_rows(reader, job.shape, sentinel=not job.at_end),
                )
            except UnicodeDecodeError:
                raise CsvFileError(_not_utf8(Path(job.csv_path))) from None
            except csv.Error as exc:
                raise CsvFileError(f"line {reader.line_num}: {exc}") from None
        conn.execute("DELETE FROM rows WHERE id = ?", (job.first_id - 1,))
        conn.executescript(_INDEXES)
        (count,) = conn.execute("SELECT count(*) FROM rows").fetchone()
        conn.commit()
    finally:
        conn.close()
    return int(count)


class _ByteRange(io.RawIOBase):
    """The bytes of ``handle`` from ``start`` to ``end``, as a file of their own."""

    def __init__(self, handle: io.BufferedReader, start: int, end: int) -> None:
        super().__init__()
        handle.seek(start)
        self._handle, self._left = handle, end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        count = self._handle.readinto(view)
        self._left -= count
        return count


def _index_rows(
    reader: Iterator[list[str]], shape: Shape, sentinel: bool
) -> Iterator[tuple[str, ...]]:
    """Each CSV row as the index stores it: normalised keys, then the emitted columns.

    This runs for every row of files with millions of them, hence the shortcuts:
    rows of the header's width take the fast path; others are padded or cut.
    SQLite numbers the rows (see index_range), and when every column is sent,
    in order, the row itself follows the keys (no per-column picking).
    Normalising a row at a time beats a column at a time with ``map``.
    With ``sentinel``, the last record must be the sentinel, and is dropped.
    """
    width, tail = shape.width, -PHONE_SUFFIX_DIGITS
    # a key column the file lacks reads an empty cell appended to the row
    padded = None in shape.keys
    get_keys = itemgetter(*[width if k is None else k for k in shape.keys])
    whole = not padded and shape.columns == tuple(range(width))
    get_columns = _picker(list(shape.columns))
    seen = False
    for row in reader:
        if seen:
            raise _BadCut(_CUT_INSIDE)
        if len(row) != width or row[0] == _SENTINEL:
            if sentinel and row == [_SENTINEL]:
                seen = True
                continue
            row = (row + [""] * width)[:width]
        if padded:
            row.append("")
        cid, email, phone, last, first = get_keys(row)
        yield (
            cid.strip(),
            email.strip().casefold(),
            phone_digits(phone)[tail:],
            last.strip().casefold(),
            first.strip().casefold(),
            *(row if whole else get_columns(row)),
        )
    if sentinel and not seen:
        raise _BadCut(_CUT_INSIDE)


def _picker(positions: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """Like itemgetter(*positions), but always returning a tuple (even of 0 or 1)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    return lambda row: tuple(row[i] for i in positions)


def _not_utf8(path: Path) -> str:
    # the text layer decodes in large chunks, so the csv reader's line count is not it
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return f"line {number}: not UTF-8 text; save the file as UTF-8"
    return "not UTF-8 text; save the file as UTF-8"


def _child_main(argument: str) -> None:
    data = json.loads(argument)
    shape = data.pop("shape")
    job = Job(**data, shape=Shape(shape["width"], tuple(shape["keys"]), tuple(shape["columns"])))
    try:
        print(index_range(job))
    except (CsvFileError, _BadCut, OSError, sqlite3.Error) as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _child_main(sys.argv[1])
