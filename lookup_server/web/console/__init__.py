"""The operator console: see, try and watch the server, at ``/`` and ``/console/...``.

Server-rendered pages (Jinja2), no script and nothing from another site, under
a strict Content-Security-Policy. Off unless ``[console]`` is configured.

- :mod:`.access` — networks, the password, sessions' secret, login limits.
- :mod:`.blueprint` — the blueprint and the checks every request passes.
- :mod:`.pages` — overview, log in/out, HelpSpot set-up, configuration, calls.
- :mod:`.trying` — try a lookup or an AJAX field as HelpSpot would.
- :mod:`.webhooks` — the outbox: states, attempts, retry, purge.
"""

from __future__ import annotations

from flask import Flask

from lookup_server.config.settings import Config
from lookup_server.telemetry.activity import Activity
from lookup_server.web.console import pages, trying, webhooks  # noqa: F401 (their routes)
from lookup_server.web.console.access import session_secret
from lookup_server.web.console.blueprint import (
    EXTENSION,
    ConsoleState,
    bp,
    configure_sessions,
    logged_in,
)

__all__ = ["install_console", "logged_in"]


def install_console(app: Flask, config: Config, activity: Activity) -> None:
    """Serve the console from ``app``, showing what ``activity`` records."""
    outbox = config.server.outbox
    secret = session_secret(outbox.with_name(f"{outbox.stem}.console-secret"))
    configure_sessions(app, secret)
    app.extensions[EXTENSION] = ConsoleState(config.console, activity, secret)
    app.register_blueprint(bp)
