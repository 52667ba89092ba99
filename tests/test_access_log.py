"""Shared keys never reach an access log: werkzeug's (serve) nor gunicorn's."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from lookup_server.access_log import GunicornLogger, RedactingRequestHandler
from lookup_server.auth import redact

KEY = "s3cret-key_0123456789"


@pytest.mark.parametrize("line,expected", [
    (f"/livelookup/crm?ll_key={KEY}&email=a", "/livelookup/crm?ll_key=***&email=a"),
    (f"/livelookup/crm?email=a&LL_KEY={KEY}?source_id=0", "/livelookup/crm?email=a&LL_KEY=***"),
    (f"GET /ajax/products/{KEY}?callingField=x HTTP/1.1",
     "GET /ajax/products/***?callingField=x HTTP/1.1"),
    (f"/webhook/hooks/{KEY}", "/webhook/hooks/***"),
    ("/push/crm/ID-42", "/push/crm/ID-42"),  # a push id is not a key
])
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_gunicorn_access_line_hides_the_key() -> None:
    logger = GunicornLogger(SimpleNamespace(  # the settings gunicorn's Logger reads
        errorlog="-", loglevel="info", accesslog=None, access_log_format="", syslog=False,
        capture_output=False, logconfig=None, logconfig_dict={}, logconfig_json=None,
        disable_redirect_access_to_syslog=False, user=0, group=0, syslog_addr=None,
        syslog_facility="user", syslog_prefix=None, dogstatsd_tags="", statsd_host=None,
        statsd_prefix="", umask=0, worker_tmp_dir=None, forwarded_allow_ips="127.0.0.1",
        permit_obsolete_folding=False))
    request = SimpleNamespace(method="GET", path=f"/ajax/p/{KEY}",
                              query=f"ll_key={KEY}", uri=f"/ajax/p/{KEY}?ll_key={KEY}",
                              version=(1, 1), headers=[("AUTHORIZATION", f"Bearer {KEY}")])
    response = SimpleNamespace(status="200 OK", response_length=10, sent=10, headers=[])
    environ = {"REMOTE_ADDR": "127.0.0.1", "RAW_URI": request.uri,
               "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_METHOD": "GET",
               "PATH_INFO": request.path, "QUERY_STRING": request.query}
    atoms = logger.atoms(response, request, environ, SimpleNamespace(
        seconds=0, microseconds=1000, total_seconds=lambda: 0.001))
    assert KEY not in repr(atoms)
    assert atoms["U"] == "/ajax/p/***" and atoms["q"] == "ll_key=***"


def test_development_server_request_line_hides_the_key(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    handler: Any = RedactingRequestHandler.__new__(RedactingRequestHandler)
    handler.requestline = f"GET /livelookup/crm/{KEY}?ll_key={KEY} HTTP/1.1"
    handler.client_address = ("127.0.0.1", 5000)
    handler.command, handler.path = "GET", f"/livelookup/crm/{KEY}?ll_key={KEY}"
    handler.request_version = "HTTP/1.1"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log_request(200, 10)
    assert caplog.text and KEY not in caplog.text
    assert "GET /livelookup/crm/***?ll_key=*** HTTP/1.1" in caplog.text
