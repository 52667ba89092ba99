"""Mirrored LDAP source: a full copy of 100,000 entries, then lookups under load (issue 17).

Starts its own slapd on a loopback port with 100,000 directory users (the
entries of bench_ldap.py; paged searches may read them all, as in Active
Directory), then reports, in one run:

* seconds of the first full copy (search, records, CSV, index)   target <= 60 s
* seconds of a pass of changes (100 entries changed, 10 deleted), and that
  both show in lookups after it
* p50/p99 latency of Live Lookups under `wrk` against `gunicorn -w 2 wsgi:app`:
  the mirrored source with the directory up, while a refresh runs, with slapd
  frozen (SIGSTOP: the slowest directory there is) and with slapd stopped
                                                                 target p99 <= 5 ms
  and the same source without a mirror, directory up, for comparison.
* the load average before and after: other work on the machine shows in it.

Needs slapd and wrk (apt-get install slapd wrk). Usage:
.venv/bin/python bench/bench_mirror.py [--entries N] [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the slapd harness lives with the tests

import ldap3  # noqa: E402
from lookup_plugins.mirror.local import Mirror  # noqa: E402
from lookup_plugins.mirror.state import MirrorStatus, read_status  # noqa: E402

from bench.bench_csv import (  # noqa: E402
    CEILING_APP,
    free_port,
    start_gunicorn,
    stop,
    wait_for_answer,
)
from bench.bench_ldap import BASE, entries  # noqa: E402
from lookup_server.config.settings import config_from_mapping  # noqa: E402
from lookup_server.plugin import ById, SourceBackend  # noqa: E402
from lookup_server.runtime.service import create_backend  # noqa: E402
from tests.plugins.slapd import (  # noqa: E402
    ROOT_DN,
    ROOT_PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    slapd_available,
)

WRK_SCRIPT = """
math.randomseed(42)
request = function()
  local id = string.format("user%%05d", math.random(0, %d))
  return wrk.format("GET", "/livelookup/%s?customer_id=" .. id)
end
"""
#: Paced: each connection waits this long (ms) after an answer before it asks again.
PACED = """
delay = function()
  return %d
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def source_table(slapd: Slapd, mirror: Path | None) -> dict[str, object]:
    """The benchmark's source: the bench users, OpenLDAP-style (modifyTimestamp marks changes)."""
    table: dict[str, object] = {
        "backend": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "password": SERVICE_PASSWORD,
        "base_dn": BASE,
        "preset": "openldap",
        "user_filter": "(objectCategory=person)",
        "fields": {"customer_id": "sAMAccountName", "department": "department"},
        "timeout": 2,
    }
    if mirror is not None:
        table |= {"mirror": "1h", "mirror_path": str(mirror)}
    return table


def toml(name: str, table: dict[str, object]) -> str:
    """One [sources.NAME] table as TOML (strings, numbers and one inline table)."""
    lines = [f"[sources.{name}]"]
    for key, value in table.items():
        if isinstance(value, dict):
            inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def mirrored_backend(table: dict[str, object], work: Path) -> tuple[SourceBackend[object], Mirror]:
    config = config_from_mapping({"sources": {"ad": table}}, base_dir=work)
    backend = create_backend(config.sources["ad"])
    assert isinstance(backend, SourceBackend)
    mirror = getattr(backend, "mirror", None)
    assert isinstance(mirror, Mirror)
    return backend, mirror


def change_directory(slapd: Slapd, changed: int, deleted: int, total: int) -> None:
    conn = ldap3.Connection(slapd.url, ROOT_DN, ROOT_PASSWORD, auto_bind=True)
    step = total // (changed + deleted)
    for k in range(changed):
        conn.modify(
            f"cn=User {k * step:05d},{BASE}", {"title": [(ldap3.MODIFY_REPLACE, ["Changed"])]}
        )
    for k in range(changed, changed + deleted):
        conn.delete(f"cn=User {k * step:05d},{BASE}")
    conn.unbind()


def wrk_latency(
    url: str, source: str, total: int, seconds: int, connections: int, pause_ms: int, work: Path
) -> tuple[float, float, float]:
    """p50 and p99 in ms, and requests a second, of ``wrk --latency`` (paced: ``pause_ms``)."""
    script = work / f"{source}-{pause_ms}.lua"
    script.write_text(WRK_SCRIPT % (total - 1, source) + (PACED % pause_ms if pause_ms else ""))
    done = subprocess.run(
        ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    found = dict(re.findall(r"^\s+(50|99)%\s+([0-9.]+(?:us|ms|s))$", done.stdout, re.MULTILINE))
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", done.stdout, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if len(found) != 2 or rate is None:
        raise SystemExit(f"wrk printed no latency distribution:\n{done.stdout}")
    if errors:
        raise SystemExit(f"{source}: {errors[1]} lookups failed under load:\n{done.stdout}")
    return _ms(found["50"]), _ms(found["99"]), float(rate[1])


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=4, help="wrk's open connections")
    parser.add_argument("--pause", type=int, default=10, help="ms between paced lookups")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each directory state")
    args = parser.parse_args()
    if not slapd_available() or shutil.which("wrk") is None:
        raise SystemExit("slapd and wrk are needed: apt-get install slapd ldap-utils wrk")
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        work = Path(tmp)
        slapd = Slapd(work / "slapd", tls=False, paged_unlimited=True)
        started = time.perf_counter()
        slapd.load(entries(args.entries))
        print(
            f"loaded {args.entries:,} entries into slapd in {time.perf_counter() - started:.1f} s"
        )
        slapd.start()
        try:
            run(slapd, work, args)
        finally:
            slapd.resume() if slapd.process is not None else None
            slapd.stop()
    print(f"load average at end:   {load_average()}")


def run(slapd: Slapd, work: Path, args: argparse.Namespace) -> None:
    table = source_table(slapd, work / "mirror")
    backend, mirror = mirrored_backend(table, work)
    # slapadd stamps thousands of entries with the same second; a pass of changes reads
    # again every entry as new as the newest seen, so give one entry a second of its own,
    # as in a directory changed one entry at a time
    time.sleep(1.1)
    change_directory(slapd, 1, 0, args.entries)
    started = time.perf_counter()
    backend.prepare()
    full = time.perf_counter() - started
    copied = read_status(mirror.files.status).entries
    change_directory(slapd, 100, 10, args.entries)
    status = mirror.refresh_now()
    assert status is not None and status.kind == "changes", status
    changed = backend.find(ById("user00000"), 1)
    assert changed and changed[0].fields.get("title") == "Changed", changed
    step = args.entries // 110
    assert not backend.find(ById(f"user{100 * step:05d}"), 1), "a deleted entry is still found"
    quiet = mirror.refresh_now()  # nothing changed since
    assert quiet is not None and quiet.kind == "changes", quiet
    config = work / "lookup.toml"
    config.write_text(toml("ad", table) + toml("live", source_table(slapd, None)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LOOKUP_SERVER_CONFIG": str(config)}
    server = start_gunicorn("wsgi:app", port, env, ROOT)
    (work / "ceiling.py").write_text(CEILING_APP)
    ceiling_port = free_port()
    ceiling_url = f"http://127.0.0.1:{ceiling_port}"
    ceiling = start_gunicorn("ceiling:app", ceiling_port, env, work)
    figures: dict[str, list[tuple[float, float, float]]] = {}
    try:
        wait_for_answer(f"{url}/livelookup/ad?customer_id=user00001", 60)
        wait_for_answer(f"{url}/livelookup/live?customer_id=user00001", 60)
        wait_for_answer(f"{ceiling_url}/livelookup/ad", 60)

        def measure(label: str, source: str = "ad", at: str = url) -> None:
            for pause in (args.pause, 0):  # paced load, then as fast as wrk can
                key = f"{label}, {'paced' if pause else 'saturated'}"
                figures.setdefault(key, []).append(
                    wrk_latency(
                        at, source, args.entries, args.seconds, args.connections, pause, work
                    )
                )

        for source in ("ad", "live"):  # warm-up: first connections, the page cache
            wrk_latency(url, source, args.entries, 2, args.connections, 0, work)
        # Rounds, each state of the directory in turn: whatever else the machine does
        # weighs on every state alike; the medians are reported.
        for _ in range(args.rounds):
            # what the machine allows: a constant answer from a bare Flask app, same gunicorn
            measure("ceiling (constant document)", at=ceiling_url)
            measure("mirrored, directory up")
            measure("live (no mirror), directory up", "live")
            slapd.pause()
            measure("mirrored, directory frozen (SIGSTOP)")
            slapd.resume()
            slapd.stop()
            measure("mirrored, directory stopped")
            slapd.start()
        refreshing = threading.Thread(target=full_copy, args=(mirror,))
        refreshing.start()  # lookups meanwhile compete with a full copy for the cores
        measure("mirrored, during a full refresh")
        refreshing.join()
    finally:
        stop(server)
        stop(ceiling)
        backend.close()
    report(args, copied, full, (status, quiet), figures)


def full_copy(mirror: Mirror) -> None:
    """A full pass, as niced as a worker's refresh process."""
    os.nice(10)  # this thread only (Linux)
    mirror.files.records.path.unlink()  # no records: the pass copies everything
    mirror.refresh_now()


def report(
    args: argparse.Namespace,
    copied: int,
    full: float,
    passes: tuple[MirrorStatus, MirrorStatus],
    figures: dict[str, list[tuple[float, float, float]]],
) -> None:
    print(f"full copy of {copied:,} entries: {full:.1f} s   (target <= 60 s)")
    changes, quiet = passes
    print(
        f"pass of changes, 100 changed and 10 deleted ({changes.read} entries read, "
        f"all {changes.entries:,} keys): {changes.took:.1f} s; both found so in lookups"
    )
    print(f"pass with nothing changed ({quiet.read} entries read): {quiet.took:.1f} s")
    print(
        f"lookups, wrk -c{args.connections} against gunicorn -w 2, median of {args.rounds} "
        f"runs of {args.seconds} s (paced: {args.pause} ms between a connection's lookups):"
    )
    print(f"  {'':<52} p50 / p99 (worst p99)  lookups/s")
    for label, runs in figures.items():
        p50 = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        rate = statistics.median(r[2] for r in runs)
        worst = max(r[1] for r in runs)
        print(f"  {label:<52} {p50:5.2f} / {p99:6.2f} ({worst:6.2f}) ms {rate:7.0f}")
    print("  target: p99 <= 5 ms on the mirrored source in every state of the directory")


if __name__ == "__main__":
    main()
