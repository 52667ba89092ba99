"""HTTP calls to hosted APIs that end within a source's timeout, retries included.

Shared by the Shopify, Highrise and Microsoft Graph backends and the http and
slack targets: each lookup gets one :class:`Deadline`; every request, and
every wait a vendor asks for with ``Retry-After``, must fit in what is left of
it. Error messages name the vendor and what to do, never a URL's query, a
header or a token.

``requests``' timeouts bound each read, not the answer: a server that sends a
byte a second never trips them. So every session here is an
:class:`AbortableSession`, whose requests end when the core aborts the call:
the connections they hold are shut down.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection

from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    DeliveryFailed,
    abort_on_timeout,
    shut_down,
    timed_out,
)

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

log = logging.getLogger(__name__)

#: Retry-After absent or unreadable: wait this long before the next try.
DEFAULT_RETRY_WAIT = 1.0
#: Statuses that mean "later": rate limits and brief outages.
RETRY_STATUSES = frozenset({429, 503})
#: How much of a refusal's body is read for its excerpt (DeliveryFailed keeps less).
EXCERPT_BYTES = 8192
#: Shorter texts are not hidden from an excerpt: they would blank out common words.
MIN_HIDDEN_CHARS = 4
#: Plain http:// to these never leaves the machine.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class Deadline:
    """The moment one lookup must be finished by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self._end - self._clock())

    def allows(self, wait: float) -> bool:
        """True when waiting ``wait`` seconds still leaves time for a request."""
        return wait < self.remaining()

    def wait(self, seconds: float) -> None:
        """Pause for a vendor-requested delay (the caller checked :meth:`allows`)."""
        if seconds > 0:
            threading.Event().wait(seconds)


class _HeldSockets:
    """The sockets one request on this thread is using, to end them from another thread.

    Sockets, not urllib3 connections: a connection lets go of its socket as soon
    as an answer says it will close, while the body is still being read from it.
    """

    _local = threading.local()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[Any] = set()

    @classmethod
    def current(cls) -> _HeldSockets | None:
        """What the request running on this thread holds (None outside one)."""
        held: _HeldSockets | None = getattr(cls._local, "held", None)
        return held

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the sockets this thread's requests use during the block."""
        outer, _HeldSockets._local.held = _HeldSockets.current(), self
        try:
            yield
        finally:
            _HeldSockets._local.held = outer

    @classmethod
    def hold(cls, sock: Any) -> None:
        held = cls.current()
        if held is not None and sock is not None:
            with held._lock:
                held._sockets.add(sock)

    @classmethod
    def let_go(cls, sock: Any) -> None:
        held = cls.current()
        if held is not None and sock is not None:
            with held._lock:  # back in the pool: another thread may take it from now on
                held._sockets.discard(sock)

    def shut_down(self) -> None:
        """End every held socket; the reads blocked on them return at once."""
        with self._lock:
            for sock in self._sockets:
                # TLS through an HTTPS proxy: urllib3's SSLTransport wraps the real socket
                shut_down(getattr(sock, "socket", sock))


class _RecordsItsSocket:
    """Mixed into urllib3's connections: a socket connected for a request is held by it."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _HeldSockets.hold(getattr(self, "sock", None))


class _RecordingHTTPConnection(_RecordsItsSocket, HTTPConnection):
    pass


class _RecordingHTTPSConnection(_RecordsItsSocket, HTTPSConnection):
    pass


class _RecordsSockets:
    """Mixed into urllib3's pools: a pooled connection's socket is held while it is taken."""

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn: BaseHTTPConnection = super()._get_conn(timeout)  # type: ignore[misc]
        _HeldSockets.hold(getattr(conn, "sock", None))  # None until it connects
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        _HeldSockets.let_go(getattr(conn, "sock", None))
        super()._put_conn(conn)  # type: ignore[misc]


class _RecordingHTTPPool(_RecordsSockets, HTTPConnectionPool):
    ConnectionCls = _RecordingHTTPConnection


class _RecordingHTTPSPool(_RecordsSockets, HTTPSConnectionPool):
    ConnectionCls = _RecordingHTTPSConnection


_STANDARD_POOLS: dict[str, type] = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
_RECORDING_POOLS: dict[str, type] = {"http": _RecordingHTTPPool, "https": _RecordingHTTPSPool}


def _record_connections(manager: PoolManager) -> PoolManager:
    # a SOCKS proxy manager brings pools of its own: those stay as they are
    if dict(manager.pool_classes_by_scheme) == _STANDARD_POOLS:
        manager.pool_classes_by_scheme = _RECORDING_POOLS
    return manager


class _RecordingAdapter(HTTPAdapter):
    """requests' adapter, over pools that record which request holds which connection."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _record_connections(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        return _record_connections(super().proxy_manager_for(proxy, **proxy_kwargs))


class AbortableSession(requests.Session):
    """A ``requests.Session`` whose requests end when the core aborts the backend call.

    The connections a request holds are shut down from the core's thread, so a
    server that drips its answer cannot hold the call past the source's timeout.
    An aborted request raises ``requests.Timeout``. (Only bodies read inside
    ``request`` are covered: do not use ``stream=True``.)
    """

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("https://", "http://"):
            self.mount(prefix, _RecordingAdapter())

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """``requests.Session.request``, abortable."""
        held = _HeldSockets()
        try:
            with abort_on_timeout(held.shut_down), held.recording():
                response = super().request(method, url, *args, **kwargs)
        except BackendTimeout:
            raise requests.Timeout("the source's timeout had passed") from None
        except requests.RequestException:
            if timed_out():
                raise requests.Timeout("aborted: the source's timeout passed") from None
            raise
        if timed_out():  # a body without a length ends early, but cleanly
            response.close()
            raise requests.Timeout("aborted: the source's timeout passed")
        return response


def unencrypted_host(url: str) -> str | None:
    """The host ``url`` reaches without TLS (``http://`` off this machine), else None."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return parts.hostname
    return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return DEFAULT_RETRY_WAIT
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_WAIT
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def refused_delivery(
    message: str,
    response: requests.Response,
    hidden: Iterable[str] = (),
    now: datetime | None = None,
) -> DeliveryFailed:
    """The DeliveryFailed for a webhook refused with this answer, with its Retry-After.

    Whether it is final follows its status (DeliveryFailed's one rule).
    """
    failed = DeliveryFailed(
        message, status=response.status_code, answer=answer_excerpt(response, hidden)
    )
    asked = response.headers.get("Retry-After")
    if asked and not failed.final:
        failed.retry_after = retry_after_seconds(asked, now)
    return failed


def throttled_error(vendor: str, wait: float, deadline: Deadline) -> BackendError:
    """The error for a rate limit that outlasts the source's timeout."""
    return BackendError(
        f"{vendor} is rate-limiting requests and asks to wait {wait:.0f} s, longer than "
        f"the source's timeout of {deadline.budget:g} s; try again shortly or raise timeout"
    )


def outage_error(vendor: str, status: int) -> BackendError:
    """The error for a 5xx answer."""
    return BackendError(f"{vendor} is having problems (HTTP {status}); try again later")


def send(
    session: requests.Session,
    method: str,
    url: str,
    deadline: Deadline,
    *,
    vendor: str,
    retry_statuses: Collection[int] = RETRY_STATUSES,
    **kwargs: Any,
) -> requests.Response:
    """Send one request, repeating it on a rate limit while the deadline allows.

    Returns the first answer that is not a retryable status; raises
    BackendTimeout or BackendError (without the URL) on network failure.
    """
    while True:
        response = request_once(session, method, url, deadline, vendor=vendor, **kwargs)
        if response.status_code not in retry_statuses:
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if not deadline.allows(wait):
            if response.status_code == 429 or "Retry-After" in response.headers:
                raise throttled_error(vendor, wait, deadline)
            raise outage_error(vendor, response.status_code)
        log.info("%s answered HTTP %s; retrying in %.1f s", vendor, response.status_code, wait)
        deadline.wait(wait)


def request_once(
    session: requests.Session,
    method: str,
    url: str,
    deadline: Deadline,
    *,
    vendor: str,
    **kwargs: Any,
) -> requests.Response:
    """One request whose connect and read timeouts end by the deadline."""
    left = deadline.remaining()
    if left <= 0:
        raise BackendTimeout(f"{vendor} did not answer within {deadline.budget:g} s")
    try:
        return session.request(method, url, timeout=(left, left), allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise BackendTimeout(f"{vendor} did not answer within {deadline.budget:g} s") from None
    except requests.ConnectionError as exc:
        raise BackendError(
            f"cannot connect to {vendor} ({_reason(exc)}); check the address and the network"
        ) from None
    except requests.RequestException as exc:
        raise BackendError(f"request to {vendor} failed ({type(exc).__name__})") from None


def _reason(exc: requests.ConnectionError) -> str:
    # The exception text repeats the URL and nested urllib3 reprs; its class is enough.
    text = str(exc)
    for hint in (
        "Name or service not known",
        "nodename nor servname",
        "Connection refused",
        "CERTIFICATE_VERIFY_FAILED",
        "timed out",
    ):
        if hint in text:
            return hint
    return type(exc).__name__


def answer_excerpt(response: requests.Response, hidden: Iterable[str] = ()) -> str:
    """The start of an answer's body as text, each of ``hidden`` (keys, tokens) blanked out.

    For a DeliveryFailed: peers' error pages may echo the request, its URL and
    headers included.
    """
    secrets = _longest_first(hidden)
    head = response.content[:EXCERPT_BYTES]
    try:
        text = head.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = head.decode("utf-8", errors="replace")
    if len(response.content) > EXCERPT_BYTES and secrets:
        text = text[: -len(secrets[0])]  # a secret cut at the edge would show its start
    return blank_out(text, secrets)


def blank_out(text: str, hidden: Iterable[str]) -> str:
    """``text`` with each of ``hidden`` replaced by ``[hidden]`` (cut it afterwards, not before)."""
    for secret in _longest_first(hidden):
        text = text.replace(secret, "[hidden]")
    return text


def _longest_first(hidden: Iterable[str]) -> list[str]:
    # longest first: a value that holds another is blanked out whole
    return sorted({h for h in hidden if len(h) >= MIN_HIDDEN_CHARS}, key=len, reverse=True)


def json_body(response: requests.Response, vendor: str) -> Any:
    """The decoded JSON body, or a BackendError saying the answer was unreadable."""
    try:
        return response.json()
    except ValueError:
        raise BackendError(
            f"{vendor} sent an unreadable answer (HTTP {response.status_code}, not JSON)"
        ) from None


def text_of(value: object) -> str:
    """A JSON scalar as display text ("" for null)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def dig(data: object, *path: str) -> object:
    """``data[p0][p1]...`` through nested objects, None where a step is missing."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data
