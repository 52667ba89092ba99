"""One pool of open connections for every backend that keeps them between calls.

Opening a connection (TCP, TLS, a bind or a login) costs more than most
lookups, so a backend keeps a few open; each is used by one thread at a time.
After a fork (gunicorn's ``--preload``) the parent's connections belong to the
parent: the child forgets them without closing them, and opens its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class ConnectionPool(Generic[C]):
    """Idle connections for re-use, at most ``size`` of them, per process.

    ``ping(conn)`` (when given) vouches for a connection idle for
    ``ping_after`` seconds or more before it is handed out again; a connection
    idle for longer than ``max_idle`` is closed instead (a firewall may have
    dropped it silently, and using it would hang until the timeout).
    """

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        size: int,
        *,
        ping: Callable[[C], bool] | None = None,
        ping_after: float = 0.0,
        max_idle: float | None = None,
    ) -> None:
        self._connect, self._close, self._size = connect, close, size
        self._ping, self.ping_after, self.max_idle = ping, ping_after, max_idle
        self._idle: list[tuple[C, float]] = []  # (connection, when it was given back)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: Connections opened so far in this process.
        self.opened = 0

    def take(self) -> tuple[C, bool]:
        """An idle connection (True: it was re-used) or a newly opened one (False)."""
        now = time.monotonic()
        with self._lock:
            self._forget_if_forked()
            stale = [c for c, used in self._idle if self._too_old(now - used)]
            self._idle = [(c, used) for c, used in self._idle if not self._too_old(now - used)]
            item = self._idle.pop() if self._idle else None
        for conn in stale:
            self._close(conn)
        if item is not None:
            conn, used = item
            if self._ping is None or now - used < self.ping_after or self._ping(conn):
                return conn, True
            self._close(conn)
        conn = self._connect()
        with self._lock:
            self.opened += 1
        return conn, False

    def give_back(self, conn: C) -> None:
        """Keep a healthy ``conn`` for the next call, or close it when enough are idle."""
        with self._lock:
            self._forget_if_forked()
            if len(self._idle) < self._size:
                self._idle.append((conn, time.monotonic()))
                return
        self._close(conn)

    def flush(self) -> None:
        """Close every idle connection (the server went away, or the backend closes)."""
        with self._lock:
            self._forget_if_forked()
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._close(conn)

    def idle(self) -> list[C]:
        """The idle connections, most recently used last."""
        with self._lock:
            self._forget_if_forked()
            return [conn for conn, _ in self._idle]

    def _too_old(self, idle_for: float) -> bool:
        return self.max_idle is not None and idle_for > self.max_idle

    def _forget_if_forked(self) -> None:
        # Forked: the parent's sockets are not ours to use or to close.
        if self._pid != os.getpid():
            self._idle, self._pid, self.opened = [], os.getpid(), 0
