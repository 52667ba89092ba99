"""``GET /ajax/<source>``: HelpSpot's AJAX selection fields (HELPSPOT.md §4).

HelpSpot appends its query to the configured URL with a bare ``?``, so a URL
that already has a query string corrupts the first parameter: the shared key
travels in the path instead (``/ajax/<source>/<key>``).
"""

from __future__ import annotations

from flask import Blueprint, Response

from lookup_server.helpspot.answers import error_answer, options_answer
from lookup_server.helpspot.decode import decode_params
from lookup_server.runtime.service import ServiceError
from lookup_server.web.blueprints.common import (
    check_caller,
    raw_params,
    respond,
    state,
    url_too_long,
)

bp = Blueprint("ajax", __name__)


@bp.route("/ajax/<source>", methods=["GET"])
@bp.route("/ajax/<source>/<path_key>", methods=["GET"])
def ajax(source: str, path_key: str | None = None) -> Response:
    """Drop-down options for the field, searched by ``callingField``."""
    too_long = url_too_long()
    if too_long is not None:
        return respond(too_long)
    params = raw_params()
    try:
        check_caller("ajax", path_key, params)
    except ServiceError as exc:
        return respond(error_answer(exc))
    return respond(options_answer(state().sources, source, decode_params(params)))
