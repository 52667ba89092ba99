"""The server as production runs it: `gunicorn wsgi:app` with gunicorn.conf.py.

Each test starts a real gunicorn (one worker, few threads) on the built-in
worker and talks to it over sockets, as HelpSpot and a hostile caller do.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import runpy
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import DEMO_CSV, ROOT, free_port, self_signed_certificate
from tests.support.helpspot import (
    assert_livelookup,
    double_encode,
    helpspot_error,
    request_page_params,
)

KEY = "worker-test-key_0123456789"
#: How long a test waits for what must happen at once (a hang guard, not a limit).
HANG_GUARD = 30.0


@dataclass
class Server:
    port: int
    outbox: Path
    log: Path
    tls: ssl.SSLContext | None = None

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 20) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                self.url(path), timeout=timeout, context=self.tls
            ) as response:
                return response.status, bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, bytes(exc.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """gunicorn with one worker of 4 threads: few, so that a pinned thread shows."""
    yield from serve(tmp_path, "max_body_bytes = 100000")


def serve(
    tmp_path: Path,
    server_settings: str,
    *gunicorn_args: str,
    tls: ssl.SSLContext | None = None,
    descriptors: int = 0,
    tables: str = "",
) -> Iterator[Server]:
    """gunicorn on the demo CSV, ``server_settings`` in ``[server]``, ``tables`` after it."""
    shutil.copy(DEMO_CSV, tmp_path / "customers.csv")
    outbox = tmp_path / "outbox.sqlite3"
    config = tmp_path / "lookup.toml"
    config.write_text(
        f'[server]\nshared_key = "{KEY}"\noutbox = "{outbox}"\n{server_settings}\n'
        '[sources.demo]\nbackend = "csv"\npath = "customers.csv"\n'
        '[targets.hook]\nbackend = "http"\nurl = "http://127.0.0.1:9/unreachable"\n'
        f"{tables}"
    )
    port, log = free_port(), tmp_path / "gunicorn.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "-w",
                "1",
                "--threads",
                "4",
                "-b",
                f"127.0.0.1:{port}",
                *gunicorn_args,
                "wsgi:app",
            ],
            cwd=ROOT,
            env={**os.environ, "LOOKUP_SERVER_CONFIG": str(config)},
            stdout=log_file,
            stderr=log_file,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors,) * 2))
            if descriptors
            else None,
        )
    running = Server(port, outbox, log, tls)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if running.get("/healthz", timeout=5)[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)


def lookup_path(**params: str) -> str:
    return "/livelookup/demo?" + urlencode({"ll_key": KEY, **request_page_params(**params)})


def test_the_configured_worker_is_lookup_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # named, so that reading the file makes no folder nor changes this process's environment
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert settings["worker_class"] == "lookup_server.web.worker.LookupWorker"


def test_request_lines_of_64_kib_and_more_are_served(server: Server) -> None:
    # 3,000 characters of German in one custom field pass 8 KiB in HelpSpot's URL;
    # after a trigger's Webhook action the whole thread rides along too
    notes = double_encode("Rückrufbitte wegen Lieferverzögerung, Grüße " * 70)
    thread = double_encode("<p>Sehr geehrte Kundin, vielen Dank für Ihre Nachricht.</p>" * 700)
    path = lookup_path(customer_id="1001", Custom7=notes, Custom8=thread)
    assert len(path) > 64 * 1024
    status, body = server.get(path)
    assert status == 200
    assert [c["customer_id"] for c in assert_livelookup(body).customers] == ["1001"]
    # http-post mode: the same parameters in the URL and in the body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    form = urlencode(request_page_params(customer_id="1001", Custom7=notes))
    connection.request(
        "POST", path, body=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    answer = connection.getresponse()
    assert answer.status == 200
    assert [c["customer_id"] for c in assert_livelookup(answer.read()).customers] == ["1001"]


def test_past_max_request_line_staff_read_which_field_to_shorten(server: Server) -> None:
    status, body = server.get(
        lookup_path(customer_id="1001", Custom9=double_encode("長い" * 12_000))
    )
    assert status == 414
    assert "Custom9" in helpspot_error(body) or b"Custom9" in body
    assert b"max_request_line" in body


def test_idle_and_dripping_connections_cost_no_thread(server: Server) -> None:
    # With 4 threads, gunicorn's sync or gthread workers would be pinned by these.
    held = []
    for i in range(40):
        sock = socket.create_connection(("127.0.0.1", server.port))
        if i % 2:
            sock.sendall(b"GET /livelookup/demo?customer_id=1")  # and then nothing more
        held.append(sock)
    try:
        for _ in range(3):
            for sock in held[1::2]:
                sock.sendall(b"0")  # a byte now and then
            status, body = server.get(lookup_path(customer_id="1001"), timeout=10)
            assert status == 200
            assert assert_livelookup(body).customers
        assert server.get("/healthz", timeout=10) == (200, b"ok\n")
    finally:
        for sock in held:
            sock.close()


def test_a_chunked_body_over_the_limit_is_refused_and_nothing_stored(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    chunk = b"request_history%5Bitem%5D%5B1%5D%5BtNote%5D=" + b"x" * 50_000 + b"&"
    connection.putrequest("POST", f"/webhook/hook/{KEY}")
    connection.putheader("Content-Type", "application/x-www-form-urlencoded")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for piece in [b"xRequest=12345&", *[chunk] * 5]:
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    answer = connection.getresponse()
    assert answer.status == 413
    answer.read()
    with sqlite3.connect(server.outbox) as db:
        assert db.execute("SELECT count(*) FROM webhooks").fetchone() == (0,)
        # HelpSpot never sends it again: the loss is recorded, with its size and request
        refused = db.execute("SELECT target, size_bytes, request_id FROM refusals").fetchall()
    assert refused == [("hook", 15 + 5 * len(chunk), "12345")]
    # a chunked body within the limit is stored whole
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    connection.request(
        "POST",
        f"/webhook/hook/{KEY}",
        body=iter([b"xRequest=7&", chunk]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 202
    with sqlite3.connect(server.outbox) as db:
        (payload,) = db.execute("SELECT payload FROM webhooks").fetchone()
    assert '"xRequest":"7"' in payload and "x" * 50_000 in payload


SPELLINGS = [
    "/livelookup/demo?ll_key={key}&customer_id=1001",
    "/livelookup/demo/{key}?customer_id=1",
    "//livelookup/demo/{key}?customer_id=1",
    "/livelookup%2Fdemo%2F{key}",
    "/%6civelookup/demo/{key}",
    "http://127.0.0.1/livelookup/demo/{key}?customer_id=1",
    "/ajax//demo/{key}",
    "/ajax/demo/{key}/",
    "//webhook/hook/{key}",
    "/livelookup/demo?ll_key[]={key}",
    "/livelookup/demo?ll-key={key}",
    "/livelookup/demo?ll%5Fkey={key}",
]


def test_no_log_line_quotes_a_key_from_a_malformed_request(server: Server) -> None:
    for request in (
        f"GET /healthz HTTP/1.1\r\nAuthorization: Bearer {KEY}\x01\r\n\r\n",
        f"GET /healthz HTTP/1.1\r\nHost: {KEY}\x01\r\n\r\n",
        f"{KEY} /livelookup/demo HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /livelookup/demo?ll_key={KEY}&a=%0a1.2.3.4%20-%20FORGED HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(request.encode("latin-1"))
            sock.shutdown(socket.SHUT_WR)
            sock.recv(100)  # an answer (400, say) or a closed connection
    assert server.get("/healthz")[0] == 200
    deadline = time.monotonic() + 10
    while "FORGED" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    text = server.log.read_text()
    assert KEY not in text
    assert not any(line.startswith("1.2.3.4 - ") for line in text.splitlines())


def test_no_spelling_of_a_key_reaches_the_access_log(server: Server) -> None:
    for target in SPELLINGS:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        connection.putrequest("GET", target.format(key=KEY), skip_host=True)
        connection.putheader("Host", f"127.0.0.1:{server.port}")
        connection.endheaders()
        connection.getresponse().read()
        connection.close()
    deadline = time.monotonic() + 10
    while server.log.read_text().count('HTTP/1.1" ') < len(SPELLINGS):
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    assert KEY not in server.log.read_text()


#: A webhook as HelpSpot's triggers build it (HELPSPOT.md §6): PHP's http_build_query of
#: the request row and its whole history, each entry with its documents, and their bytes
#: when HelpSpot keeps attachments in its database.
WEBHOOK_PHP = r"""<?php
$history = array();
for ($i = 1; $i <= 25; $i++) {
    $documents = array();
    if ($i == 1) {
        $documents[] = array('xDocumentId' => 9, 'sFilename' => 'scan.pdf',
            'sFileMimeType' => 'application/pdf', 'blobFile' => random_bytes((int) $argv[1]));
    }
    $history[1000 + $i] = array('xRequestHistory' => 1000 + $i, 'xRequest' => 4242,
        'tNote' => str_repeat('<p>Thank you for your message &amp; patience.</p>', 800),
        'documents' => $documents);
}
echo http_build_query(array('xRequest' => 4242, 'sTitle' => 'Scanner',
    'request_history' => array('item' => $history)));
"""


def test_the_largest_webhook_a_real_ticket_makes_is_stored_without_file_bytes(
    tmp_path: Path,
) -> None:
    from tests.support.requirements import need

    need(shutil.which("php") is not None, "php-cli not installed (apt-get install php-cli)")
    script = tmp_path / "webhook.php"
    script.write_text(WEBHOOK_PHP)
    # one attachment of 10 MB: HelpSpot's default cap on e-mail attachments
    body = subprocess.run(
        ["php", str(script), "10000000"], capture_output=True, check=True, timeout=60
    ).stdout
    assert len(body) > 25_000_000
    for running in serve(tmp_path, ""):  # the default max_body_bytes
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=120)
        connection.request(
            "POST",
            f"/webhook/hook/{KEY}",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert connection.getresponse().status == 202
        with sqlite3.connect(running.outbox) as db:
            (payload,) = db.execute("SELECT payload FROM webhooks").fetchone()
    stored = json.loads(payload)
    entry = stored["request_history"]["item"]["1001"]
    assert entry["documents"] == [
        {"xDocumentId": "9", "sFilename": "scan.pdf", "sFileMimeType": "application/pdf"}
    ]
    assert len(stored["request_history"]["item"]) == 25 and len(payload) < 2_000_000


def test_gunicorn_tls_settings_serve_https(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    for running in serve(
        tmp_path,
        "",
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        tls=ssl.create_default_context(cafile=str(cert)),
    ):
        status, body = running.get(lookup_path(customer_id="1001"))
        assert status == 200
        assert [c["customer_id"] for c in assert_livelookup(body).customers] == ["1001"]


def test_an_app_that_fails_is_answered_with_plain_text_helpspot_shows() -> None:
    from lookup_server.web.worker import call_wsgi

    def broken(environ: object, start_response: object) -> list[bytes]:
        raise RuntimeError("password=hunter2")

    response = call_wsgi(broken, {})
    assert response.status.startswith("500")
    assert "hunter2" not in helpspot_error(response.body)


def test_out_of_file_descriptors_the_worker_pauses_and_recovers(tmp_path: Path) -> None:
    for running in serve(tmp_path, "", descriptors=160):
        held = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(200)]
        deadline = time.monotonic() + 10
        while "out of file descriptors" not in running.log.read_text():
            assert time.monotonic() < deadline, running.log.read_text()[-2000:]
            time.sleep(0.05)
        for sock in held:
            sock.close()
        status, body = running.get(lookup_path(customer_id="1001"), timeout=20)
        assert status == 200 and assert_livelookup(body).customers
        log = running.log.read_text()
        # once spinning: a traceback per retry, hundreds of megabytes in seconds
        assert "out of file descriptors" in log and len(log) < 200_000
        assert "Traceback" not in log


def test_a_head_past_twice_max_request_line_is_not_buffered(tmp_path: Path) -> None:
    # every unfinished head may hold this much of a worker's memory: no floor above it
    for running in serve(tmp_path, "max_request_line = 65536"):
        status, body = running.get(lookup_path(Custom9="x" * 100_000))
        assert status == 414 and b"Custom9" in body  # past the setting: a readable reason
        with socket.create_connection(("127.0.0.1", running.port), timeout=20) as sock:
            with contextlib.suppress(OSError):  # the worker may close while we still send
                sock.sendall(b"GET /livelookup/demo?Custom9=" + b"x" * 300_000)
            with contextlib.suppress(ConnectionResetError):  # closed or reset: nothing kept
                assert sock.recv(100) == b""


def test_a_worker_told_to_stop_while_its_app_loads_stops(tmp_path: Path) -> None:
    # Loading the app may take seconds (a CSV's first index is built then): a
    # SIGTERM meanwhile must not be forgotten, or the worker serves on until the
    # master kills it at the graceful timeout.
    started = tmp_path / "loading"
    (tmp_path / "slowapp.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "time.sleep(3)\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'']\n"
    )
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "-w",
            "1",
            "--graceful-timeout",
            "120",
            "-b",
            f"127.0.0.1:{free_port()}",
            "slowapp:app",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.terminate()
        # well within the graceful timeout: the worker saw the signal
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()


def test_what_the_app_asks_to_run_once_answered_runs_after_the_answer_is_sent() -> None:
    # the app's count of calls being answered ends there (web/calls.py)
    import asyncio
    import concurrent.futures
    import threading

    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    from lookup_server.core.calls import ANSWERED
    from lookup_server.web.worker import Limits, WsgiGateway

    events: list[str] = []
    done = threading.Event()

    def answered() -> None:
        events.append("answered")
        done.set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[ANSWERED].append(answered)
        start_response("200 OK", [("Content-Type", "text/plain")])
        events.append("app returned")
        return [b"ok"]

    started = threading.Event()
    loop: list[IOLoop] = []
    port = free_port()

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        executor = concurrent.futures.ThreadPoolExecutor(2)
        server = HTTPServer(WsgiGateway(app, executor, Limits()))
        server.listen(port, "127.0.0.1")
        loop.append(IOLoop.current())
        started.set()
        IOLoop.current().start()
        server.stop()
        executor.shutdown()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(HANG_GUARD)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=HANG_GUARD) as answer:
            assert answer.read() == b"ok"
        assert done.wait(HANG_GUARD)
    finally:
        loop[0].add_callback(loop[0].stop)
        thread.join(HANG_GUARD)
    assert events == ["app returned", "answered"]


def test_the_worker_takes_one_pending_connection_at_a_time() -> None:
    # tornado took every pending connection at once: the worker woken first got
    # 7 or 8 of a client's 8 keep-alive connections and the other idled
    from lookup_server.web.worker import _Listener

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        listening.setblocking(False)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
        try:
            listener = _Listener(listening)
            first, _ = listener.accept()
            with pytest.raises(BlockingIOError):  # the end of this turn: others may take one
                listener.accept()
            second, _ = listener.accept()  # the next turn
            first.close()
            second.close()
        finally:
            for client in clients:
                client.close()
