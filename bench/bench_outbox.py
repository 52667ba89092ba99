"""The webhook outbox under load: accepts a second, accept latency, delivery latency.

Issue 16's figures, in one run, each server `gunicorn -w 2` with the
production gunicorn.conf.py. Webhooks are posted as HelpSpot posts them (a
form body, a new connection each), by client processes spread over the
servers, while the servers' delivery workers deliver them to a receiver (a
process of its own) that answers 200 at once.

  * One SQLite server on the whole machine: flat out (each client posts its
    next webhook when the last was answered), then at a steady --pace (an open
    loop, as HelpSpot's triggers send): accept latency p50 / p99
                                       target p99 <= 5 ms while deliveries run
  * Scale-out: one SQLite server, one and three PostgreSQL servers
    (127.0.0.1:5432, a schema of their own, dropped after), each held to
    --server-cpus cores by a cgroup, as on a host of its own: on one machine,
    unconfined servers would only share its cores. --rounds pairs of SQLite x1
    and PostgreSQL x3 in alternating order, the ratio per round and its median.
    Webhooks accepted a second
                                       target: PostgreSQL x3 >= 1.5 x SQLite x1
    and accepted and delivered a second (first post to last arrival): a server
    whose deliveries wait for its calls accepts faster than it keeps up
  * A server killed (SIGKILL) while it delivers: seconds until the others
    delivered what it held, on this host and as from another (its leases expire)
  * an fsync'd SQLite insert alone, the floor of an accept.

Loopback only, every phase bounded in time.
Usage: python bench/bench_outbox.py [--webhooks N] [--clients N] [--pace N]
                                    [--server-cpus N] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
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
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "bench-webhook-key-0123456789"


class Receiver:
    """A peer in a process of its own that answers 200 at once and notes when each webhook arrived.

    Its own process: in the bench's, the clients' threads and its own would
    share one GIL, and the clients would time the receiver's work as the server's.
    """

    def __init__(self, hold: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--receive", "--hold", str(hold)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        self.base = self.url.rsplit("/", 1)[0]

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.base}/count", timeout=10) as answer:
            return int(answer.read())

    def arrivals(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.base}/arrived", timeout=30) as answer:
            arrived: dict[str, float] = json.loads(answer.read())
        return arrived

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def receive(hold: float) -> None:
    """The receiver's process: print its URL, then serve until terminated.

    ``hold``: seconds each delivery is held before its answer (a slow peer, so
    that a kill lands mid-delivery), or until its sender is gone.
    """
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                body = (
                    str(len(arrived)) if self.path == "/count" else json.dumps(arrived)
                ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            marker = str(json.loads(body).get("bench_id", ""))
            with lock:
                arrived.setdefault(marker, time.time())
            deadline = time.monotonic() + hold
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return  # the sender was killed
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}/in", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Where a server is given a CPU share of its own (cgroup v1 cpu controller; root only).
CGROUPS = Path("/sys/fs/cgroup/cpu")
#: The share's period: short, so that a server over its share waits milliseconds, not 100.
PERIOD_US = 10_000


@contextmanager
def cpu_share(cpus: float | None) -> Iterator[Path | None]:
    """A cgroup allowing ``cpus`` cores, removed after; None when unconfined or not allowed."""
    if cpus is None or not os.access(CGROUPS, os.W_OK):
        yield None
        return
    group = CGROUPS / f"bench-outbox-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
        yield group
    finally:
        for _ in range(50):  # its processes may take a moment to be gone
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def start_server(
    config: Path, port: int, work: Path, cpus: float | None = None
) -> subprocess.Popen[bytes]:
    """``gunicorn -w 2``, held to ``cpus`` cores (a cgroup of its own) when given and allowed."""
    env = {**os.environ, "LOOKUP_SERVER_CONFIG": str(config), "XDG_STATE_HOME": str(work)}
    group = _SHARES.enter_context(cpu_share(cpus))

    def confine() -> None:  # in the child, before gunicorn starts: its workers follow it
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

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
        preexec_fn=confine,
    )


#: The cgroups of the servers started, removed when main ends.
_SHARES = contextlib.ExitStack()


def wait_until_up(url: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {limit} s")


def post_webhook(urls: list[str], number: int) -> tuple[str, float, float]:
    """Post one webhook as HelpSpot does; (its marker, when it was sent, seconds to 202).

    A new connection each, as HelpSpot's curl makes, and a request written by
    hand: urllib spent more CPU per webhook than the server, and on two cores
    the clients' CPU is the servers' too.
    """
    marker = f"w{number}"
    body = urllib.parse.urlencode(
        {"xRequest": str(10000 + number), "sTitle": "Printer on fire", "bench_id": marker}
    ).encode()
    url = urllib.parse.urlsplit(urls[number % len(urls)])
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    sent = time.time()
    started = time.perf_counter()
    with socket.create_connection((url.hostname, url.port or 80), timeout=30) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:  # the status line is all the bench needs
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    seconds = time.perf_counter() - started
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"no answer"
    if status != b"202":
        raise SystemExit(f"webhook {number}: HTTP {status.decode(errors='replace')}")
    return marker, sent, seconds


def post_many(
    urls: list[str], numbers: range, pace: float = 0.0, start_at: float = 0.0
) -> list[tuple[str, float, float]]:
    """One client: post these webhooks one after another, or webhook n at start_at + n / pace."""
    posted = []
    for number in numbers:
        due = start_at + number / pace if pace else start_at
        time.sleep(max(0.0, due - time.time()))
        posted.append(post_webhook(urls, number))
    return posted


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


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """An outbox URL whose search_path is a new schema, dropped afterwards."""
    import psycopg

    schema = f"bench_outbox_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def measure(
    outbox: str,
    servers: int,
    args: argparse.Namespace,
    work: Path,
    pace: float = 0.0,
    cpus: float | None = None,
) -> dict[str, float]:
    """One configuration: its servers started, the webhooks posted, all delivered.

    ``pace``: webhooks a second offered in all (an open loop, as HelpSpot's
    triggers send them); 0 posts each as soon as the client's last was answered.
    """
    receiver = Receiver()
    config = work / f"lookup-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        f'[server]\nwebhook_key = "{KEY}"\noutbox = "{outbox}"\n\n'
        f'[targets.hooks]\nbackend = "http"\nurl = "{receiver.url}"\n'
        f'store = "{work / "pushes.sqlite3"}"\n'
    )
    ports = [free_port() for _ in range(servers)]
    running = [start_server(config, port, work, cpus) for port in ports]
    try:
        for port in ports:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
        urls = [f"http://127.0.0.1:{port}/webhook/hooks/{KEY}" for port in ports]
        # a process per client: threads of one process would time each other's GIL waits
        shares = [range(c, args.webhooks, args.clients) for c in range(args.clients)]
        with ProcessPoolExecutor(args.clients) as pool:
            pool.map(time.sleep, [0] * args.clients)  # the processes started before the clock
            start_at = time.time() + 0.5
            started = time.perf_counter()
            count = len(shares)
            posts = pool.map(post_many, [urls] * count, shares, [pace] * count, [start_at] * count)
            posted = [p for share in posts for p in share]
        accepting = time.perf_counter() - started
        deadline = time.monotonic() + 120
        while receiver.count() < args.webhooks and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = receiver.arrivals()
    finally:
        for server in running:
            os.killpg(server.pid, signal.SIGTERM)
        for server in running:
            server.wait(timeout=30)
        receiver.stop()
    accepts = [seconds * 1000 for _, _, seconds in posted]
    delivered = [arrived[m] - sent for m, sent, _ in posted if m in arrived]
    return {
        "rate": args.webhooks / (accepting - 0.5),
        # accepted and delivered: what the servers keep up with, backlog included
        "sustained": len(delivered) / (max(arrived.values(), default=start_at) - start_at),
        "p50": percentile(accepts, 0.5),
        "p99": percentile(accepts, 0.99),
        "d50": percentile(delivered, 0.5) * 1000 if delivered else float("nan"),
        "d99": percentile(delivered, 0.99) * 1000 if delivered else float("nan"),
        "delivered": len(delivered),
    }


def children(pid: int) -> set[int]:
    """``pid`` and every process under it (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def recovery(url: str, work: Path, elsewhere: bool) -> float:
    """Seconds from a kill -9 of a server mid-delivery until its claims are delivered.

    Three servers on one PostgreSQL outbox, a peer that holds each delivery
    0.4 s. ``elsewhere``: the dead server's leases are renamed to another host
    right after the kill, as when it ran on one: they must expire (20 s) then,
    while on this host its gone PIDs free them at once.
    """
    import psycopg

    receiver = Receiver(hold=0.4)
    config = work / f"lookup-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        f'[server]\nwebhook_key = "{KEY}"\noutbox = "{url}"\n\n'
        f'[targets.hooks]\nbackend = "http"\nurl = "{receiver.url}"\n'
        f'store = "{work / "pushes.sqlite3"}"\n'
    )
    ports = [free_port() for _ in range(3)]
    running = [start_server(config, port, work) for port in ports]
    try:
        for port in ports:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
        urls = [f"http://127.0.0.1:{port}/webhook/hooks/{KEY}" for port in ports]
        for number in range(24):
            post_webhook(urls, number)
        victim = running[0]
        with psycopg.connect(url, autocommit=True) as conn:
            held: list[int] = []
            deadline = time.monotonic() + 60
            while not held and time.monotonic() < deadline:
                pids = {str(pid) for pid in children(victim.pid)}
                held = [
                    int(row[0])
                    for row in conn.execute(
                        "SELECT id, lease_owner FROM outbox_webhooks WHERE state = 'delivering'"
                    )
                    if str(row[1]).rsplit(":", 2)[1] in pids
                ]
            os.killpg(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            if elsewhere:
                conn.execute(
                    "UPDATE outbox_webhooks SET lease_owner = 'elsewhere:1:bench'"
                    " WHERE id = ANY(%s) AND state = 'delivering'",
                    (held,),
                )
            while time.monotonic() - killed_at < 120:
                (left,) = conn.execute(
                    "SELECT COUNT(*) FROM outbox_webhooks WHERE id = ANY(%s)"
                    " AND state <> 'delivered'",
                    (held,),
                ).fetchone() or (0,)
                if not left:
                    break
                time.sleep(0.02)
            return time.monotonic() - killed_at
    finally:
        for server in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
        for server in running:
            server.wait(timeout=30)
        receiver.stop()


def report(results: dict[str, dict[str, float]]) -> None:
    """One line per configuration."""
    print(
        f"{'':20} {'accepts/s':>10} {'accept p50/p99 ms':>20} {'delivery p50/p99 ms':>22}"
        f" {'delivered/s':>12}"
    )
    for label, r in results.items():
        print(
            f"{label:20} {r['rate']:10.0f} {r['p50']:9.1f} / {r['p99']:7.1f}"
            f" {r['d50']:10.0f} / {r['d99']:8.0f} {r['sustained']:12.0f}"
            f"  ({r['delivered']:.0f} delivered)"
        )


def scale_out(
    args: argparse.Namespace, work: Path, cpus: float | None
) -> dict[str, dict[str, float]]:
    """Each server held to ``cpus`` cores: PostgreSQL x1 once, then rounds of the pair.

    The pair in alternating order: a shared machine's load drifts within seconds.
    """
    hosts: dict[str, dict[str, float]] = {}
    with postgres_schema(args.postgres) as url:
        hosts["PostgreSQL, 1 server"] = measure(url, 1, args, work, cpus=cpus)
    for round_ in range(1, args.rounds + 1):
        for servers in (1, 3) if round_ % 2 else (3, 1):
            if servers == 1:
                outbox = str(work / f"h{round_}.sqlite3")
                hosts[f"SQLite, 1 ({round_})"] = measure(outbox, 1, args, work, cpus=cpus)
                continue
            with postgres_schema(args.postgres) as url:
                hosts[f"PostgreSQL, 3 ({round_})"] = measure(url, 3, args, work, cpus=cpus)
    return hosts


def report_ratios(hosts: dict[str, dict[str, float]], rounds: int) -> None:
    """PostgreSQL x3 / SQLite x1 of each round, and their median."""
    for figure, what in (("rate", "accepts"), ("sustained", "accepted and delivered")):
        ratios = [
            hosts[f"PostgreSQL, 3 ({n})"][figure] / hosts[f"SQLite, 1 ({n})"][figure]
            for n in range(1, rounds + 1)
        ]
        target = "  (target >= 1.5)" if figure == "rate" else ""
        print(
            f"PostgreSQL x3 / SQLite x1, {what} a second: median "
            f"{statistics.median(ratios):.2f} (rounds {' '.join(f'{r:.2f}' for r in ratios)})"
            + target
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--pace", type=float, default=100.0, help="webhooks/s of the paced run")
    parser.add_argument(
        "--server-cpus",
        type=float,
        default=0.4,
        help="cores each server may use, as on a host of its own (0: unconfined)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the scale-out pair")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.hold)
        return
    cpus = args.server_cpus or None
    confined = cpus is not None and os.access(CGROUPS, os.W_OK)
    whole: dict[str, dict[str, float]] = {}
    hosts: dict[str, dict[str, float]] = {}
    recovered = {}
    with _SHARES, tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        # latency: one server on the whole machine, flat out and at a steady pace
        whole["SQLite, 1 server"] = measure(str(work / "outbox.sqlite3"), 1, args, work)
        whole[f"SQLite, 1, {args.pace:g}/s"] = measure(
            str(work / "paced.sqlite3"), 1, args, work, pace=args.pace
        )
        if not args.sqlite_only:
            hosts = scale_out(args, work, cpus)
            for elsewhere in (False, True):
                with postgres_schema(args.postgres) as url:
                    recovered[elsewhere] = recovery(url, work, elsewhere)
        floor = fsync_insert_ms(work)
    print(f"{args.webhooks} webhooks from {args.clients} clients, each server gunicorn -w 2.")
    print("One server on the whole machine:")
    report(whole)
    print("accept p99 target: <= 5 ms while deliveries run")
    if hosts:
        if confined:
            print(f"Each server held to {cpus:g} cores (a cgroup), as on a host of its own:")
        else:
            print("Servers sharing this machine's cores (cgroups need root, or --server-cpus 0):")
        report(hosts)
        report_ratios(hosts, args.rounds)
    for elsewhere, seconds in recovered.items():
        where = "another host (its leases expire)" if elsewhere else "this host (PID gone)"
        print(f"a killed server's claims delivered by the others after {seconds:.1f} s, {where}")
    print(f"an fsync'd SQLite insert alone: {floor:.1f} ms (median)")


if __name__ == "__main__":
    main()
