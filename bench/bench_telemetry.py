"""What the console and /metrics cost a lookup: the same lookups with them off and on.

Both apps answer the demo's CSV in this process, through Flask's test client,
in interleaved rounds so that the machine's drift falls on both alike; with
``[console]`` on, every call is recorded for the console's figures and
counted for Prometheus, and with ``log_format = "json"`` also logged.
Prints the median time of a lookup in each, and each as a ratio of "off".
Usage: python bench/bench_telemetry.py [--rounds N] [--lookups N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lookup_server.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "lookup_server" / "demo" / "customers.csv"
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


def configs(folder: Path) -> dict[str, dict[str, Any]]:
    base: dict[str, Any] = {
        "server": {"outbox": str(folder / "outbox.sqlite3")},
        "sources": {"demo": {"backend": "csv", "path": str(DEMO)}},
    }
    console = {"password": "a console password", "allowed_networks": ["127.0.0.1/32"]}
    return {
        "off": base,
        "console and metrics": {**base, "console": console},
        "console, metrics, JSON log": {
            **base,
            "console": console,
            "server": {**base["server"], "log_format": "json"},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--lookups", type=int, default=1000)
    args = parser.parse_args()
    logging.getLogger("lookup_server.calls").disabled = True  # measure, do not print
    with tempfile.TemporaryDirectory() as folder:
        clients = {
            name: create_app(config, base_dir=Path(folder)).test_client()
            for name, config in configs(Path(folder)).items()
        }
        for client in clients.values():  # warm up: the index, the first requests
            for _ in range(200):
                client.get("/livelookup/demo?last_name=smith", environ_base=LOCAL)
        times: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                started = time.perf_counter()
                for _ in range(args.lookups):
                    client.get("/livelookup/demo?last_name=smith", environ_base=LOCAL)
                times[name].append((time.perf_counter() - started) / args.lookups * 1e6)
    off = statistics.median(times["off"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:28} {median:7.1f} µs a lookup  ratio {median / off:.3f}")


if __name__ == "__main__":
    main()
