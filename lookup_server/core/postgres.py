"""A PostgreSQL database a plugin keeps its records in, so that every server sees them.

A target's ``store = "postgresql://..."`` (the URL form of ``[server] outbox``)
puts its records there instead of in a file of one host. This is the plumbing
such a store needs and no plugin should write again: psycopg imported only when
used, a pool of connections per process (made again after a fork: the parent's
belong to the parent), the plugin's tables created once per process under an
advisory lock (servers starting together would otherwise race on the catalog),
and every database error a :class:`~lookup_server.core.backend.BackendError`
naming the database without its password.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from lookup_server.core.backend import BackendError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

#: Seconds a caller waits for a pooled connection before the call fails.
POOL_TIMEOUT = 10.0
#: Serialises the creation of plugins' tables across servers starting together.
_CREATE_LOCK = 0x6C6F6F6B7570_01  # "lookup", plugins' tables


def safe_url(url: str) -> str:
    """The connection URL as it may be shown: no password, no query (it may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PostgresDatabase:
    """One database holding a plugin's tables; a pool of connections per process.

    ``schema`` is the statements that create the tables (``CREATE TABLE IF NOT
    EXISTS ...``), run once per process before the first use; ``what`` names the
    records in errors ("the push record"). Nothing connects before the first use.
    """

    def __init__(
        self,
        url: str,
        schema: Sequence[str],
        what: str,
        *,
        max_connections: int = 2,
        timeout: float = POOL_TIMEOUT,
    ) -> None:
        self.url = url
        #: Seconds a call waits for a connection (the database down: then it fails).
        self.timeout = timeout
        self.schema = tuple(schema)
        self.what = what
        self.max_connections = max_connections
        self._pool: ConnectionPool[Any] | None = None
        self._pid = 0
        self._ready = False
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """The records and their database for messages (never the password)."""
        return f"{self.what} {safe_url(self.url)}"

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in one transaction, committed when the block ends without error."""
        with self._guarded():
            pool = self._connections()
            with pool.connection() as conn:
                if not self._ready:
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                        for statement in self.schema:
                            conn.execute(statement.encode())  # the plugin's own SQL
                    self._ready = True
                with conn.transaction():
                    yield conn

    def close(self) -> None:
        """Close this process's pool (another use opens a new one)."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None

    def _connections(self) -> ConnectionPool[Any]:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise BackendError(
                f"{self.what} is kept in PostgreSQL, but psycopg is not installed ({exc}); "
                "pip install 'lookup-server[postgres]'"
            ) from None
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ConnectionPool(
                    self.url,
                    min_size=0,
                    max_size=self.max_connections,
                    kwargs={"autocommit": True},
                    check=ConnectionPool.check_connection,
                    timeout=self.timeout,
                    open=True,
                    name="plugin-records",
                )
                self._pid = os.getpid()
            return self._pool

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Database and pool errors as a BackendError saying what to do."""
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            module = type(exc).__module__
            if not (isinstance(exc, OSError) or module.startswith(("psycopg", "psycopg_pool"))):
                raise
            self._ready = False  # the database may have been replaced: create the tables again
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise BackendError(
                f"cannot use {self.description} ({detail}); check the target's store, that "
                "PostgreSQL is up and that its user may create tables there"
            ) from None
