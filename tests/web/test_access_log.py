"""Shared keys never reach an access log: werkzeug's (serve) nor gunicorn's."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.serving import make_server

from lookup_server.web.access_log import GunicornLogger, RedactingRequestHandler
from lookup_server.web.auth import redact
from tests.conftest import DEMO_CSV, ROOT, MakeApp, free_port
from tests.support.helpspot import double_encode, helpspot_error

KEY = "s3cret-key_0123456789"


def get_when_up(url: str, headers: dict[str, str], limit: float = 30) -> bytes:
    deadline = time.monotonic() + limit
    while True:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=limit
            ) as response:
                return bytes(response.read())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    "line,expected",
    [
        (f"/livelookup/crm?ll_key={KEY}&email=a", "/livelookup/crm?ll_key=***&email=a"),
        (f"/livelookup/crm?email=a&LL_KEY={KEY}?source_id=0", "/livelookup/crm?email=a&LL_KEY=***"),
        (
            f"GET /ajax/products/{KEY}?callingField=x HTTP/1.1",
            "GET /ajax/products/***?callingField=x HTTP/1.1",
        ),
        (f"/webhook/hooks/{KEY}", "/webhook/hooks/***"),
        ("/push/crm/ID-42", "/push/crm/ID-42"),  # a push id is not a key
        # the error http.server logs for a request line it cannot parse
        (
            f"Bad request syntax ('/ajax/products/{KEY}')",
            "Bad request syntax ('/ajax/products/***')",
        ),
        # the query parser decodes names, so these are keys too
        (f"/livelookup/crm?ll%5Fkey={KEY}", "/livelookup/crm?ll%5Fkey=***"),
        (f"/livelookup/crm?%6Cl%5f%6B%65%79={KEY}&x=1", "/livelookup/crm?ll_key=***&x=1"),
        # spellings a router accepts, redirects or refuses: none may log the key
        (f"//livelookup/crm/{KEY}", "//livelookup/crm/***"),
        (f"/livelookup%2Fcrm%2F{KEY}", "/livelookup/crm/***"),
        (f"/%6civelookup/crm/%6B{KEY}", "/livelookup/crm/***"),
        (f"/livelookup/crm/{quote(quote(KEY, safe=''), safe='')}", "/livelookup/crm/***"),
        (
            f"GET http://lookup.example:8080/livelookup/crm/{KEY}?x=1 HTTP/1.1",
            "GET http://lookup.example:8080/livelookup/crm/***?x=1 HTTP/1.1",
        ),
        (f"/ajax//crm/{KEY}", "/ajax//crm/***"),
        (f"/AJAX/crm/{KEY}/", "/AJAX/crm/***/"),
        (f"//webhook/hooks/{KEY}", "//webhook/hooks/***"),
        (f"/livelookup/crm?ll_key[]={KEY}", "/livelookup/crm?ll_key[]=***"),
        (f"/livelookup/crm?ll-key={KEY}&LL.KEY={KEY}", "/livelookup/crm?ll-key=***&LL.KEY=***"),
        ("/livelookup/crm?email=a%40b.com", "/livelookup/crm?email=a%40b.com"),  # no key: as sent
        # look-alikes a caller may try, and a forged second log line
        (f"/livelookup\\demo\\{KEY}", "/livelookup\\demo\\***"),
        (f"/webhook/crm;{KEY}", "/webhook/crm;***"),
        (f"/livelookup/demo?ll_key%26={KEY}", "/livelookup/demo?ll_key%26=***"),
        (f"/livelookup/demo?ll_key=%20{KEY}", "/livelookup/demo?ll_key=***"),
        (f"/livelookup/demo/%0a{KEY}", "/livelookup/demo/***"),
        (f"/webhook/crm/%20{KEY}", "/webhook/crm/***"),
        (
            f"/livelookup/d?ll_key={KEY}&a=%0a127.0.0.1%20-%20FORGED",
            "/livelookup/d?ll_key=***&a=%0a127.0.0.1%20-%20FORGED",
        ),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_gunicorn_access_line_hides_the_key() -> None:
    fields = "%(r)s %(U)s %(q)s %({raw_uri}e)s %({query_string}e)s %({authorization}i)s"
    logger = GunicornLogger(
        SimpleNamespace(  # the settings gunicorn's Logger reads
            errorlog="-",
            loglevel="info",
            accesslog=None,
            access_log_format=fields,
            syslog=False,
            capture_output=False,
            logconfig=None,
            logconfig_dict={},
            logconfig_json=None,
            disable_redirect_access_to_syslog=False,
            user=0,
            group=0,
            syslog_addr=None,
            syslog_facility="user",
            syslog_prefix=None,
            dogstatsd_tags="",
            statsd_host=None,
            statsd_prefix="",
            umask=0,
            worker_tmp_dir=None,
            forwarded_allow_ips="127.0.0.1",
            permit_obsolete_folding=False,
        )
    )
    request = SimpleNamespace(
        method="GET",
        path=f"/ajax/p/{KEY}",
        query=f"ll_key={KEY}",
        uri=f"/ajax/p/{KEY}?ll_key={KEY}",
        version=(1, 1),
        headers=[("AUTHORIZATION", f"Bearer {KEY}")],
    )
    response = SimpleNamespace(status="200 OK", response_length=10, sent=10, headers=[])
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "RAW_URI": request.uri,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
    }
    atoms = logger.atoms(
        response,
        request,
        environ,
        SimpleNamespace(seconds=0, microseconds=1000, total_seconds=lambda: 0.001),
    )
    # what gunicorn's Logger.access hands to the logging module
    line = fields % logger.atoms_wrapper_class(atoms)
    assert KEY not in line
    assert line == (
        "GET /ajax/p/***?ll_key=*** HTTP/1.1 /ajax/p/*** ll_key=*** "
        "/ajax/p/***?ll_key=*** ll_key=*** ***"
    )


def test_a_real_gunicorn_serves_helpspots_calls_and_logs_no_key(tmp_path: Path) -> None:
    config = tmp_path / "lookup.toml"
    shutil.copy(DEMO_CSV, tmp_path / "customers.csv")
    config.write_text(
        f'[server]\nshared_key = "{KEY}"\n[sources.demo]\nbackend = "csv"\npath = "customers.csv"\n'
    )
    log, port = tmp_path / "access.log", free_port()
    base = f"http://127.0.0.1:{port}/livelookup/demo"
    # HelpSpot sends every custom field in the URL, encoded twice
    notes = quote(double_encode("Called about the invoice; see notes, please! " * 80), safe="")
    calls = [
        (f"{base}?ll_key={KEY}&customer_id=1001", {}),
        (f"{base}?ll%5Fkey={KEY}&customer_id=1001", {}),
        (f"{base}/{KEY}?customer_id=1001", {}),
        (f"{base}?customer_id=1001", {"Authorization": f"Bearer {KEY}"}),
        (f"{base}/{KEY}?customer_id=1001&Custom9={notes}", {}),
    ]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(log),
            "wsgi:app",
        ],
        cwd=ROOT,
        env={**os.environ, "LOOKUP_SERVER_CONFIG": str(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for url, headers in calls:
            answer = get_when_up(url, headers)
            assert b"<customer_id>1001</customer_id>" in answer, url
        # past [server] max_request_line staff read an error, not "No customers found"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                f"{base}/{KEY}?customer_id=1001&Custom9={notes * 50}", timeout=30
            )
        assert refused.value.code == 414
        body = refused.value.read()
        helpspot_error(body)
        assert b"Custom9" in body
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    assert text.count("/livelookup/demo") == len(calls) + 1
    assert KEY not in text
    assert text.count("***") >= len(calls)  # the header is not in the default format


def test_development_server_request_line_hides_the_key(caplog: pytest.LogCaptureFixture) -> None:
    handler: Any = RedactingRequestHandler.__new__(RedactingRequestHandler)
    handler.requestline = f"GET /livelookup/crm/{KEY}?ll_key={KEY} HTTP/1.1"
    handler.client_address = ("127.0.0.1", 5000)
    handler.command, handler.path = "GET", f"/livelookup/crm/{KEY}?ll_key={KEY}"
    handler.request_version = "HTTP/1.1"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log_request(200, 10)
    assert caplog.text and KEY not in caplog.text
    assert "GET /livelookup/crm/***?ll_key=*** HTTP/1.1" in caplog.text


def test_giant_request_lines_are_logged_shortened(caplog: pytest.LogCaptureFixture) -> None:
    handler: Any = RedactingRequestHandler.__new__(RedactingRequestHandler)
    target = f"/livelookup/crm?Custom9={'x' * 300_000}&ll_key={KEY}"
    handler.requestline = f"GET {target} HTTP/1.1"
    handler.client_address = ("127.0.0.1", 5000)
    handler.command, handler.path, handler.request_version = "GET", target, "HTTP/1.1"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log_request(200, 10)
    assert KEY not in caplog.text and len(caplog.text) < 5000
    assert "more characters]" in caplog.text


@pytest.fixture
def development_server(make_app: MakeApp) -> Iterator[tuple[str, int]]:
    """What ``lookup-server serve`` runs: werkzeug with our request handler, in a thread."""
    app = make_app(
        {
            "server": {"shared_key": KEY},
            "sources": {"demo": {"backend": "csv", "path": str(DEMO_CSV)}},
        }
    )
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=RedactingRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_port
    server.shutdown()


def send_raw(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` as it is on a new connection; everything the server answers."""
    with socket.create_connection(address, timeout=30) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: connection.recv(65536), b""))


@pytest.mark.parametrize(
    "line,status",
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),  # a TLS hello
        (f"GET /livelookup/demo?ll_key={KEY} a b HTTP/1.1\r\n\r\n".encode(), b"400"),
        (f"/ajax/demo/{KEY}\r\n\r\n".encode(), b"400"),
        (f"GET /livelookup/demo/{KEY}?x=1 HTTP/9.9\r\n\r\n".encode(), b"505"),
        # read in one piece: the server answers before it has read all of a longer one
        ((f"GET /livelookup/demo?ll_key={KEY}&x=" + "y" * 65536)[:65537].encode(), b"414"),
    ],
)
def test_development_server_answers_malformed_requests_and_logs_no_key(
    development_server: tuple[str, int],
    caplog: pytest.LogCaptureFixture,
    line: bytes,
    status: bytes,
) -> None:
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        answer = send_raw(development_server, line)
    # an error in the log line once dropped the connection without an answer (the
    # status line is missing where http.server takes the request for HTTP/0.9)
    assert b"<p>Error code: " + status + b"</p>" in answer, answer[:200]
    assert caplog.records and KEY not in caplog.text
    assert "Traceback" not in caplog.text


def test_the_key_filter_hides_keys_wherever_a_log_message_quotes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lookup_server.web.access_log import KeyFilter

    key_filter = KeyFilter([KEY])
    for message in (
        f"Malformed HTTP message: Invalid header value 'Bearer {KEY}\\x01'",
        f"{KEY} /livelookup/demo HTTP/1.1",
        "GET /x?a=" + "".join(f"%{ord(c):02X}" for c in KEY) + "%0aFORGED",
    ):
        record = logging.LogRecord("tornado.general", logging.INFO, "x", 1, "%s", (message,), None)
        assert key_filter.filter(record)
        assert KEY not in record.getMessage() and "\n" not in record.getMessage()


def test_the_key_filter_leaves_a_message_as_written_where_the_key_is_literal() -> None:
    from lookup_server.web.access_log import KeyFilter

    # a traceback keeps its lines; only decoded text has its control characters re-encoded
    assert (
        KeyFilter([KEY]).hide(f"failed for {KEY}\nTraceback: 50%")
        == "failed for ***\nTraceback: 50%"
    )
