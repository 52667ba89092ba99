"""A throw-away OpenLDAP slapd for tests and the benchmark.

Everything lives in one temporary folder: its own slapd.conf, schema, MDB
database and TLS certificates. It listens on free loopback ports only and
never reads or touches the system's LDAP configuration.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
AD_SCHEMA = Path(__file__).parent / "data" / "ldap" / "ad.schema"

SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=svc-lookup,ou=Service,{SUFFIX}"
SERVICE_PASSWORD = "svc-secret"

#: An entry: DN and attribute -> values (str, or bytes for binary values).
Entry = tuple[str, Mapping[str, Sequence[str | bytes]]]


def slapd_available() -> bool:
    """True when slapd, slapadd and openssl (for the test certificates) are installed."""
    return os.path.exists(SLAPD) and os.path.exists(SLAPADD) and bool(shutil.which("openssl"))


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ldif(entries: Iterable[Entry]) -> str:
    """Entries as LDIF; values that are not plain ASCII are base64-encoded."""
    blocks = []
    for dn, attrs in entries:
        lines = [_ldif_line("dn", dn)]
        for name, values in attrs.items():
            lines.extend(_ldif_line(name, value) for value in values)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _ldif_line(name: str, value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    safe = raw.isascii() and raw[:1] not in (b" ", b":", b"<") and not raw.endswith(b" ")
    if safe and all(32 <= b < 127 for b in raw):
        return f"{name}: {raw.decode()}"
    return f"{name}:: {base64.b64encode(raw).decode()}"


class Slapd:
    """One slapd process serving ``SUFFIX`` from ``root``."""

    def __init__(self, root: Path, tls: bool = True, paged_unlimited: bool = False) -> None:
        """``paged_unlimited``: paged searches may read every entry, as in Active Directory."""
        self.root = root
        self.paged_unlimited = paged_unlimited
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.ca_file = root / "ca.pem"
        self.process: subprocess.Popen[bytes] | None = None
        (root / "db").mkdir(parents=True, exist_ok=True)
        if tls:
            self._make_certificates()
        (root / "slapd.conf").write_text(self._config())

    @property
    def url(self) -> str:
        """Plain LDAP URL (StartTLS capable)."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """LDAPS URL (certificate signed by ``ca_file``)."""
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def load(self, entries: Iterable[Entry]) -> None:
        """Add entries offline with slapadd (fast; the server must be stopped)."""
        data = self.root / "data.ldif"
        data.write_text(ldif(entries), encoding="utf-8")
        subprocess.run(
            [SLAPADD, "-q", "-f", str(self.root / "slapd.conf"), "-l", str(data)],
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self, wait: float = 20.0) -> None:
        """Start slapd in the foreground and wait until it accepts connections."""
        urls = self.url + (f" {self.ldaps_url}" if self.tls_port else "")
        log = (self.root / "slapd.log").open("ab")
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.root / "slapd.conf"), "-h", urls, "-d", "0"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + wait
        while not self._accepts():
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.root / 'slapd.log').read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("slapd did not start listening in time")
            time.sleep(0.02)  # polling interval of the wait-for-condition loop

    def stop(self) -> None:
        """Stop slapd and wait for it to exit (its ports are then closed)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze slapd (SIGSTOP): connections stay open but nothing answers.

        Returns once every thread of slapd has stopped: the signal takes effect
        asynchronously, and a request sent at once could still be answered.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + 10
        while not all(_stopped(task) for task in tasks.iterdir()):
            assert time.monotonic() < deadline, "slapd did not stop"
            time.sleep(0.001)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _config(self) -> str:
        schemas = [SCHEMA_DIR / f"{n}.schema" for n in ("core", "cosine", "inetorgperson")]
        tls = (
            (
                f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {self.root / 'server.pem'}\n"
                f"TLSCertificateKeyFile {self.root / 'server.key'}\n"
            )
            if self.tls_port
            else ""
        )
        includes = "".join(f"include {path}\n" for path in [*schemas, AD_SCHEMA])
        return f"""{includes}
pidfile {self.root / "slapd.pid"}
argsfile {self.root / "slapd.args"}
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}
database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {self.root / "db"}
sizelimit 5000
{self._paging()}
index objectClass,objectCategory eq
index uid,sAMAccountName,mail,proxyAddresses eq
index sn,givenName,displayName,cn eq,sub
index telephoneNumber,mobile sub
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""

    def _paging(self) -> str:
        # slapd's sizelimit also caps a paged search's total; AD caps each page only
        if not self.paged_unlimited:
            return ""
        sizes = "size.soft=5000 size.hard=5000 size.prtotal=unlimited"
        return f'limits dn.exact="{SERVICE_DN}" {sizes}'

    def _make_certificates(self) -> None:
        def openssl(*args: str) -> None:
            subprocess.run(
                ["openssl", *args], cwd=self.root, check=True, capture_output=True, timeout=60
            )

        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=lookup-server test CA",
        )
        openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
        (self.root / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )


def _stopped(task: Path) -> bool:
    """True when a thread of /proc is stopped by a signal (state T), or gone."""
    try:
        stat = (task / "stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "Tt"
