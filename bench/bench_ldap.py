"""LDAP backend speed: pooled lookups vs a bind per lookup vs raw ldap3 (the ceiling).

Starts its own slapd on a loopback port with 10,000 Active Directory-style
users, then runs the same customer-id lookups three ways for a fixed time each:

* pooled:       LdapBackend.find() (what lookup-server does)
* bind-per-lookup: connect, bind, search, unbind per lookup (every sample script)
* ceiling:      raw ldap3 searches, same filter and attributes, one open connection

Both over LDAPS (what the docs recommend; the targets are judged there) and
over plain LDAP for comparison. Targets: pooled >= 3x bind-per-lookup and
>= 0.8 of the ceiling.
Run: .venv/bin/python bench/bench_ldap.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import random
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the slapd harness lives with the tests

import ldap3  # noqa: E402
from lookup_plugins.ldap.backend import LdapBackend, LdapOptions  # noqa: E402

from lookup_server.plugin import ById, Secret, SourceSettings  # noqa: E402
from tests.plugins.slapd import (  # noqa: E402
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Entry,
    Slapd,
    slapd_available,
)

BASE = f"ou=bench,{SUFFIX}"
USERS = 10_000


def entries(count: int) -> Iterator[Entry]:
    """The benchmark directory: a service account and ``count`` AD users."""
    yield SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["example"], "o": ["Example"]}
    for ou in ("Service", "bench"):
        yield f"ou={ou},{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": [ou]}
    yield (
        SERVICE_DN,
        {
            "objectClass": ["person"],
            "cn": ["svc-lookup"],
            "sn": ["Lookup"],
            "userPassword": [SERVICE_PASSWORD],
        },
    )
    for i in range(count):
        sam = f"user{i:05d}"
        yield (
            f"cn=User {i:05d},{BASE}",
            {
                "objectClass": ["user"],
                "objectCategory": ["person"],
                "cn": [f"User {i:05d}"],
                "sAMAccountName": [sam],
                "givenName": ["User"],
                "sn": [f"Number{i:05d}"],
                "displayName": [f"User {i:05d}"],
                "mail": [f"{sam}@corp.example"],
                "proxyAddresses": [f"SMTP:{sam}@corp.example"],
                "telephoneNumber": [f"+1 555 {i // 100:03d} {i % 10000:04d}"],
                "title": ["Staff"],
                "department": ["Support"],
                "company": ["Example Ltd"],
                "userAccountControl": ["512"],
                "objectGUID": [uuid.uuid4().bytes_le],
            },
        )


def rates(
    lookups: dict[str, Callable[[str], int]], ids: list[str], seconds: float, rounds: int = 6
) -> dict[str, float]:
    """Lookups per second of each way, measured in alternating slices so drift hits all."""
    done = dict.fromkeys(lookups, 0)
    spent = dict.fromkeys(lookups, 0.0)
    for _ in range(rounds):
        for name, lookup in lookups.items():
            started = time.perf_counter()
            deadline = started + seconds / rounds
            while time.perf_counter() < deadline:
                sam = ids[done[name] % len(ids)]
                if lookup(sam) != 1:
                    raise SystemExit(f"{name}: lookup of {sam} did not find exactly one entry")
                done[name] += 1
            spent[name] += time.perf_counter() - started
    return {name: done[name] / spent[name] for name in lookups}


def main() -> int:
    """Run the measurements over LDAPS and plain LDAP; print them with their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    if not slapd_available():
        print("slapd not installed (apt-get install slapd ldap-utils)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp:
        slapd = Slapd(Path(tmp))
        slapd.load(entries(USERS))
        slapd.start()
        try:
            print(
                f"LDAP backend: {USERS} AD users on a local slapd, customer-id lookups, "
                f"{args.seconds:g} s per figure, one thread"
            )
            met = measure(slapd.ldaps_url, slapd.ca_file, args.seconds, judged=True)
            measure(slapd.url, None, args.seconds, judged=False)
        finally:
            slapd.stop()
    print("targets met (LDAPS)" if met else "TARGET MISSED (LDAPS)")
    return 0 if met else 1


def measure(url: str, ca_file: Path | None, seconds: float, judged: bool) -> bool:
    """Measure one transport and report; True when both targets are met."""
    backend = LdapBackend(
        LdapOptions(
            url=[url],
            bind_dn=SERVICE_DN,
            password=Secret(SERVICE_PASSWORD),
            base_dn=BASE,
            preset="active_directory",
            ca_file=ca_file,
        ),
        SourceSettings(name="bench", backend="ldap", fields={"manager": ""}),
    )
    ids = [f"user{i:05d}" for i in random.Random(4).sample(range(USERS), 2000)]
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(ca_file) if ca_file else None)

    def connection() -> ldap3.Connection:
        return ldap3.Connection(
            ldap3.Server(url, get_info=ldap3.NONE, tls=tls),
            SERVICE_DN,
            SERVICE_PASSWORD,
            auto_bind=True,
        )

    def search(conn: ldap3.Connection, sam: str) -> int:
        flt = f"(&{backend.person_filter}(sAMAccountName={sam}))"
        conn.search(BASE, flt, attributes=backend.attributes, size_limit=50)
        return sum(1 for item in conn.response if item["type"] == "searchResEntry")

    def bind_per_lookup(sam: str) -> int:
        conn = connection()
        try:
            return search(conn, sam)
        finally:
            conn.unbind()

    raw = connection()
    pooled: Callable[[str], int] = lambda sam: len(backend.find(ById(sam), 50))  # noqa: E731
    ways = {
        "pooled": pooled,
        "bind-per-lookup": bind_per_lookup,
        "ceiling": lambda sam: search(raw, sam),
    }
    rates(ways, ids, 0.6, rounds=1)  # warm up: first connections, server caches
    results = rates(ways, ids, seconds)
    raw.unbind()
    backend.close()
    vs_bind = results["pooled"] / results["bind-per-lookup"]
    vs_ceiling = results["pooled"] / results["ceiling"]
    print(f"{url.split(':')[0]}:" + ("" if judged else " (for comparison, not judged)"))
    for name, value in results.items():
        print(f"  {name:<16} {value:8.0f} lookups/s")
    print(f"  pooled / bind-per-lookup = {vs_bind:.2f}x (target >= 3)")
    print(f"  pooled / ceiling         = {vs_ceiling:.2f} (target >= 0.8)")
    return vs_bind >= 3 and vs_ceiling >= 0.8


if __name__ == "__main__":
    sys.exit(main())
