"""Every customer's ``<customer>`` fragment, rendered ahead of time into a file beside the index.

A lookup answered from fragments is one indexed query that returns finished
bytes (see lookup_server.core.fragments): no per-field work and no XML
library per lookup. Fragments depend on the source's settings as well as
on the rows, so each set of settings (:attr:`FragmentSpec.key`) has a store
of its own, a SQLite file named after the index generation and the key.
Rendering a million rows takes seconds, so it runs in a background process
of its own, started by the first lookup that finds no store; lookups are
answered by the renderer meanwhile, with the same bytes. A new generation of
the index (the CSV changed, its parts were merged) starts without stores.

Run as ``python -m lookup_plugins.csv.fragments INDEX GENERATION SPEC`` it
renders one store: that is how the background process starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lookup_server.plugin import FragmentSpec, Frame, fragment_renderer

from ..index_files import exclusive_lock, lock_unless_held, read_meta, read_only_uri

#: How often an index looks again for a store it did not find.
CHECK_INTERVAL = 1.0
#: Page cache of each connection for each fragment store it attached.
STORE_CACHE_KIB = 1024
#: Fragment stores one connection attaches at most (one per audience and settings in use).
MAX_STORES = 6


def store_path(index: Path, generation: str, key: str) -> Path:
    """The fragment store of index ``generation`` for the spec whose key is ``key``."""
    return index.with_name(f"{index.name}.{generation}.fragments-{key}")


def read_frame(store: Path) -> Frame | None:
    """The document frame kept in a finished store; None when there is none (yet)."""
    meta = read_meta(store)
    return None if meta is None else Frame(meta["head"], meta["tail"], meta["empty"])


class FragmentStores:
    """The stores of one open index generation: which exist, and which are being rendered."""

    def __init__(self, index: Path, generation: str) -> None:
        self.index, self.generation = index, generation
        self._frames: dict[str, Frame] = {}
        self._missing_at: dict[str, float] = {}
        self._started: set[str] = set()

    def frame(self, spec: FragmentSpec) -> Frame | None:
        """The frame of ``spec``'s store; None (and its rendering started) when it is missing."""
        frame = self._frames.get(spec.key)
        if frame is not None:
            return frame
        now = time.monotonic()
        if now - self._missing_at.get(spec.key, -CHECK_INTERVAL) < CHECK_INTERVAL:
            return None
        frame = read_frame(store_path(self.index, self.generation, spec.key))
        if frame is None:
            self._missing_at[spec.key] = now
            if spec.key not in self._started:
                self._started.add(spec.key)
                start_rendering(self.index, self.generation, spec)
            return None
        self._frames[spec.key] = frame
        return frame

    def attach(
        self, conn: sqlite3.Connection, spec: FragmentSpec, attached: set[str]
    ) -> str | None:
        """The schema name of ``spec``'s store in ``conn``, attached if need be; None if it cannot.

        ``attached`` holds the names this connection has attached so far.
        """
        alias = f"f_{spec.key}"
        if alias in attached:
            return alias
        if len(attached) >= MAX_STORES:  # SQLite attaches at most ten files
            return None
        try:
            store = store_path(self.index, self.generation, spec.key)
            conn.execute(f"ATTACH DATABASE ? AS {alias}", (read_only_uri(store),))
            # Read, not mapped: each thread's connection maps a file anew, and
            # every mapping counts in the worker's RSS (see bench/README.md). A
            # lookup reads one leaf page; the cache keeps the tree above it.
            conn.execute(f"PRAGMA {alias}.mmap_size = 0")
            conn.execute(f"PRAGMA {alias}.cache_size = -{STORE_CACHE_KIB}")
        except sqlite3.Error:
            # gone (a rebuild removed it): look for it afresh
            self._frames.pop(spec.key, None)
            self._missing_at[spec.key] = time.monotonic()
            return None
        attached.add(alias)
        return alias


def render_lock(store: Path) -> Path:
    """The lock its renderer holds while it renders ``store``."""
    return store.with_name(store.name + ".lock")


def start_rendering(index: Path, generation: str, spec: FragmentSpec) -> None:
    """Render ``spec``'s store in a process of its own, which outlives a command-line lookup.

    Not while another process renders it: on the command line every lookup is
    a new process, and each would start an interpreter only to find the lock held.
    """
    with lock_unless_held(render_lock(store_path(index, generation, spec.key))) as free:
        if not free:
            return
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookup_plugins.csv.fragments",
            str(index),
            generation,
            spec.to_json(),
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def render_store(index: Path, generation: str, spec: FragmentSpec) -> bool:
    """Render every row of index ``generation`` for ``spec``; False when that was not needed.

    One render of a store at a time (others asking for it give up), and one
    store at a time per index: they compete for the same cores as lookups.
    """
    store = store_path(index, generation, spec.key)
    with lock_unless_held(render_lock(store)) as mine:
        if not mine:
            return False  # another process renders this store
        with exclusive_lock(index.with_name(index.name + ".fragments.lock")):
            if read_frame(store) is not None or _generation(index) != generation:
                return False
            tmp = store.with_name(f"{store.name}.{os.getpid()}.tmp")
            try:
                _render_into(tmp, index, spec)
                if _generation(index) != generation:
                    return False  # the index was replaced meanwhile: nobody reads this one
                os.replace(tmp, store)
            finally:
                tmp.unlink(missing_ok=True)
    return True


def _generation(index: Path) -> str | None:
    generation = (read_meta(index) or {}).get("generation")
    return None if generation is None else str(generation)


def _render_into(output: Path, index: Path, spec: FragmentSpec) -> None:
    from .build import create_index_file  # not on the lookups' path

    frame, render = fragment_renderer(spec)
    create_index_file(output, index)  # as private as the index, so as the CSV
    with contextlib.closing(sqlite3.connect(read_only_uri(index), uri=True)) as source:
        (elements_json,) = source.execute(
            "SELECT value FROM meta WHERE key = 'elements'"
        ).fetchone()
        elements: list[str] = json.loads(elements_json)
        columns = ", ".join(["id", *(f"c{i}" for i in range(len(elements)))])
        rows = source.execute(f"SELECT {columns} FROM rows ORDER BY id")
        conn = sqlite3.connect(output)
        try:
            conn.executescript(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                "CREATE TABLE fragments (id INTEGER PRIMARY KEY, body BLOB);"
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
            )
            conn.executemany(
                "INSERT INTO fragments VALUES (?, ?)", _fragments(rows, elements, render)
            )
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("head", frame.head),
                    ("tail", frame.tail),
                    ("empty", frame.empty),
                    ("spec", spec.to_json()),
                ],
            )
            conn.commit()
        finally:
            conn.close()


def _fragments(
    rows: Iterable[tuple[Any, ...]],
    elements: list[str],
    render: Callable[[Mapping[str, str]], bytes],
) -> Iterator[tuple[int | str, bytes | None]]:
    """Each row's id and fragment; None for a row without a customer id, which no search finds.

    The fields are built as CsvIndex.query builds them, so the renderer sees
    the same mapping, in the same order, as for a lookup.
    """
    for row in rows:
        fields: dict[str, str] = dict(zip(elements, row[1:], strict=True))
        yield row[0], render(fields) if fields.get("customer_id") else None


if __name__ == "__main__":  # python -m lookup_plugins.csv.fragments INDEX GENERATION SPEC
    if len(sys.argv) != 4:
        sys.exit("usage: python -m lookup_plugins.csv.fragments INDEX GENERATION SPEC")
    os.nice(10)  # background work: the lookups staff wait on come first
    render_store(Path(sys.argv[1]), sys.argv[2], FragmentSpec.from_json(sys.argv[3]))
