"""A real PostgreSQL for the tests, each test in a schema of its own, dropped afterwards.

Without a server the test skips with the reason (under ``CI=true`` it fails).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.requirements import need

#: The PostgreSQL the tests use (trust auth); LOOKUP_TEST_POSTGRES names another.
POSTGRES = os.environ.get("LOOKUP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def schema_of_its_own(prefix: str) -> Iterator[str]:
    """A URL whose search_path is a new schema ``PREFIX_...``, dropped when the block ends."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except Exception as exc:  # not installed, or no server
        need(False, f"PostgreSQL at {POSTGRES} is not reachable ({type(exc).__name__}: {exc})")
        raise
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())
        admin.close()


#: Both outboxes, for ``pytest.mark.parametrize`` or a fixture's params.
OUTBOX_KINDS = ("sqlite", "postgres")


@contextmanager
def outbox_of_kind(kind: str, folder: Path) -> Iterator[str]:
    """``[server] outbox`` for a test: a SQLite file in ``folder``, or a PostgreSQL schema."""
    if kind == "sqlite":
        yield str(folder / "outbox.sqlite3")
        return
    with schema_of_its_own("outbox_test") as url:
        yield url
