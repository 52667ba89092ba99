"""The gunicorn worker lookup-server runs in production (``worker_class`` in gunicorn.conf.py).

An event loop (tornado's HTTP/1.1 server) reads every request whole, its
body spooled to a temporary file, and only then hands it to a thread that
runs the Flask app. Why:

* A connection that sends nothing, or a byte now and then, costs a socket
  and a few kilobytes, never a thread: with gunicorn's sync or gthread
  workers a few such connections pin every worker (a slowloris), and
  HelpSpot's staff would read "No customers found".
* A backend that hangs holds at most its source's slots
  (:class:`lookup_server.runtime.service.DeadlineRunner`), for its ``timeout``, while
  the other sources keep answering from the same threads.
* gunicorn's own HTTP parser caps the request line at 8,190 bytes, and
  HelpSpot puts every custom field in the URL, encoded twice (HELPSPOT.md
  §1): a long text field would fail every lookup. This worker reads request
  heads of up to twice ``[server] max_request_line``; the app answers past
  that setting with a message that names the field to shorten.
* A body larger than ``[server] max_body_bytes`` is read on, but only its
  first bytes are kept: the webhook view records the refusal with its
  request id, and a chunked body can never be cut and stored as if whole.

The backends keep plain threads (no monkey patching, unlike gevent): pyodbc,
SQLite and the CSV build block in C and would stall an event loop.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from gunicorn.sock import ssl_context
from gunicorn.workers.gtornado import TornadoWorker
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from lookup_server.core.calls import ANSWERED

log = logging.getLogger(__name__)

#: A body is kept in memory up to this size, then in a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024
#: Of a body past ``max_body_bytes``, this much is kept (to find its request id).
REFUSED_HEAD_BYTES = 64 * 1024
#: A request's head (request line and headers) must arrive within this many seconds.
HEAD_TIMEOUT = 20.0
#: ...and its body within this many.
BODY_TIMEOUT = 120.0
#: Room for the headers beside a request line of ``2 * max_request_line``.
HEADERS_BYTES = 64 * 1024
#: Out of file descriptors, the worker stops accepting for this many seconds.
ACCEPT_PAUSE = 0.1


@dataclass(frozen=True)
class Limits:
    """What this worker reads of a request, from the app's ``[server]`` settings."""

    max_body_bytes: int = 1024 * 1024
    max_head_bytes: int = 2 * 256 * 1024 + HEADERS_BYTES

    @classmethod
    def of(cls, app: object) -> Limits:
        """The limits of a lookup-server app; defaults for any other WSGI app."""
        from lookup_server.web.blueprints.common import EXTENSION

        state = getattr(app, "extensions", {}).get(EXTENSION)
        if state is None:
            return cls()
        server = state.config.server
        # Twice the setting: the app itself answers requests between the two
        # with a readable reason, which a closed connection could not give.
        # Every unfinished head may hold this much memory: no more.
        return cls(server.max_body_bytes, 2 * server.max_request_line + HEADERS_BYTES)


class LookupWorker(TornadoWorker):  # type: ignore[misc]
    """gunicorn's tornado worker, with the WSGI app run on a pool of threads."""

    def run(self) -> None:
        """Serve until gunicorn stops this worker (its heartbeat stops the loop)."""
        self.ioloop = IOLoop.current()
        # not alive = True, as gunicorn's tornado worker has it: a SIGTERM that came
        # while the app loaded (a CSV index built, for seconds) would be forgotten,
        # and the worker would serve on until killed at the graceful timeout
        self.server_alive = False
        self.callbacks = [
            PeriodicCallback(self.watchdog, 1000),
            PeriodicCallback(self.heartbeat, 1000),
        ]
        for callback in self.callbacks:
            callback.start()
        limits = Limits.of(self.wsgi)
        executor = ThreadPoolExecutor(max(self.cfg.threads, 1), thread_name_prefix="request")
        gateway = WsgiGateway(self.wsgi, executor, limits, self)
        self.server = HTTPServer(
            gateway,
            ssl_options=ssl_context(self.cfg) if self.cfg.is_ssl else None,
            no_keep_alive=self.cfg.keepalive <= 0,
            idle_connection_timeout=HEAD_TIMEOUT,
            body_timeout=BODY_TIMEOUT,
            max_header_size=limits.max_head_bytes,
            # Bodies are bounded by WsgiGateway, which keeps the head of a refused one.
            max_body_size=sys.maxsize,
        )
        raise_descriptor_limit()
        for sock in self.sockets:
            sock.setblocking(False)
            self.server.add_socket(_Listener(sock))  # type: ignore[arg-type]
        self.server_alive = True
        self.ioloop.start()
        executor.shutdown(wait=False)


def raise_descriptor_limit() -> None:
    """Let this worker hold as many connections as the system allows it.

    Each idle or slow connection costs a file descriptor, and the usual soft
    limit (1,024) is far below the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Listener:
    """A listening socket that takes one connection at a time, and pauses out of descriptors.

    One at a time: tornado accepts every pending connection at once, so the
    worker woken first took nearly all of a client's keep-alive connections (7
    or 8 of wrk's 8, measured) and the other workers idled; half the lookups a
    second, at random from one run to the next. Answering "none" after each
    connection ends tornado's loop; the socket is still readable, so the next
    turn of this worker's loop, or another worker woken with it, takes the
    next. Out of file descriptors it stops accepting for a moment: tornado
    would otherwise retry accept() at once, forever, the event loop spinning
    and logging a traceback each time, and no lookup answered.
    """

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.paused = False
        self._took_one = False

    def accept(self) -> tuple[Any, Any]:
        """The next connection; BlockingIOError after one, and while out of descriptors."""
        if self._took_one:
            self._took_one = False
            raise BlockingIOError
        try:
            accepted = self.sock.accept()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            loop = IOLoop.current()
            if not self.paused:
                log.error(
                    "out of file descriptors (%s): not accepting connections for "
                    "%.1f s at a time until some close",
                    exc.strerror,
                    ACCEPT_PAUSE,
                )
            self.paused = True
            loop.update_handler(self.sock.fileno(), 0)
            loop.call_later(ACCEPT_PAUSE, self._resume)
            raise BlockingIOError from None
        self.paused = False
        self._took_one = True
        return accepted  # type: ignore[no-any-return]

    def _resume(self) -> None:
        IOLoop.current().update_handler(self.sock.fileno(), IOLoop.READ)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class WsgiGateway(httputil.HTTPServerConnectionDelegate):
    """Turns each request tornado has read into a WSGI call on the thread pool."""

    def __init__(
        self,
        app: Any,
        executor: ThreadPoolExecutor,
        limits: Limits,
        worker: LookupWorker | None = None,
    ) -> None:
        self.app, self.executor, self.limits, self.worker = app, executor, limits, worker

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        """A delegate for the next request on this connection."""
        return _Exchange(self, request_conn)


class _Exchange(httputil.HTTPMessageDelegate):
    """One request: its head and spooled body, then the app's answer."""

    def __init__(self, gateway: WsgiGateway, connection: httputil.HTTPConnection) -> None:
        self.gateway, self.connection = gateway, connection
        self.start: httputil.RequestStartLine | None = None
        self.headers = httputil.HTTPHeaders()
        # closed when the answer is sent or the connection closes, whichever comes first
        self.body: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)  # noqa: SIM115
        self.size = 0
        self.started = time.monotonic()
        #: Called once the answer is written (ANSWERED in the environ): the app's count
        #: of the calls it answers ends there, not when the app returns.
        self.answered: list[Callable[[], None]] = []

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start, self.headers = start_line, headers
        self.started = time.monotonic()

    def data_received(self, chunk: bytes) -> None:
        limit, before = self.gateway.limits.max_body_bytes, self.size
        self.size += len(chunk)
        if self.size <= limit:
            self.body.write(chunk)
        elif before <= limit:  # past the limit from here: keep only the head, count the rest
            self.body.write(chunk[: max(REFUSED_HEAD_BYTES - before, 0)])
            self.body.truncate(REFUSED_HEAD_BYTES)

    def finish(self) -> None:
        IOLoop.current().add_future(
            IOLoop.current().run_in_executor(self.gateway.executor, self._call_app), self._respond
        )

    def on_connection_close(self) -> None:
        self.body.close()

    def _call_app(self) -> _Response:
        assert self.start is not None
        self.body.seek(0)
        environ = wsgi_environ(self.start, self.headers, self.body, self.size, self.connection)
        environ[ANSWERED] = self.answered
        response = call_wsgi(self.gateway.app, environ)
        worker = self.gateway.worker
        if worker is not None:
            elapsed = datetime.timedelta(seconds=time.monotonic() - self.started)
            worker.log.access(
                response, _LoggedRequest(list(self.headers.get_all())), environ, elapsed
            )
            worker.handle_request()
        return response

    def _respond(self, future: Any) -> None:
        try:
            self._write(future)
        finally:  # written, or the connection is gone: either way the call is over
            for callback in self.answered:
                callback()

    def _write(self, future: Any) -> None:
        self.body.close()
        try:
            response: _Response = future.result()
        except Exception:  # call_wsgi answers every failure of the app itself
            log.exception("lookup-server worker: no answer to send")
            response = internal_error()
        code, reason = response.status.split(" ", 1)
        headers = httputil.HTTPHeaders()
        for name, value in response.headers:
            headers.add(name, value)
        if "Content-Length" not in headers and int(code) not in (204, 304):
            headers["Content-Length"] = str(len(response.body))
        assert self.start is not None
        body = b"" if self.start.method == "HEAD" else response.body
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", int(code), reason), headers, chunk=body or None
        )
        self.connection.finish()


@dataclass
class _Response:
    """A WSGI answer, collected (lookup-server's answers are small)."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes
    sent: int = field(init=False)

    def __post_init__(self) -> None:
        self.sent = len(self.body)  # gunicorn's access log reads ``sent``


@dataclass
class _LoggedRequest:
    """What gunicorn's access log reads of a request: its headers."""

    headers: list[tuple[str, str]]


def call_wsgi(app: Any, environ: dict[str, Any]) -> _Response:
    """Run the WSGI app; its status, headers and whole body."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        started[:] = [(status, headers)]
        return chunks.append

    chunks: list[bytes] = []
    try:
        result: Iterable[bytes] = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        log.exception("lookup-server worker: the app failed to answer")
        return internal_error()
    status, headers = started[0]
    return _Response(status, headers, b"".join(chunks))


def internal_error() -> _Response:
    """A plain-text 500, which HelpSpot shows as an error, never as "No customers found"."""
    body = b"lookup-server error: internal error (details in the server log)\n"
    return _Response(
        "500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")], body
    )


def wsgi_environ(
    start: httputil.RequestStartLine,
    headers: httputil.HTTPHeaders,
    body: IO[bytes],
    size: int,
    connection: httputil.HTTPConnection,
) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of a request read whole by tornado."""
    path, _, query = start.path.partition("?")
    context = getattr(connection, "context", None)
    address = getattr(context, "address", None)
    host = headers.get("Host", "")
    server_name, _, server_port = host.rpartition(":") if ":" in host else (host, "", "80")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": start.method,
        "SCRIPT_NAME": "",
        # WSGI carries the path as bytes in a latin-1 str
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": start.path,
        "SERVER_PROTOCOL": start.version,
        "SERVER_NAME": server_name or "localhost",
        "SERVER_PORT": server_port or "80",
        "REMOTE_ADDR": getattr(context, "remote_ip", "") or "",
        "REMOTE_PORT": str(address[1]) if isinstance(address, tuple) else "",
        # The body was read whole: its length is known even when it came chunked,
        # so a body over the limit is refused by its length (only its head is
        # kept, see _Exchange.data_received), never cut short and taken as whole.
        "CONTENT_LENGTH": str(size) if size or start.method in ("POST", "PUT") else "",
        "CONTENT_TYPE": headers.get("Content-Type", ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if getattr(context, "protocol", "") == "https" else "http",
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        # the body is de-chunked, its length known: to the app it was never chunked
        if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"):
            environ[key] = ",".join(headers.get_list(name))
    return environ
