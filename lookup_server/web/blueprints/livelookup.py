"""``GET|POST /livelookup/<source>``: HelpSpot's Live Lookup over HTTP."""

from __future__ import annotations

from flask import Blueprint, Response

from lookup_server.helpspot.answers import error_answer, livelookup_answer
from lookup_server.helpspot.decode import decode_params
from lookup_server.runtime.service import ServiceError
from lookup_server.web.blueprints.common import (
    check_caller,
    raw_params,
    respond,
    state,
    url_too_long,
)

bp = Blueprint("livelookup", __name__)


@bp.route("/livelookup/<source>", methods=["GET", "POST"])
@bp.route("/livelookup/<source>/<path_key>", methods=["GET", "POST"])
def livelookup(source: str, path_key: str | None = None) -> Response:
    """Find customers in ``source`` from what HelpSpot sent."""
    too_long = url_too_long()
    if too_long is not None:
        return respond(too_long)
    params = raw_params()
    try:
        check_caller("livelookup", path_key, params)  # first: refused calls never reach a backend
    except ServiceError as exc:
        return respond(error_answer(exc))
    return respond(livelookup_answer(state().sources, source, decode_params(params)))
