"""The webhook outbox under load: accepts a second, accept latency, delivery latency.

Issue 16's figures, for the SQLite outbox of one server (`gunicorn -w 2` with
the production gunicorn.conf.py): webhooks are posted as HelpSpot posts them
(a form body), by a few clients at once, while the server's delivery workers
deliver them to a local receiver that answers 200 at once. Reports:
  * webhooks accepted a second (stored durably, answered 202)
  * accept latency p50 / p99                 target p99 <= 5 ms while deliveries run
  * end-to-end delivery latency p50 / p99 (posted -> received)
  * an fsync'd SQLite insert alone, in the same run, the floor of an accept
Loopback only, every phase bounded in time.
Usage: python bench/bench_outbox.py [--webhooks N] [--clients N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "bench-webhook-key-0123456789"


class Receiver:
    """A peer that answers 200 at once and notes when each webhook arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                marker = str(json.loads(body).get("bench_id", ""))
                with receiver.lock:
                    receiver.arrived.setdefault(marker, time.time())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(config: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOOKUP_SERVER_CONFIG": str(config), "XDG_STATE_HOME": str(work)}
    return subprocess.Popen(
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
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_up(url: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {limit} s")


def post_webhook(url: str, number: int) -> tuple[str, float, float]:
    """Post one webhook as HelpSpot does; (its marker, when it was sent, seconds to 202)."""
    marker = f"w{number}"
    body = urllib.parse.urlencode(
        {"xRequest": str(10000 + number), "sTitle": "Printer on fire", "bench_id": marker}
    ).encode()
    request = urllib.request.Request(
        url, body, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    sent = time.time()
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 202:
            raise SystemExit(f"webhook {number}: HTTP {answer.status}")
    return marker, sent, time.perf_counter() - started


def fsync_insert_ms(folder: Path, count: int = 200) -> float:
    """The median time of one synchronous=FULL WAL insert, alone: an accept's floor."""
    conn = sqlite3.connect(folder / "floor.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (payload TEXT)")
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 500,))
        times.append((time.perf_counter() - started) * 1000)
    conn.close()
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "lookup.toml"
        config.write_text(
            f'[server]\nwebhook_key = "{KEY}"\noutbox = "{work / "outbox.sqlite3"}"\n\n'
            f'[targets.hooks]\nbackend = "http"\nurl = "{receiver.url}"\n'
            f'store = "{work / "pushes.sqlite3"}"\n'
        )
        port = free_port()
        server = start_server(config, port, work)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}/webhook/hooks/{KEY}"
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                posted = list(pool.map(lambda n: post_webhook(url, n), range(args.webhooks)))
            accepting = time.perf_counter() - started
            deadline = time.monotonic() + 120
            while len(receiver.arrived) < args.webhooks and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        floor = fsync_insert_ms(work)
    accepts = [seconds * 1000 for _, _, seconds in posted]
    delivered = [receiver.arrived[m] - sent for m, sent, _ in posted if m in receiver.arrived]
    print(f"SQLite outbox, one server (gunicorn -w 2), {args.clients} clients posting:")
    print(f"  webhooks accepted a second      {args.webhooks / accepting:8.0f}")
    print(
        f"  accept latency p50 / p99        {percentile(accepts, 0.5):6.1f} / "
        f"{percentile(accepts, 0.99):6.1f} ms   (target p99 <= 5 ms)"
    )
    if delivered:
        print(
            f"  delivery latency p50 / p99      {percentile(delivered, 0.5) * 1000:6.1f} / "
            f"{percentile(delivered, 0.99) * 1000:6.1f} ms   "
            f"({len(delivered)} of {args.webhooks} delivered)"
        )
    print(f"  an fsync'd SQLite insert alone  {floor:6.1f} ms (median)")


if __name__ == "__main__":
    main()
