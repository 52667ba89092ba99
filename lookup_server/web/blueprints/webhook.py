"""``POST /webhook/<target>``: HelpSpot's webhooks, stored before they are answered.

HelpSpot cannot send a credential with a webhook: the shared key travels in
the URL (``?ll_key=`` or ``/webhook/<target>/<key>``).
"""

from __future__ import annotations

import contextlib
import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from lookup_server.helpspot.decode import InputError, UnsupportedBody
from lookup_server.runtime.service import ServiceError
from lookup_server.web.blueprints.common import authorized_body, check_caller, state, url_params
from lookup_server.webhooks import OutboxError
from lookup_server.webhooks.intake import REQUEST_ID_WINDOW

bp = Blueprint("webhook", __name__)
log = logging.getLogger(__name__)


@bp.route("/webhook/<target>", methods=["POST"])
@bp.route("/webhook/<target>/<path_key>", methods=["POST"])
def webhook(target: str, path_key: str | None = None) -> Response | tuple[Response, int]:
    """Store the webhook durably, then answer 202; delivery happens in the background."""
    try:
        body = authorized_body("webhook", path_key)
        entry = state().webhooks.accept(target, body.data)
    # HelpSpot discards the answer and never retries: these lines are the only trace
    except RequestEntityTooLarge:
        log.warning(
            "webhook for %r refused: the body (%s) is larger than [server] max_body_bytes",
            target,
            "size unannounced"
            if request.content_length is None
            else f"{request.content_length} bytes",
        )
        return _too_large(target, path_key)
    except InputError as exc:
        log.warning("webhook for %r refused: %s", target, exc)
        return jsonify(error=str(exc)), 415 if isinstance(exc, UnsupportedBody) else 400
    except ServiceError as exc:
        log.warning("webhook for %r refused: %s", target, exc.reason)
        return jsonify(error=exc.reason), exc.status
    except OutboxError as exc:
        log.error("webhook for %r NOT stored: %s", target, exc)
        return _plain(
            "the webhook outbox is unusable, so this webhook was NOT stored "
            "(details in the server log)",
            503,
        )
    return jsonify(id=entry.id), 202


def _too_large(target: str, path_key: str | None) -> Response:
    """413, after recording the loss (not the body) when HelpSpot sent it."""
    size = request.content_length
    try:  # only from the URL: the body is what we refuse to read
        check_caller("webhook", path_key, url_params())
    except ServiceError:
        pass  # not recorded: a stranger must not fill the outbox
    else:
        head = b""
        if size is not None:  # Content-Length was over the limit: nothing was read yet
            with contextlib.suppress(OSError):  # the caller may have given up
                head = request.environ["wsgi.input"].read(min(size, REQUEST_ID_WINDOW))
        state().webhooks.record_refusal(target, size, head)
    limit = state().config.server.max_body_bytes
    return _plain(
        f"the webhook is larger than [server] max_body_bytes ({limit} bytes), so it was NOT stored",
        413,
    )


def _plain(reason: str, status: int) -> Response:
    return Response(
        f"lookup-server error: {reason}\n", status=status, content_type="text/plain; charset=utf-8"
    )
