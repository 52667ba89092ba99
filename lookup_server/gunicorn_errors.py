"""Plain-text error pages for the requests gunicorn refuses before the app sees them.

gunicorn answers a request it cannot parse (a request line over
``limit_request_line``, a malformed header...) with a small HTML page. That
page is well-formed XML without a ``<customer>``, which HelpSpot's parser
reads as "No customers found" (HELPSPOT.md §3). Our own failures answer
plain text, which the parser rejects, so staff see the reason instead: this
makes gunicorn's answers do the same. gunicorn has no setting for its error
pages, so ``gunicorn.conf.py`` replaces the one function that writes them,
in the master, before workers are forked.
"""

from __future__ import annotations

import socket

from gunicorn import util


def install() -> None:
    """Make gunicorn answer its own refusals in plain text (called by gunicorn.conf.py)."""
    util.write_error = write_plain_error


def write_plain_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, answering a plain-text reason.

    ``mesg`` is left out: it can quote the refused request back.
    """
    body = f"lookup-server error: {reason} (refused before it reached lookup-server)\n".encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)
