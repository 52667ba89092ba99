"""``POST /webhook/<target>``: HelpSpot's webhooks, stored before they are answered.

HelpSpot cannot send a credential with a webhook: the shared key travels in
the URL (``?ll_key=`` or ``/webhook/<target>/<key>``).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from lookup_server.blueprints.common import check_caller, state
from lookup_server.helpspot_input import InputError, request_body
from lookup_server.outbox import OutboxError
from lookup_server.service import ServiceError

bp = Blueprint("webhook", __name__)
log = logging.getLogger(__name__)


@bp.route("/webhook/<target>", methods=["POST"])
@bp.route("/webhook/<target>/<path_key>", methods=["POST"])
def webhook(target: str, path_key: str | None = None) -> Response | tuple[Response, int]:
    """Store the webhook durably, then answer 202; delivery happens in the background."""
    try:
        body = request.get_data()  # before check_caller may parse a form from the stream
        check_caller(path_key)
        payload = request_body(body, request.content_type or "")
        entry = state().webhooks.accept(target, payload)
    # HelpSpot discards the answer and never retries: these lines are the only trace
    except RequestEntityTooLarge:
        log.warning("webhook for %r refused: the body is larger than [server] max_body_bytes",
                    target)
        raise
    except InputError as exc:
        log.warning("webhook for %r refused: %s", target, exc)
        return jsonify(error=str(exc)), 400
    except ServiceError as exc:
        log.warning("webhook for %r refused: %s", target, exc.reason)
        return jsonify(error=exc.reason), exc.status
    except OutboxError as exc:
        log.error("webhook for %r NOT stored: %s", target, exc)
        return _plain("the webhook outbox is unusable, so this webhook was NOT stored "
                      "(details in the server log)", 503)
    return jsonify(id=entry.id), 202


def _plain(reason: str, status: int) -> Response:
    return Response(f"lookup-server error: {reason}\n", status=status,
                    content_type="text/plain; charset=utf-8")
