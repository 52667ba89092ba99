"""Calls into a backend that the core can end when their timeout passes.

A call that outlives its source's or target's ``timeout`` is answered with an
error at once, but its thread is still blocked in the backend. So a backend
wraps each blocking step in :func:`abort_on_timeout` with a way to end it from
another thread (shut the socket down, cancel the statement); the core calls
that when the timeout passes, and the thread comes back.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from lookup_server.core.backend import BackendTimeout

log = logging.getLogger(__name__)


class RunningCall:
    """One backend call on a core worker thread, and how to abort it.

    The backend registers abort hooks while it blocks (:func:`abort_on_timeout`);
    the core runs them, from another thread, when the source's timeout passes.
    Hooks run under the same lock that unregisters them, so a hook never acts on
    a socket or statement its block has already handed back to a pool.
    """

    _local = threading.local()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self._aborted = False
        self._reported = False

    @classmethod
    def current(cls) -> RunningCall | None:
        """The call running on this thread, or None outside the core's workers."""
        call: RunningCall | None = getattr(cls._local, "call", None)
        return call

    @property
    def aborted(self) -> bool:
        """True once the core has given up waiting for this call."""
        return self._aborted

    @contextmanager
    def bound(self) -> Iterator[None]:
        """Make this the current call of this thread for the block."""
        previous, RunningCall._local.call = RunningCall.current(), self
        try:
            yield
        finally:
            RunningCall._local.call = previous

    @contextmanager
    def hooked(self, abort: Callable[[], None]) -> Iterator[None]:
        """Run ``abort`` if the call is aborted during the block; refuse to start once it was."""
        with self._lock:
            if self._aborted:
                # the caller has had its answer: starting more work would only hold the thread
                raise BackendTimeout("the source's timeout has passed")
            self._hooks.append(abort)
        try:
            yield
        finally:
            with self._lock:
                self._hooks.remove(abort)

    def abort(self) -> None:
        """Mark the call aborted and run every hook registered now (again, if called again)."""
        with self._lock:
            self._aborted = True
            for hook in self._hooks:
                try:
                    hook()
                except Exception:  # the next attempt, or the core's warning, follows
                    if not self._reported:
                        self._reported = True
                        log.warning("aborting a backend call failed", exc_info=True)


@contextmanager
def abort_on_timeout(abort: Callable[[], None]) -> Iterator[None]:
    """While the block runs, the core calls ``abort()`` from another thread if the timeout passes.

    ``abort`` must make what blocks in the block return soon (shut its socket
    down, cancel its statement) without waiting for this thread; it may be
    called more than once. Entering the block after the timeout has passed
    raises BackendTimeout. Outside the core's worker threads (tests, scripts)
    nothing is ever aborted.
    """
    call = RunningCall.current()
    if call is None:
        yield
        return
    with call.hooked(abort):
        yield


def timed_out() -> bool:
    """True once the core has given up on the current call: its source's timeout passed."""
    call = RunningCall.current()
    return call is not None and call.aborted


def shut_down(sock: socket.socket | None) -> None:
    """End ``sock``'s connection from any thread: a read blocked on it returns at once.

    Only shuts down (the owner still closes, so the descriptor cannot be reused
    under it) and bypasses a TLS wrapper's own shutdown, which would pull the TLS
    state from under the thread reading it.
    """
    if sock is None:
        return
    with suppress(OSError):  # already closed: nothing blocks on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


#: The WSGI environ key of a list of callables that the server calls once a
#: call's answer is written to the socket (lookup-server's gunicorn worker,
#: web/worker.py); where it is missing, a call ends when the app returns.
ANSWERED = "lookup_server.answered"


class CallsInFlight:
    """How many calls this process is answering, for background work that gives way to them.

    HelpSpot waits for every answer, a webhook's accept included (it has no read
    timeout), while a webhook's delivery can wait a few milliseconds without
    anyone noticing. So the delivery worker starts its next delivery when no
    call is being answered, or after ``at_most`` seconds at the latest, so that
    a server that is never idle still delivers (bench/bench_outbox.py).
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def started(self) -> None:
        """A call began."""
        with self._idle:
            self._count += 1

    def ended(self) -> None:
        """A call that began has been answered."""
        with self._idle:
            self._count -= 1
            if self._count <= 0:
                self._idle.notify_all()

    @property
    def count(self) -> int:
        """The calls being answered now."""
        return self._count

    def wait_until_idle(self, at_most: float) -> None:
        """Return when no call is being answered, or after ``at_most`` seconds."""
        with self._idle:
            self._idle.wait_for(lambda: self._count <= 0, timeout=at_most)
