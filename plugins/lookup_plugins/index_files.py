"""Local SQLite index files: written aside, swapped in atomically, read without locks.

What the CSV backend's index and the Thermostat source's response index share.
An index file is never changed once in place: a new one is written under a
temporary name, then ``os.replace``s it, and readers keep the file they
opened. So readers open it immutable (no locks, no change checks), can never
see it half-written, and notice a newer file by its identity. Writers take a
file lock beside the index, so that one process builds at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def file_identity(path: Path) -> str:
    """Changes whenever the file is rewritten or replaced."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def read_only_uri(path: Path) -> str:
    """The URI that opens an index file for reading, without locks.

    Index files never change once in place (a rebuild replaces them), so
    SQLite may treat them as immutable and skip the file locks and change
    checks of every query: seven system calls a lookup.
    """
    return f"{path.as_uri()}?mode=ro&immutable=1"


def read_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta`` table of an index or fragment store, read-only; None when it cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(path), uri=True)) as conn:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return None


def _lock_file(lock_path: Path) -> int:
    # the server's only: anyone who could open it could hold the lock and stall rebuilds
    return os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold the lock at ``lock_path`` for the block, waiting for it as long as it takes."""
    fd = _lock_file(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock_unless_held(lock_path: Path) -> Iterator[bool]:
    """Hold the lock for the block if nobody else does; yields whether it is held."""
    fd = _lock_file(lock_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
