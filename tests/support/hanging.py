"""Servers that hang on purpose, and what the tests check once they have.

:class:`DrippingServer` is a real TCP server on loopback: while ``dripping``,
a connection gets a start (an HTTP status line, an LDAP message header) and
then one byte per ``interval`` forever, so no per-read timeout ever fires;
otherwise it relays to the real server behind it. :func:`hang_every_slot`
fills every slot of a source with calls that time out against it and waits,
bounded, until the source has its threads back.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

from lookup_server.config.settings import SourceConfig, TargetConfig
from lookup_server.plugin import SourceBackend, TargetBackend
from lookup_server.runtime.service import MAX_IN_FLIGHT, Plugged, Source, Target, TimedOut

#: Bound of every wait for a hung call to come back (generous: a failure, not a speed test).
RELEASE_WAIT = 30.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = RELEASE_WAIT) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout:g} s: {what}")
        time.sleep(0.02)


class DrippingServer:
    """Drips ``start`` and then ``drip`` once per ``interval``; or relays to ``upstream``."""

    def __init__(
        self,
        start: bytes,
        drip: bytes = b" ",
        interval: float = 1.0,
        upstream: tuple[str, int] | None = None,
    ) -> None:
        self.start, self.drip, self.interval, self.upstream = start, drip, interval, upstream
        #: New connections drip; relayed ones start dripping as soon as this is set.
        self.dripping = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def open_connections(self) -> int:
        """Client connections the client has not closed yet."""
        with self._lock:
            return self._open

    def __enter__(self) -> DrippingServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # closing it would not wake a blocked accept()
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._open += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                if self.dripping or self.upstream is None or self._relay(conn):
                    self._drip(conn)
        finally:
            with self._lock:
                self._open -= 1

    def _drip(self, conn: socket.socket) -> None:
        with suppress(OSError):
            conn.sendall(self.start)
            while not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], self.interval)
                if readable:
                    if not conn.recv(65536):
                        return  # the client hung up: what the tests wait for
                    continue  # a request: never answered
                conn.sendall(self.drip)

    def _relay(self, conn: socket.socket) -> bool:
        """Relay until either side closes (False), or until ``dripping`` is set (True)."""
        assert self.upstream is not None
        with socket.create_connection(self.upstream) as upstream, suppress(OSError):
            while not self._stop.is_set():
                if self.dripping:
                    return True
                readable, _, _ = select.select([conn, upstream], [], [], 0.05)
                for side in readable:
                    data = side.recv(65536)
                    if not data:
                        return False
                    (upstream if side is conn else conn).sendall(data)
        return False


@contextmanager
def dripping(
    start: bytes, drip: bytes = b" ", interval: float = 1.0, upstream: tuple[str, int] | None = None
) -> Iterator[DrippingServer]:
    """A started :class:`DrippingServer`, stopped after the block."""
    with DrippingServer(start, drip, interval, upstream) as server:
        yield server


#: An HTTP answer that never finishes its headers.
HTTP_HEADERS_DRIP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Drip: "
#: An HTTP answer whose JSON body never ends (whitespace is valid JSON padding).
HTTP_BODY_DRIP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
)


class DrippingApp:
    """WSGI middleware: while ``dripping``, every answer is a JSON body that never ends.

    For HTTPS, where the drip must come inside TLS: Python bounds a whole TLS
    handshake by the socket timeout, but not a body sent one record at a time.
    """

    def __init__(self, app: Any, interval: float = 1.0) -> None:
        self.app, self.interval = app, interval
        self.dripping = True
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def open_connections(self) -> int:
        """Answers still dripping: their client has not hung up yet."""
        with self._lock:
            return self._open

    def stop(self) -> None:
        """End every drip (the server can then shut down)."""
        self._stop.set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not self.dripping:
            return self.app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/json")])
        return self._drip()

    def _drip(self) -> Iterator[bytes]:
        with self._lock:
            self._open += 1
        try:
            while not self._stop.wait(self.interval):
                yield b" "  # the server's write fails once the client has hung up
        finally:
            with self._lock:
                self._open -= 1


def as_source(backend: SourceBackend[Any]) -> Source:
    """A source built like ``backend``, run as the server runs it (workers, deadline)."""
    return Source(SourceConfig(backend.source, type(backend), backend.options))


def as_target(backend: TargetBackend[Any]) -> Target:
    """A target built like ``backend``, run as the server runs it (workers, deadline)."""
    return Target(TargetConfig(backend.target, type(backend), backend.options))


def hang_every_slot(plugged: Plugged[Any], call: Callable[[], object]) -> None:
    """Time out ``call`` in every slot of the source at once; wait until all come back.

    Coming back means: no call holds a slot, and the process has no more threads
    than before besides the source's idle workers (no stuck call, no abort still
    running, no server thread still serving a connection the client let go).
    """
    runner = plugged._runner
    assert runner is not None, "only backends that wait on a network run on workers"
    others = threading.active_count() - runner.threads

    def timed_out(_: int) -> bool:
        try:
            call()
        except TimedOut:
            return True
        return False

    with ThreadPoolExecutor(MAX_IN_FLIGHT) as pool:
        assert all(pool.map(timed_out, range(MAX_IN_FLIGHT)))
    wait_for(lambda: runner.in_flight == 0, "every timed-out call has returned its slot")
    # at most: a relay thread of a connection opened before may have ended with it
    wait_for(
        lambda: threading.active_count() - runner.threads <= others,
        "no thread is left besides the source's idle workers",
    )
    assert runner.threads <= MAX_IN_FLIGHT
