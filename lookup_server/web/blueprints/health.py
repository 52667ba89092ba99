"""``GET /healthz`` for load balancers."""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz() -> Response:
    """200 while the process serves requests; it touches no backend."""
    return Response("ok\n", content_type="text/plain; charset=utf-8")
