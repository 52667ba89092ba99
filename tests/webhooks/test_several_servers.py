"""Three real servers (gunicorn) on one PostgreSQL outbox, two of them killed with SIGKILL.

HelpSpot's webhooks go to all three as through a load balancer; one server dies
while idle, another while it delivers. None may be lost, none delivered twice
at once, and the dead server's claim must be picked up within 30 s.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import psycopg
import pytest

from tests.conftest import DEMO_CSV, ROOT, free_port
from tests.webhooks.conftest import wait_for

KEY = "several-servers-key_0123456789"
WEBHOOKS = 24
#: The peer holds every delivery this long: time to kill a server in the middle of one.
HOLD_SECONDS = 0.4
#: A dead server's claim: taken over within one lease (20 s) plus a poll (5 s).
TAKEOVER_SECONDS = 30.0


@dataclass
class Peer:
    """The target's receiver: records each delivery, and any two of one webhook at once."""

    arrived: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key", "")
                with peer.lock:
                    if peer.in_flight.get(key):
                        peer.overlaps.append(key)
                    peer.in_flight[key] = peer.in_flight.get(key, 0) + 1
                    peer.arrived.append(key)
                self.hold()  # a slow peer, so that a kill lands mid-delivery
                with peer.lock:
                    peer.in_flight[key] -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def hold(self) -> None:
                """Wait HOLD_SECONDS, or until the sender is gone (killed mid-delivery)."""
                deadline = time.monotonic() + HOLD_SECONDS
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def peer() -> Iterator[tuple[Peer, int]]:
    receiver = Peer()
    http = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield receiver, http.server_address[1]
    http.shutdown()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    def pids(self) -> set[int]:
        """The master's and its workers' PIDs (all in the server's own process group)."""
        listing = subprocess.run(
            ["ps", "-o", "pid=", "-g", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        return {int(pid) for pid in listing.stdout.split()}

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()


def start_server(tmp_path: Path, name: str, url: str, peer_port: int) -> Server:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "customers.csv").write_bytes(DEMO_CSV.read_bytes())
    config = folder / "lookup.toml"
    config.write_text(
        f'[server]\nshared_key = "{KEY}"\noutbox = "{url}"\n'
        '[sources.demo]\nbackend = "csv"\npath = "customers.csv"\n'
        f'[targets.hook]\nbackend = "http"\nurl = "http://127.0.0.1:{peer_port}/in"\n'
    )
    port = free_port()
    log = open(folder / "gunicorn.log", "wb")  # noqa: SIM115 (the server's whole life)
    process = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py")),
            *("-w", "1", "--threads", "4", "-b", f"127.0.0.1:{port}", "wsgi:app"),
        ],
        cwd=ROOT,
        env={**os.environ, "LOOKUP_SERVER_CONFIG": str(config)},
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group: SIGKILL takes master and worker
    )
    server = Server(process, port, log)
    wait_for(lambda: _healthy(server), timeout=60)
    return server


def _healthy(server: Server) -> bool:
    assert server.process.poll() is None, "the server exited"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def send_webhook(server: Server, n: int) -> None:
    body = urllib.parse.urlencode({"xRequest": str(n), "sTitle": f"webhook {n}"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/webhook/hook/{KEY}", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def delivered(url: str) -> int:
    (count,) = rows(url, "SELECT COUNT(*) FROM outbox_webhooks WHERE state = 'delivered'")
    return int(str(count[0]))


def test_no_webhook_is_lost_or_delivered_twice_at_once(
    tmp_path: Path, postgres_url: str, peer: tuple[Peer, int]
) -> None:
    receiver, peer_port = peer
    servers = [start_server(tmp_path, f"s{i}", postgres_url, peer_port) for i in range(3)]
    try:
        # A first batch, to all three; once it is delivered every server is idle: kill one.
        for n in range(WEBHOOKS // 2):
            send_webhook(servers[n % 3], n)
        wait_for(lambda: delivered(postgres_url) == WEBHOOKS // 2, timeout=TAKEOVER_SECONDS * 2)
        idle = servers[0]
        idle.kill()
        # A second batch, to the two left; kill the one delivering a webhook right now.
        for n in range(WEBHOOKS // 2, WEBHOOKS):
            send_webhook(servers[1 + n % 2], n)
        leases: list[tuple[object, ...]] = []

        def someone_delivers() -> bool:
            """A lease whose webhook the peer is receiving right now (and holds a while)."""
            leases[:] = [
                lease
                for lease in rows(
                    postgres_url,
                    "SELECT id, idempotency_key, lease_owner FROM outbox_webhooks"
                    " WHERE state = 'delivering'",
                )
                if receiver.in_flight.get(str(lease[1]))
            ]
            return bool(leases)

        wait_for(someone_delivers)
        webhook_id, key, owner = leases[0]
        pid = int(str(owner).rsplit(":", 2)[1])
        busy = next(s for s in servers[1:] if pid in s.pids())
        busy.kill()
        killed_at = time.monotonic()
        survivor = next(s for s in servers[1:] if s is not busy)

        def taken_over() -> bool:
            state = rows(postgres_url, f"SELECT state FROM outbox_webhooks WHERE id = {webhook_id}")
            return state == [("delivered",)]

        wait_for(taken_over, timeout=TAKEOVER_SECONDS)
        assert time.monotonic() - killed_at < TAKEOVER_SECONDS
        attempts = rows(
            postgres_url, f"SELECT attempts FROM outbox_webhooks WHERE id = {webhook_id}"
        )
        assert attempts == [(2,)]  # claimed again by the survivor, not finished by the dead
        wait_for(lambda: delivered(postgres_url) == WEBHOOKS, timeout=TAKEOVER_SECONDS * 2)
        assert survivor.process.poll() is None
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.kill()
    stored = {str(k) for (k,) in rows(postgres_url, "SELECT idempotency_key FROM outbox_webhooks")}
    assert len(stored) == WEBHOOKS and set(receiver.arrived) == stored  # none lost
    assert receiver.overlaps == []  # none delivered twice at once
    # At least once: only the webhook cut short by the kill may have come twice.
    twice = {k for k in receiver.arrived if receiver.arrived.count(k) > 1}
    assert twice <= {str(key)}
    payloads = [
        json.loads(str(p)) for (p,) in rows(postgres_url, "SELECT payload FROM outbox_webhooks")
    ]
    assert sorted(int(str(p["xRequest"])) for p in payloads) == list(range(WEBHOOKS))
