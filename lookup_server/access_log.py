"""Logging set-up and access logs that never show a shared key.

Both the development server (werkzeug) and gunicorn log request lines; the key
can travel in the query (``ll_key=``) or in the path (``/ajax/<source>/<key>``),
so both loggers pass the request target through :func:`auth.redact`.
"""

from __future__ import annotations

import logging
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from lookup_server.auth import redact


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with timestamps (gunicorn and the CLI capture stderr)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class RedactingRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler, with keys hidden from its request-line log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the request with every shared key replaced by ***."""
        # werkzeug logs self.path (or the request line when that fails); the
        # request has been answered, so both can be redacted in place.
        self.path = redact(self.path)
        self.requestline = redact(self.requestline)
        super().log_request(code, size)


try:
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # gunicorn is a dependency, but the CLI must not need it
    _GunicornLogger = object


class GunicornLogger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger with keys hidden from access-log lines (gunicorn.conf.py)."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        """Every access-log field redacted: the request line, path and query appear in
        several of them (``r``, ``U``, ``q``, ``{raw_uri}e``, ...), and the key in the
        ``Authorization`` header as ``{authorization}i``."""
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if name.lower() == "{authorization}i":
                atoms[name] = "***"
            elif isinstance(value, str):
                atoms[name] = redact(value)
        return atoms
