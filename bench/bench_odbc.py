"""ODBC backend: pooled lookups/s vs connect-per-lookup, on 100,000 rows.

Connect-per-lookup is what HelpSpot's PHP samples do: open a connection, run
one SELECT, close. The backend keeps its connections open in a small pool.
Target: pooled at least 3x faster.

    .venv/bin/python bench/bench_odbc.py [--db postgresql|mysql] [--seconds 3]

Loopback only (127.0.0.1); creates a uniquely named table and drops it; each
run stops after ``--seconds`` per mode.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyodbc
from lookup_plugins.odbc.backend import OdbcBackend, OdbcOptions

from lookup_server.plugin import ById, Secret, SourceSettings

ROWS = 100_000
TARGET = 3.0
DATABASES = {
    "postgresql": os.environ.get(
        "LOOKUP_BENCH_PG_ODBC",
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;Uid=postgres;",
    ),
    "mysql": os.environ.get(
        "LOOKUP_BENCH_MARIADB_ODBC",
        "Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=test;Uid=root;Pwd=;",
    ),
}
FILL = {
    "postgresql": "INSERT INTO {t} SELECT 'C' || g, 'First' || g, 'Last' || (g % 5000), "
    "'user' || g || '@example.com', '555-' || lpad(g::text, 7, '0') "
    "FROM generate_series(1, {n}) g",
    "mysql": "INSERT INTO {t} SELECT CONCAT('C', seq), CONCAT('First', seq), "
    "CONCAT('Last', seq % 5000), CONCAT('user', seq, '@example.com'), "
    "CONCAT('555-', LPAD(seq, 7, '0')) FROM seq_1_to_{n}",
}


def create_table(connection: str, dialect: str) -> str:
    """A new table of ROWS customers with a primary key on customer_id."""
    name = f"bench_odbc_{uuid.uuid4().hex[:8]}"
    with pyodbc.connect(connection, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (customer_id VARCHAR(20) PRIMARY KEY, "
            "first_name VARCHAR(50), last_name VARCHAR(50), email VARCHAR(100), "
            "phone VARCHAR(20))"
        )
        conn.execute(FILL[dialect].format(t=name, n=ROWS))
        conn.execute(f"ANALYZE {name}" if dialect == "postgresql" else f"ANALYZE TABLE {name}")
    return name


def rate(lookup: Callable[[str], int], seconds: float) -> tuple[float, int]:
    """Lookups per second of random existing ids for ``seconds``; and how many were done."""
    ids = [f"C{random.randint(1, ROWS)}" for _ in range(10_000)]
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        assert lookup(ids[done % len(ids)]) == 1
        done += 1
    return done / (time.perf_counter() - started), done


def main() -> int:
    """Run both modes and print the figures; exit 1 below the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=sorted(DATABASES), default="postgresql")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    connection, seconds = DATABASES[args.db], min(max(args.seconds, 0.5), 30.0)
    if "127.0.0.1" not in connection and "localhost" not in connection.lower():
        parser.error("the bench only runs against a database on this machine")
    # Driver-manager pooling would quietly turn connect-per-lookup into pooling.
    pyodbc.pooling = False
    table = create_table(connection, args.db)
    source = SourceSettings(name="bench", backend="odbc", max_results=5, timeout=5.0)
    backend = OdbcBackend(OdbcOptions(Secret(connection), args.db, table=table), source)
    try:
        statement = backend._plan.statement(ById("C1"), 5)
        assert statement is not None

        def per_lookup(customer_id: str) -> int:
            # What the PHP samples do: connect, one SELECT, close.
            conn: Any = pyodbc.connect(connection, autocommit=True, timeout=5)
            try:
                return len(conn.execute(statement.sql, customer_id).fetchall())
            finally:
                conn.close()

        pooled, pooled_n = rate(lambda cid: len(backend.find(ById(cid), 5)), seconds)
        fresh, fresh_n = rate(per_lookup, seconds)
    finally:
        backend.close()
        with pyodbc.connect(connection, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")
    print(f"odbc bench: {args.db}, {ROWS:,} rows, lookups by customer_id, {seconds:g} s per mode")
    print(
        f"  pooled (OdbcBackend):      {pooled:9.0f} lookups/s  ({pooled_n} lookups, "
        f"{backend._pool.opened} connection(s) opened)"
    )
    print(f"  connect-per-lookup:        {fresh:9.0f} lookups/s  ({fresh_n} lookups)")
    ratio = pooled / fresh
    print(
        f"  speed-up: {ratio:.1f}x (target >= {TARGET:g}x): "
        f"{'ok' if ratio >= TARGET else 'BELOW TARGET'}"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
