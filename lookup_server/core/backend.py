"""The contract between lookup-server and its backend plugins.

A backend is a class registered in the ``lookup_server.backends`` entry point
group. It declares its own configuration keys as a dataclass (``Options``),
and implements the capabilities it offers by overriding methods:

* ``find(term, limit)``       -> Live Lookup (``/livelookup/<source>``)
* ``find_options(query, limit)`` -> AJAX selection field (``/ajax/<source>``)
* ``push(request)`` and
  ``details(push_id)``         -> Request Push target (``/push/<target>``)
* ``deliver(webhook)``         -> webhook target (``/webhook/<target>``)

Everything else (which strategy to try first, escaping, timeouts, HTTP) is
done by the core. See docs/plugins.md for a complete example.

A call that outlives its source's ``timeout`` is answered with an error at
once, but its thread is still blocked in the backend. So a backend wraps each
blocking step in :func:`abort_on_timeout` with a way to end it from another
thread (shut the socket down, cancel the statement); the core calls that when
the timeout passes, and the thread comes back.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from lookup_server.core.models import (
    Customer,
    Option,
    OptionsQuery,
    PushDetails,
    PushRequest,
    SearchTerm,
    Webhook,
)

Strategy = Literal["customer_id", "email", "phone", "name"]
log = logging.getLogger(__name__)


class BackendError(Exception):
    """A backend failed in a way staff should be told about.

    The message is shown to HelpSpot staff: make it short and useful, and never
    put a password, token or connection string in it.
    """


class BackendTimeout(BackendError):
    """The backend's own network or query timeout fired."""


class NotFound(BackendError):
    """What was asked for does not exist there (an unknown push id, say)."""


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


@dataclass(frozen=True)
class NoOptions:
    """Options of a backend that takes none."""


@dataclass(frozen=True)
class SourceSettings:
    """The backend-independent keys of one ``[sources.NAME]`` table."""

    name: str
    backend: str
    columns: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    html_fields: frozenset[str] = frozenset()
    max_results: int = 50
    timeout: float = 5.0
    search: tuple[Strategy, ...] = ("customer_id", "email", "phone", "name")
    #: livelookup element name -> the backend's own field (column, attribute).
    fields: Mapping[str, str] = field(default_factory=dict)
    on_error: Literal["error", "empty"] = "error"
    #: Seconds a result may be served from memory; 0 (default) turns caching off.
    cache_ttl: float = 0.0
    #: AJAX fields: transliterate descriptions to ASCII (HelpSpot mangles the rest).
    ascii: bool = False
    #: Send insertable fields that are empty, so that automation rules clear them
    #: in the request (Insert skips empty values); by default they are left out.
    clear_empty: bool = False

    def backend_field(self, element: str, default: str | None = None) -> str:
        """The backend field that feeds ``element`` (identity unless mapped)."""
        mapped = self.fields.get(element)
        if mapped is not None:
            return mapped
        return element if default is None else default


OptionsT = TypeVar("OptionsT")


class Backend(Generic[OptionsT]):
    """Base class of every backend plugin.

    Subclasses set ``Options`` to a frozen dataclass whose fields are the
    backend's own configuration keys; the core validates a source's table
    against it (types, required keys, unknown keys) and passes an instance to
    ``__init__``. Supported field types: ``str``, ``int``, ``float``, ``bool``,
    ``Path`` (resolved against the config file's folder), ``Secret``,
    ``list[str]``, ``dict[str, str]``, ``Literal[...]`` and ``X | None``.
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: True when a call may wait on another system (network, database server): the
    #: core then runs it on a worker thread, stops waiting at the source's timeout
    #: and aborts it (see :func:`abort_on_timeout`). A backend that only reads local,
    #: indexed files may set False to be called inline, sparing each lookup a thread
    #: hand-off.
    waits_on_network: ClassVar[bool] = True

    def __init__(self, options: OptionsT, source: SourceSettings) -> None:
        self.options = options
        self.source = source

    # -- capabilities: override what the backend offers -------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Return at most ``limit`` customers matching ``term`` (Live Lookup)."""
        raise NotImplementedError

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """Return at most ``limit`` drop-down options for an AJAX selection field."""
        raise NotImplementedError

    def push(self, request: PushRequest) -> str:
        """Send a pushed request to the other system; return its id there.

        Raise BackendError with a message for staff when the push fails.
        """
        raise NotImplementedError

    def details(self, push_id: str) -> PushDetails:
        """Describe an earlier push for the request page."""
        raise NotImplementedError

    def deliver(self, webhook: Webhook) -> None:
        """Deliver one webhook; raise BackendError to have it retried later."""
        raise NotImplementedError

    # -- life cycle ---------------------------------------------------------------

    def prepare(self) -> None:
        """Warm up once before serving (build an index, open a pool); no deadline applies.

        May raise BackendError: the failure is logged and lookups report it.
        """

    def check(self) -> list[str]:
        """Probe the backend for ``lookup-server check``.

        Return warnings (empty when all is well); raise BackendError when the
        backend cannot serve.
        """
        return []

    def close(self) -> None:
        """Release connections and files."""

    # -- configuration -------------------------------------------------------------

    @classmethod
    def validate(cls, options: Any, source: SourceSettings) -> list[tuple[str, str]]:
        """Problems the option types cannot express, found when the config loads.

        Return ``(key, what to do)`` pairs; the key is relative to the source's
        table (``"queries.email"``), or "" for the table as a whole.
        """
        return []

    # -- introspection ------------------------------------------------------------

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capabilities this class implements (``livelookup``, ...)."""
        offered = {
            name: method
            for name, method in CAPABILITY_METHODS.items()
            if getattr(cls, method) is not getattr(Backend, method)
        }
        return frozenset(offered)


#: capability name -> the method that provides it
CAPABILITY_METHODS: dict[str, str] = {
    "livelookup": "find",
    "ajax": "find_options",
    "push": "push",
    "details": "details",
    "webhook": "deliver",
}
