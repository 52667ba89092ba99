"""Logging set-up and access logs that never show a shared key.

Both the development server (werkzeug) and gunicorn log request lines; the key
can travel in the query (``ll_key=``) or in the path (``/ajax/<source>/<key>``),
so both loggers pass the request target through :func:`auth.redact`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from lookup_server.telemetry import shortened
from lookup_server.telemetry.json_log import FIELDS as JSON_FIELDS
from lookup_server.telemetry.json_log import JsonFormatter
from lookup_server.web.auth import percent_decodings, printable, redact


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr, as text with timestamps or as JSON lines (``[server] log_format``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(log_format))
    logging.basicConfig(level=level, handlers=[handler])


def formatter_for(log_format: str) -> logging.Formatter:
    """How every log line of the server is written, for ``[server] log_format``."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


class KeyFilter(logging.Filter):
    r"""Hides the configured keys in every log record a handler writes, in any spelling.

    The access-log redaction works on the fields it knows; this is the net
    under everything else: an HTTP library quoting a malformed header
    (``Invalid header value 'Bearer KEY\x01'``), a request line of a shape no
    pattern expects. A key is a run of URL-unreserved characters, so its
    percent-encoded spellings are caught by decoding the message first.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__()
        self.keys = tuple(sorted({k for k in keys if k}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through, its message (and a JSON line's fields) rid of keys."""
        if not self.keys:
            return True
        message = record.getMessage()
        hidden = self.hide(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        fields = getattr(record, JSON_FIELDS, None)
        if isinstance(fields, dict):
            setattr(
                record,
                JSON_FIELDS,
                {k: self.hide(v) if isinstance(v, str) else v for k, v in fields.items()},
            )
        return True

    def hide(self, text: str) -> str:
        """``text`` with every key replaced by ***; decoded only when that is where one was."""
        spellings = (text, *percent_decodings(text)) if "%" in text else (text,)
        for decoded, spelling in enumerate(spellings):
            if any(key in spelling for key in self.keys):
                for key in self.keys:
                    spelling = spelling.replace(key, "***")
                return printable(spelling) if decoded else spelling
        return text


def install_key_filter(keys: Iterable[str]) -> None:
    """Put a KeyFilter on every log handler there is now (ours, gunicorn's, tornado's root)."""
    key_filter = KeyFilter(keys)
    loggers = [
        logging.getLogger(),
        *(
            logger
            for logger in logging.root.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ),
    ]
    for handler in {handler for logger in loggers for handler in logger.handlers}:
        for old in [f for f in handler.filters if isinstance(f, KeyFilter)]:
            handler.removeFilter(old)
        handler.addFilter(key_filter)


class RedactingRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler, with keys hidden from its request-line log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the request with every shared key replaced by ***."""
        # werkzeug logs self.path, or the request line when there is no path: a
        # line it could not parse (garbage, a TLS handshake, one too long) sets
        # none. The request has been answered, so both can be redacted in place.
        path = getattr(self, "path", None)
        if path is not None:
            self.path = shortened(redact(path))
        self.requestline = shortened(redact(getattr(self, "requestline", "")))
        super().log_request(code, size)

    def log(self, type: str, message: str, *args: Any) -> None:
        """Every line this handler logs, with shared keys hidden in its values."""
        # the error logged for a malformed request quotes its request line:
        # "Bad request syntax ('GET /livelookup/crm?ll_key=... x HTTP/1.1')"
        super().log(type, message, *(redact(a) if isinstance(a, str) else a for a in args))


try:
    from gunicorn.glogging import Logger as _GunicornLogger
    from gunicorn.glogging import SafeAtoms as _SafeAtoms
except ImportError:  # gunicorn is a dependency, but the CLI must not need it
    _GunicornLogger = _SafeAtoms = object


class RedactedAtoms(_SafeAtoms):  # type: ignore[misc]
    """gunicorn's access-log fields, each redacted as the log format reads it.

    The request line, path and query appear in several fields (``r``, ``U``,
    ``q``, ``{raw_uri}e``, ...) and the key may travel in the ``Authorization``
    header (``{authorization}i``). The fields hold every header and environ
    variable, but a log line reads a handful, so each is redacted when read:
    redacting all of them up front is a large share of a lookup's time under
    gunicorn (see bench/README.md).
    """

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if name.lower() == "{authorization}i":
            return "***" if value != "-" else value
        return shortened(redact(value)) if isinstance(value, str) else value


class GunicornLogger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger with keys hidden from access-log lines (gunicorn.conf.py).

    With ``[server] log_format = "json"`` its lines are JSON too, the master's
    included (it never imports the app, so it reads the configuration here).
    """

    atoms_wrapper_class = RedactedAtoms

    def setup(self, cfg: Any) -> None:
        """Set up as gunicorn does (at start and at every reload), then in our log format."""
        super().setup(cfg)
        from lookup_server.config.settings import ConfigError, load_config

        try:
            log_format = load_config().server.log_format
        except ConfigError:  # the worker reports it when it loads the app
            return
        if log_format == "json":  # else gunicorn's own formats stay
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(JsonFormatter())
