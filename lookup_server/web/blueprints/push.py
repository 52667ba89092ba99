"""Request Push, as forwarded by the generated PHP bridge (HELPSPOT.md §5).

``POST /push/<target>`` takes the pushed request (JSON from the bridge, or a
form) and answers ``{"id": ...}`` or ``{"error": ...}``; the bridge shows the
error to staff as HelpSpot's "Request push failed". ``GET
/push/<target>/<id>`` answers the HTML that ``details($id)`` puts in the page,
or ``{"error": ...}`` with the status. Errors are plain text: the bridge makes
them fit each place HelpSpot shows them (raw HTML, or escaped once more).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from lookup_server.helpspot.decode import InputError, UnsupportedBody, push_request
from lookup_server.helpspot.render import render_push_details, xml_safe
from lookup_server.runtime.service import ServiceError
from lookup_server.web.blueprints.common import authorized_body, check_caller, state

bp = Blueprint("push", __name__)


@bp.route("/push/<target>", methods=["POST"])
def push(target: str) -> tuple[Response, int]:
    """Push a request to ``target``; answer its id there."""
    try:
        body = authorized_body("push", None)
        push_id = state().targets[target].push(push_request(body.data))
    except UnsupportedBody as exc:
        return jsonify(error=xml_safe(str(exc))), 415
    except InputError as exc:
        return jsonify(error=xml_safe(str(exc))), 400
    except ServiceError as exc:
        return jsonify(error=xml_safe(exc.reason)), exc.status
    return jsonify(id=push_id), 200


@bp.route("/push/<target>/<path:push_id>", methods=["GET"])
def details(target: str, push_id: str) -> tuple[Response, int]:
    """The request page's HTML about an earlier push."""
    try:
        check_caller("push", None)
        shown = state().targets[target].details(push_id)
    except ServiceError as exc:
        return jsonify(error=xml_safe(exc.reason)), exc.status
    html = render_push_details(shown)
    return Response(html, content_type="text/html; charset=utf-8"), 200
