"""Who may use the console: allowed networks, one password, a session, CSRF, rate limits.

The console has its own password, never one of the keys HelpSpot uses. A
login sets a signed session cookie (HttpOnly, SameSite=Strict, Secure behind
TLS); every action is a POST that must carry the session's CSRF token. Failed
logins are limited per address and in all, per process.

The session secret is random, kept in a file of the server's own beside the
outbox, so that every worker accepts every other's cookie. It is not derived
from the password: a cookie would then let anyone who holds one test
passwords offline.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from werkzeug.datastructures import Authorization

from lookup_server.config.settings import ConsoleSettings
from lookup_server.web.auth import bearer_token, caller_address, in_networks

#: Failed logins from one address within WINDOW_SECONDS before it must wait...
MAX_FAILURES_PER_ADDRESS = 5
#: ...and from all addresses together (a guess spread over many addresses).
MAX_FAILURES = 50
WINDOW_SECONDS = 300.0
#: A login lasts this long.
SESSION_SECONDS = 8 * 3600


def loopback_only(console: ConsoleSettings) -> bool:
    """True for the passwordless built-in demo: then only this machine may come in."""
    return console.password is None


def address_allowed(console: ConsoleSettings, remote_addr: str | None) -> bool:
    """Whether a caller at ``remote_addr`` may reach the console at all."""
    address = caller_address(remote_addr)
    if address is None or (loopback_only(console) and not address.is_loopback):
        return False
    return in_networks(address, console.allowed_networks)


def password_matches(console: ConsoleSettings, given: str) -> bool:
    """Compare a password with the configured one in constant time (hashed: any length)."""
    if console.password is None or not given:
        return False
    expected = hashlib.sha256(console.password.reveal().encode()).digest()
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)


class ConsoleAccess(enum.IntEnum):
    """What becomes of a caller of ``/metrics``: its HTTP status."""

    ALLOWED = 200
    #: From allowed_networks without the console password: asked for it.
    NEEDS_PASSWORD = 401
    #: From no network that may reach it: no credential would help.
    FORBIDDEN = 403


def metrics_access(
    console: ConsoleSettings,
    remote_addr: str | None,
    authorization: str | None,
    *,
    session_authenticated: bool = False,
) -> ConsoleAccess:
    """Whether this caller may read ``/metrics``.

    metrics_networks scrape without credentials (a Prometheus server); anyone
    else is let in as the console would let them in, by a login
    (``session_authenticated``) or the console password as HTTP Basic (any
    user name) or ``Authorization: Bearer``, which a scraper can send.
    """
    if in_networks(caller_address(remote_addr), console.metrics_networks):
        return ConsoleAccess.ALLOWED
    if not address_allowed(console, remote_addr):
        return ConsoleAccess.FORBIDDEN
    if loopback_only(console) or session_authenticated:
        return ConsoleAccess.ALLOWED
    if password_matches(console, presented_password(authorization)):
        return ConsoleAccess.ALLOWED
    return ConsoleAccess.NEEDS_PASSWORD


def presented_password(authorization: str | None) -> str:
    """The password of an ``Authorization`` header: a Bearer token or Basic's password."""
    token = bearer_token(authorization)
    if token is not None:
        return token
    basic = Authorization.from_header(authorization)
    return (basic.password if basic is not None and basic.type == "basic" else None) or ""


def password_fingerprint(console: ConsoleSettings, secret: bytes) -> str:
    """Kept in the session: a changed password ends every session made with the old one."""
    password = console.password.reveal() if console.password else ""
    return hmac.new(secret, password.encode(), hashlib.sha256).hexdigest()[:32]


def session_secret(file: Path) -> bytes:
    """The secret that signs console sessions: read from ``file``, made there the first time.

    Falls back to a secret of this process alone when the file cannot be
    written (sessions then last until the process ends, and work with one worker).
    """
    try:
        return file.read_bytes()
    except FileNotFoundError:
        pass
    except OSError:
        return secrets.token_bytes(32)
    secret = secrets.token_bytes(32)
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first: use theirs
        return file.read_bytes()
    except OSError:
        return secret
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
        out.flush()
        os.fsync(out.fileno())
    return secret


class LoginLimiter:
    """Counts failed logins in a sliding window, per address and in all."""

    def __init__(
        self,
        per_address: int = MAX_FAILURES_PER_ADDRESS,
        overall: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self.per_address, self.overall, self.window = per_address, overall, window
        self._failures: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()

    def wait_seconds(self, address: str, now: float | None = None) -> float:
        """0 when ``address`` may try to log in now, else how long it must wait."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._forget(moment)
            mine = [at for at, who in self._failures if who == address]
            waits = []
            if len(mine) >= self.per_address:
                waits.append(mine[0] + self.window - moment)
            if len(self._failures) >= self.overall:
                waits.append(self._failures[0][0] + self.window - moment)
            return max(waits, default=0.0)

    def failed(self, address: str, now: float | None = None) -> None:
        """Count a failed login of ``address``."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._forget(moment)
            self._failures.append((moment, address))

    def _forget(self, moment: float) -> None:
        while self._failures and self._failures[0][0] <= moment - self.window:
            self._failures.popleft()
