"""Fixtures for the outbox: real SQLite files (fresh, damaged, or out of reach) and a real
PostgreSQL, each test in a schema of its own.

``make_outbox`` and ``outbox_location`` run a test against both stores; a test
marked ``sqlite_only`` runs against SQLite alone.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lookup_server.plugin import Webhook
from lookup_server.webhooks import Outbox, OutboxEntry, WebhookOutbox, open_outbox
from tests.support.postgres import schema_of_its_own

T0 = 1_800_000_000.0
DAY = 86400.0
#: Guards against a hang only; a passing test never waits this long.
HANG_GUARD = 30.0
PAYLOAD = {
    "xRequest": "12345",
    "sTitle": "Printer on fire",
    "request_history": {"678": {"tNote": "<p>Hi</p>"}},
    "files": ["a", "b"],
}
#: chmod does not stop root from writing: those variants need another way.
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


STORES = ("sqlite", "postgres")
#: Runs a test that reads the SQLite file itself against that store only.
sqlite_only = pytest.mark.parametrize("store_kind", ["sqlite"])

MakeOutbox = Callable[..., WebhookOutbox]


@pytest.fixture
def outbox(path: Path) -> Outbox:
    return Outbox(path, rng=random.Random(1))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a new schema of its own, dropped afterwards."""
    with schema_of_its_own("outbox_test") as url:
        yield url


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def outbox_location(request: pytest.FixtureRequest, store_kind: str, path: Path) -> str | Path:
    """Where the outbox under test is: the SQLite file, or the PostgreSQL URL."""
    if store_kind == "sqlite":
        return path
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_outbox(outbox_location: str | Path) -> Iterator[MakeOutbox]:
    """Opens the outbox under test, as a new process would (options as for Outbox)."""
    made: list[WebhookOutbox] = []

    def make(**options: object) -> WebhookOutbox:
        box = open_outbox(outbox_location, **options)  # type: ignore[arg-type]
        made.append(box)
        return box

    yield make
    for box in made:
        close = getattr(box, "close", None)
        if close is not None:
            close()


@pytest.fixture
def any_outbox(make_outbox: MakeOutbox) -> WebhookOutbox:
    """The outbox under test, of either store."""
    return make_outbox(rng=random.Random(1))


def stored_entry(outbox: WebhookOutbox, entry_id: int) -> OutboxEntry:
    """The outbox entry with this id, which the test knows is there."""
    entry = outbox.get(entry_id)
    assert entry is not None, f"webhook {entry_id} is not in the outbox"
    return entry


def under_a_file(tmp_path: Path) -> Path:
    """An outbox path whose folder is a regular file: unusable, even to root."""
    (tmp_path / "a-file").write_text("x\n")
    return tmp_path / "a-file" / "outbox.sqlite3"


def corrupt_header(path: Path) -> bytes:
    """Overwrite the file's SQLite header (its first 16 bytes); return what was there."""
    with open(path, "r+b") as handle:
        original = handle.read(16)
        handle.seek(0)
        handle.write(b"this is no db!!\0")
    return original


def restore_header(path: Path, original: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(original)


def corrupt_pages(path: Path, first_page: int = 2) -> None:
    """Overwrite every page from ``first_page`` on (1-based) with junk; the header survives."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = path.stat().st_size
    assert size > first_page * page_size, "not enough pages to damage"
    with open(path, "r+b") as handle:
        handle.seek((first_page - 1) * page_size)
        handle.write(b"\xa5" * (size - (first_page - 1) * page_size))


class Fixed(random.Random):
    """A "random" source whose uniform() always returns the same end of the range."""

    def __init__(self, where: float) -> None:
        super().__init__(0)
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.where


class Recorder:
    """A deliver callable that records calls and fails on request."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.calls: list[tuple[str, Webhook]] = []
        self.failures = list(failures or [])
        self.called = threading.Event()

    def __call__(self, target: str, webhook: Webhook) -> None:
        self.calls.append((target, webhook))
        self.called.set()
        if self.failures:
            raise self.failures.pop(0)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(condition: Callable[[], bool], timeout: float = HANG_GUARD) -> None:
    """Poll until ``condition()`` holds; fail after ``timeout`` (a hang guard, not a limit)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
