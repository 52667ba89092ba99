"""lookup-server under a hostile network, hung backends and a killed worker (issue 13).

Starts `gunicorn wsgi:app` with the project's gunicorn.conf.py (2 workers) on
loopback, then keeps a steady Live Lookup load on a CSV source and reports its
p50/p99 latency and errors in each phase:

  1. alone;
  2. with 500 connections held open for 40 s: half idle, half sending one
     byte of a request line every 2 s                 target: p99 < 100 ms
  3. the same, plus a second source whose backend hangs (accepts, never
     answers) and a third whose backend drips a byte a second, both called
     all the time                                     target: p99 < 100 ms
  4. across `kill -9` of a worker (gunicorn starts another)

and, after the storm: threads alive in each worker (calls past their
source's timeout must have let theirs go), and webhooks accepted vs
delivered to a local receiver (none may be lost). Loopback only; every phase
is bounded in time. Usage: python bench/bench_hostile.py [--slow 500] [--seconds 40]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_CSV = ROOT / "lookup_server" / "demo" / "customers.csv"
KEY = "bench-hostile-key_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the other systems: a backend that hangs, one that drips, a webhook receiver ---------


def hanging_server() -> int:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []

    def run() -> None:
        while True:
            held.append(listener.accept()[0])

    threading.Thread(target=run, daemon=True).start()
    return int(listener.getsockname()[1])


def dripping_server() -> int:
    """Answers HTTP 200 and then one byte of body a second, forever."""

    class Drip(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "100000000")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


class Receiver(ThreadingHTTPServer):
    delivered: set[str]


def webhook_receiver() -> Receiver:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            assert isinstance(self.server, Receiver)
            self.server.delivered.add(json.loads(body)["bench_id"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = Receiver(("127.0.0.1", 0), Handler)
    server.delivered = set()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- load ---------------------------------------------------------------------------------


class Load:
    """Steady Live Lookups from a few keep-alive clients; latencies per phase."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port, self.clients = port, clients
        self.samples: list[tuple[float, float, bool]] = []  # (when, seconds, ok)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        ids = ["1001", "1002", "1003", "1004", "1005"]
        while not self.stopping.is_set():
            path = f"/livelookup/crm?ll_key={KEY}&request=1&customer_id={random.choice(ids)}"
            started = time.perf_counter()
            ok = False
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and b"<customer>" in body
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            self.samples.append((time.monotonic(), time.perf_counter() - started, ok))
            time.sleep(0.005)  # steady, not saturating: latency is what is measured

    def between(self, start: float, end: float) -> tuple[int, float, float, int]:
        chosen = [(s, ok) for t, s, ok in self.samples if start <= t < end]
        times = sorted(s for s, _ in chosen)
        if not times:
            return 0, float("nan"), float("nan"), 0
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (
            len(times),
            statistics.median(times) * 1000,
            p99 * 1000,
            sum(1 for _, ok in chosen if not ok),
        )


class SlowClients:
    """``count`` connections held open: half idle, half a byte every 2 s."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.stopping = threading.Event()
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self, dripping: bool) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setblocking(False)
        if dripping:
            sock.send(b"G")
        return sock

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        socks = [(self._connect(i % 2 == 1), i % 2 == 1) for i in range(self.count)]
        for index, (sock, _) in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, index)
        while not self.stopping.wait(2.0):
            for key, _ in selector.select(0):  # the server closed it: open another
                index = key.data
                closed = socks[index][0]  # key.fileobj, typed as socket
                selector.unregister(closed)
                closed.close()
                socks[index] = (self._connect(socks[index][1]), socks[index][1])
                selector.register(socks[index][0], selectors.EVENT_READ, index)
                self.reconnects += 1
            for sock, dripping in socks:
                if dripping:
                    with contextlib.suppress(OSError):
                        sock.send(b"E")
        for sock, _ in socks:
            sock.close()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)


def bad_source_traffic(port: int, stopping: threading.Event) -> list[int]:
    """Keep calling the hung and the dripping sources; the statuses they answered."""
    statuses: list[int] = []

    def run(source: str) -> None:
        while not stopping.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request(
                    "GET", f"/livelookup/{source}?ll_key={KEY}&request=1&email=ada@example.com"
                )
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            except (OSError, http.client.HTTPException):
                statuses.append(0)
            finally:
                connection.close()

    for source in ("hung", "drip"):
        for _ in range(6):
            threading.Thread(target=run, args=(source,), daemon=True).start()
    return statuses


# -- the server ---------------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def post_webhooks(port: int, first: int, count: int, limit: float = 20) -> int:
    """Post ``count`` webhooks (giving up after ``limit`` seconds); how many were accepted."""
    accepted, deadline = 0, time.monotonic() + limit
    for number in range(first, first + count):
        if time.monotonic() > deadline:
            break
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            body = f"xRequest={number}&bench_id={number}&sTitle=Bench"
            connection.request(
                "POST",
                f"/webhook/hook/{KEY}",
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            accepted += connection.getresponse().status == 202
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=500, help="slow connections to hold")
    parser.add_argument("--seconds", type=float, default=40, help="length of phases 2 and 3")
    parser.add_argument("--worker-class", help="another gunicorn worker, to compare (e.g. sync)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    receiver = webhook_receiver()
    hung, drip = hanging_server(), dripping_server()
    shutil.copy(DEMO_CSV, work / "customers.csv")
    (work / "lookup.toml").write_text(f"""
[server]
shared_key = "{KEY}"
outbox = "{work / "outbox.sqlite3"}"
[sources.crm]
backend = "csv"
path = "customers.csv"
[sources.hung]
backend = "highrise"
url = "http://127.0.0.1:{hung}"
token = "x"
timeout = 2
[sources.drip]
backend = "highrise"
url = "http://127.0.0.1:{drip}"
token = "x"
timeout = 2
[targets.hook]
backend = "http"
url = "http://127.0.0.1:{receiver.server_address[1]}/in"
""")
    port = free_port()
    env = {**os.environ, "LOOKUP_SERVER_CONFIG": str(work / "lookup.toml")}
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
            *(["-k", args.worker_class] if args.worker_class else []),
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[tuple[str, tuple[int, float, float, int]]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        threads_before = {pid: thread_count(pid) for pid in worker_pids(server.pid)}
        load = Load(port)
        load.start()
        accepted = post_webhooks(port, 0, 50)

        mark = time.monotonic()
        time.sleep(10)
        rows.append(("1. alone", load.between(mark + 1, time.monotonic())))

        slow = SlowClients(port, args.slow)
        slow.start()
        mark = time.monotonic()
        time.sleep(args.seconds)
        rows.append((f"2. {args.slow} slow connections", load.between(mark + 1, time.monotonic())))

        stopping = threading.Event()
        statuses = bad_source_traffic(port, stopping)
        mark = time.monotonic()
        accepted += post_webhooks(port, 50, 50)
        time.sleep(max(args.seconds - (time.monotonic() - mark), 0))
        rows.append(("3. + hung and dripping sources", load.between(mark + 1, time.monotonic())))

        victim = worker_pids(server.pid)[0]
        mark = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        accepted += post_webhooks(port, 100, 50)
        time.sleep(10)
        rows.append(("4. kill -9 of a worker", load.between(mark, time.monotonic())))

        stopping.set()
        slow.stop()
        load.stop()
        time.sleep(5)  # calls past their timeout let their threads go
        threads_after = {pid: thread_count(pid) for pid in worker_pids(server.pid)}
        # a source whose stuck calls let go answers 504 (timed out), not 503 (busy)
        recovered: dict[str, int | str] = {}
        for source in ("hung", "drip"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request(
                    "GET", f"/livelookup/{source}?ll_key={KEY}&request=1&email=ada@example.com"
                )
                recovered[source] = connection.getresponse().status
            except (OSError, http.client.HTTPException) as exc:
                recovered[source] = type(exc).__name__
        deadline = time.monotonic() + 60
        while len(receiver.delivered) < accepted and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'phase':<36} {'lookups':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, (count, p50, p99, errors) in rows:
        print(f"{name:<36} {count:>8} {p50:>8.1f} {p99:>8.1f} {errors:>7}")
    print("target: p99 < 100 ms in phases 2 and 3, no errors in phases 1-3")
    print(f"slow connections the server closed (and the bench reopened): {slow.reconnects}")
    bad = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(f"hung/dripping sources answered (status: count): {bad}")
    print(
        f"worker threads before: {sorted(threads_before.values())}, "
        f"after the storm: {sorted(threads_after.values())} (at most 32 request threads "
        "and 8 per network source)"
    )
    print(
        f"after the storm, the hung and dripping sources answer: {recovered} "
        "(target: 504, their slots free again; 503 means calls are still stuck)"
    )
    print(
        f"webhooks accepted: {accepted}, delivered: {len(receiver.delivered)} "
        "(target: all delivered)"
    )


if __name__ == "__main__":
    main()
