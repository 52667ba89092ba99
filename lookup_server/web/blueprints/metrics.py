"""``GET /metrics``: the server's figures for Prometheus, when ``[console]`` is configured.

Who may read them is decided by :func:`lookup_server.web.console.access.metrics_access`.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from lookup_server.telemetry.metrics import CONTENT_TYPE
from lookup_server.web.blueprints.common import state
from lookup_server.web.console import logged_in
from lookup_server.web.console.access import ConsoleAccess, metrics_access

bp = Blueprint("metrics", __name__)

#: Asked of a caller from allowed_networks that gave no (or a wrong) password.
CHALLENGE = 'Basic realm="lookup-server metrics"'


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    """Every worker's counts and what the outbox holds, in Prometheus' text format."""
    app_state = state()
    if app_state.metrics is None:
        abort(404)
    access = metrics_access(
        app_state.config.console,
        request.remote_addr,
        request.headers.get("Authorization"),
        session_authenticated=logged_in(),
    )
    if access is ConsoleAccess.FORBIDDEN:
        return _refused(403, "caller address not allowed")
    if access is ConsoleAccess.NEEDS_PASSWORD:
        refusal = _refused(
            401, "the console password is required (HTTP Basic auth or Authorization: Bearer)"
        )
        refusal.headers["WWW-Authenticate"] = CHALLENGE
        return refusal
    webhooks = app_state.webhooks
    body = app_state.metrics.exposition(
        webhooks.outbox if webhooks.enabled else None, webhooks.target_names
    )
    return Response(body, content_type=CONTENT_TYPE)


def _refused(status: int, reason: str) -> Response:
    # The server's usual plain-text error; it never repeats what the caller sent.
    return Response(
        f"lookup-server error: {reason}\n",
        status=status,
        content_type="text/plain; charset=utf-8",
    )
