"""The console's blueprint, its state, and the checks every console request passes first."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from lookup_server.config.settings import ConsoleSettings
from lookup_server.runtime.probe import Health
from lookup_server.telemetry.activity import Activity
from lookup_server.web.console.access import (
    SESSION_SECONDS,
    LoginLimiter,
    address_allowed,
    loopback_only,
    password_fingerprint,
)

log = logging.getLogger(__name__)
EXTENSION = "lookup_server.console"

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)

#: No script at all, styles and images from this server only, no framing, forms
#: that post only here. The staff view is an <iframe srcdoc> without scripts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Views reachable without a login.
_OPEN_VIEWS = frozenset({"console.login", "console.static"})


@dataclass
class ConsoleState:
    """What the console keeps while the server runs (per process)."""

    settings: ConsoleSettings
    activity: Activity
    secret: bytes
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    #: (kind, name) -> the last check of that source or target in this process.
    health: dict[tuple[str, str], Health] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def console_state() -> ConsoleState:
    """The console's state in the app handling this request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure whenever the request came over TLS.

    Behind a proxy that ends TLS, the proxy's ``X-Forwarded-Proto: https``
    says so: a Secure cookie is never weaker, so the header may be believed.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The console's session; HelpSpot's calls get none, so they pay nothing for it.

        Flask opens a session for every request; reading and signing the cookie
        would cost each lookup tens of microseconds for nothing.
        """
        if not _console_path(request.path):
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when this request arrived over HTTPS."""
        return request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def _console_path(path: str) -> bool:
    """Whether a request for ``path`` may use the session: the console's and /metrics."""
    return path in ("/", "/metrics") or path.startswith("/console/")


def configure_sessions(app: Flask, secret: bytes) -> None:
    """The app's session cookie, as only the console uses it."""
    app.secret_key = secret
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME="lookup_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_SECONDS),
    )


def logged_in() -> bool:
    """Whether this request's session is a valid console login (always, for the demo)."""
    state = console_state()
    if loopback_only(state.settings):
        return True
    return (
        session.get("login") is True
        and session.get("until", 0) > time.time()
        and session.get("password") == password_fingerprint(state.settings, state.secret)
    )


def csrf_token() -> str:
    """This session's CSRF token, made on first use; every console form carries it."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def start_session() -> None:
    """A fresh session for a login: nothing of the one before it survives (no fixation)."""
    state = console_state()
    session.clear()
    session.permanent = True
    session.update(
        login=True,
        until=time.time() + SESSION_SECONDS,
        password=password_fingerprint(state.settings, state.secret),
        csrf=secrets.token_urlsafe(32),
    )


#: The console's pages, in the order of its menu.
NAV = (
    ("console.overview", "Overview"),
    ("console.try_livelookup", "Try a lookup"),
    ("console.try_ajaxfield", "Try an AJAX field"),
    ("console.setup", "HelpSpot set-up"),
    ("console.webhooks", "Webhooks"),
    ("console.calls", "Recent calls"),
    ("console.configuration", "Configuration"),
)


@bp.context_processor
def page_context() -> dict[str, Any]:
    """What every console template may use."""
    return {
        "csrf_token": csrf_token,
        "nav": NAV,
        "signed_in": logged_in(),
        "can_log_out": not loopback_only(console_state().settings),
    }


@bp.app_template_filter("localtime")
def localtime(timestamp: float) -> str:
    """Seconds since the epoch as the server's local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@bp.app_template_filter("isotime")
def isotime(timestamp: float) -> str:
    """Seconds since the epoch in ISO 8601, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@bp.before_request
def guard() -> ResponseReturnValue | None:
    """Network, login and CSRF checks, in that order, before any console view."""
    state = console_state()
    if not address_allowed(state.settings, request.remote_addr):
        return plain("the console is not open to your address ([console] allowed_networks)", 403)
    if request.endpoint not in _OPEN_VIEWS and not logged_in():
        if request.method == "GET":
            return redirect(url_for("console.login", next=local_path(request.full_path)))
        return plain("log in first", 403)
    if request.method == "POST" and not _csrf_holds():
        return plain("this form is out of date or did not come from the console: reload it", 400)
    return None


def _csrf_holds() -> bool:
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return False
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf")
    return isinstance(expected, str) and bool(sent) and hmac.compare_digest(sent, expected)


def local_path(path: str) -> str:
    """``path`` when it is a path on this server, else "/": never an address elsewhere."""
    path = path.rstrip("?")
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@bp.after_request
def harden(response: Response) -> Response:
    """Headers that keep the console's pages from being framed, sniffed, cached or leaked."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(Exception)
def failed(error: Exception) -> Response | HTTPException:
    """A console failure shows a page that says so; HelpSpot's endpoints never notice."""
    if isinstance(error, HTTPException):
        return error
    log.exception("console: unexpected error", exc_info=error)
    return Response(
        render_template(
            "console/error.html", message="The console failed (details in the server log)."
        ),
        status=500,
    )


def plain(text: str, status: int) -> Response:
    """A short plain-text answer."""
    return Response(f"lookup-server console: {text}\n", status, content_type="text/plain")


def page(template: str, **context: Any) -> str:
    """A console page: ``template`` with what every page needs."""
    return render_template(f"console/{template}", **context)
