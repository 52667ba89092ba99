"""What every HelpSpot-facing blueprint needs: the app's state, auth, responses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from flask import Response, current_app, g, request

from lookup_server.config.settings import Config
from lookup_server.helpspot.answers import Answer, request_line_answer
from lookup_server.helpspot.decode import KEY_PARAM, Body, InputError, parsed_body, shared_key
from lookup_server.runtime.service import Sources, Targets
from lookup_server.telemetry import Telemetry
from lookup_server.telemetry.metrics import PrometheusMetrics
from lookup_server.web.auth import authorize, bearer_token
from lookup_server.webhooks.intake import Webhooks

EXTENSION = "lookup_server"


@dataclass
class AppState:
    """Everything create_app built: the config and the live sources."""

    config: Config
    sources: Sources
    targets: Targets
    webhooks: Webhooks
    telemetry: Telemetry
    #: What ``/metrics`` reads; None when there is no ``[console]``.
    metrics: PrometheusMetrics | None = None


def state() -> AppState:
    """The state of the app handling this request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def check_caller(
    kind: str, path_key: str | None, params: list[tuple[str, str]] | None = None
) -> None:
    """Raise Refused unless this ``kind`` of call may be served (key in path, query or header).

    ``kind`` is one of config.ENDPOINT_KINDS: each may have a key of its own.

    ``params`` are the request's raw parameters when the view has parsed them
    anyway (:func:`raw_params`); else they are read only when a key or address
    list is configured (a webhook's form body is not parsed twice for nothing).
    """
    server = state().config.server
    if server.key_for(kind) is None and not server.allowed_ips:
        return
    if params is None:
        params = raw_params()
    in_params = next((value for name, value in params if name == KEY_PARAM), None)
    presented = (
        path_key or shared_key(in_params) or bearer_token(request.headers.get("Authorization"))
    )
    authorize(server, kind, request.remote_addr, presented)


def url_params() -> list[tuple[str, str]]:
    """The URL's query parameters only (a push's or webhook's body is not a form for us)."""
    return list(request.args.items(multi=True))


def authorized_body(kind: str, path_key: str | None) -> Body:
    """The push or webhook body, once the caller is authorized (else Refused).

    The key may ride in the URL, a header or the body; in the body only as the
    one parser that reads what is stored finds it (never a multipart form
    werkzeug would parse). A body that cannot be parsed is refused as a bad
    request only to a caller the URL or header already authorizes.
    """
    try:
        body = parsed_body(request.get_data(), request.content_type or "")
    except InputError:
        check_caller(kind, path_key, url_params())
        raise
    in_body = [(KEY_PARAM, body.key)] if body.key is not None else []
    check_caller(kind, path_key, [*url_params(), *in_body])
    return body


def url_too_long() -> Answer | None:
    """The error answer for a URL longer than ``[server] max_request_line``, if it is."""
    return request_line_answer(
        request.environ.get("QUERY_STRING", ""),
        len(request.path),
        state().config.server.max_request_line,
    )


def raw_params() -> list[tuple[str, str]]:
    """Query then form parameters as sent (decode them with decode_params)."""
    if request.method == "POST":  # HelpSpot's http-post mode sends both, query first
        return [(name, value) for name, values in request.values.lists() for value in values]
    # a GET has no form; the standard library's parser spares building
    # werkzeug's MultiDict (see bench/README.md)
    return parse_qsl(
        request.environ.get("QUERY_STRING", ""), keep_blank_values=True, errors="replace"
    )


def respond(answer: Answer) -> Response:
    """A Flask response for an Answer (its count goes to the call's record)."""
    g.answer_count = answer.count
    return Response(answer.body, status=answer.status, content_type=answer.content_type)
