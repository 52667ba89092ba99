"""The one connection pool every pooling backend shares (LDAP and ODBC today)."""

from __future__ import annotations

import itertools
import os
import time

import pytest

from lookup_server.core.pool import ConnectionPool


class Connections:
    """Numbered fake connections that remember which were closed and pinged."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self.closed: list[int] = []
        self.pinged: list[int] = []
        self.healthy = True

    def connect(self) -> int:
        return next(self._numbers)

    def close(self, conn: int) -> None:
        self.closed.append(conn)

    def ping(self, conn: int) -> bool:
        self.pinged.append(conn)
        return self.healthy

    def pool(self, size: int = 2, **kw: float) -> ConnectionPool[int]:
        return ConnectionPool(self.connect, self.close, size, ping=self.ping, **kw)


def test_a_connection_given_back_is_reused_and_the_newest_first() -> None:
    conns = Connections()
    pool = conns.pool()
    first, second = pool.take(), pool.take()
    assert (first, second) == ((1, False), (2, False))
    pool.give_back(1)
    pool.give_back(2)
    assert pool.take() == (2, True)
    assert pool.opened == 2 and conns.closed == []


def test_past_size_a_returned_connection_is_closed() -> None:
    conns = Connections()
    pool = conns.pool(size=1)
    a, _ = pool.take()
    b, _ = pool.take()
    pool.give_back(a)
    pool.give_back(b)
    assert pool.idle() == [a] and conns.closed == [b]


def test_a_connection_idle_past_ping_after_is_pinged_and_replaced_when_dead() -> None:
    conns = Connections()
    pool = conns.pool(ping_after=0.0)
    conn, _ = pool.take()
    pool.give_back(conn)
    conns.healthy = False
    assert pool.take() == (2, False)
    assert conns.pinged == [1] and conns.closed == [1]


def test_a_recently_used_connection_is_not_pinged() -> None:
    conns = Connections()
    pool = conns.pool(ping_after=60.0)
    conn, _ = pool.take()
    pool.give_back(conn)
    assert pool.take() == (1, True)
    assert conns.pinged == []


def test_a_connection_idle_past_max_idle_is_closed_not_handed_out() -> None:
    conns = Connections()
    pool = conns.pool(max_idle=0.01)
    conn, _ = pool.take()
    pool.give_back(conn)
    time.sleep(0.05)
    assert pool.take() == (2, False)
    assert conns.closed == [1] and conns.pinged == []


def test_flush_closes_every_idle_connection() -> None:
    conns = Connections()
    pool = conns.pool()
    taken = [pool.take()[0] for _ in range(2)]
    for conn in taken:
        pool.give_back(conn)
    pool.flush()
    assert pool.idle() == [] and sorted(conns.closed) == [1, 2]


def test_after_a_fork_the_parents_connections_are_forgotten_not_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gunicorn --preload: a child that closed (or used) its parent's sockets would
    # break the parent's lookups, or read another process's answers.
    conns = Connections()
    pool = conns.pool()
    conn, _ = pool.take()
    pool.give_back(conn)
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)
    assert pool.idle() == []
    assert pool.take() == (2, False)
    pool.flush()
    assert conns.closed == [] and pool.opened == 1
