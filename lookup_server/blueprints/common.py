"""What every HelpSpot-facing blueprint needs: the app's state, auth, responses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from flask import Response, current_app, g, request

from lookup_server.answers import Answer
from lookup_server.auth import authorize, bearer_token
from lookup_server.config import Config
from lookup_server.helpspot_input import KEY_PARAM, decode_params, shared_key
from lookup_server.service import Sources, Targets
from lookup_server.webhooks import Webhooks

EXTENSION = "lookup_server"


@dataclass
class AppState:
    """Everything create_app built: the config and the live sources."""

    config: Config
    sources: Sources
    targets: Targets
    webhooks: Webhooks


def state() -> AppState:
    """The state of the app handling this request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def check_caller(path_key: str | None) -> None:
    """Raise Refused unless this request may be served (key in path, query or header)."""
    server = state().config.server
    if server.shared_key is None and not server.allowed_ips:
        return
    in_params = next((value for name, value in _raw_params() if name == KEY_PARAM), None)
    presented = path_key or shared_key(in_params) or bearer_token(
        request.headers.get("Authorization"))
    authorize(server, request.remote_addr, presented)


def request_params() -> dict[str, str]:
    """The request's query and form parameters, decoded the HelpSpot way."""
    return decode_params(_raw_params())


def _raw_params() -> list[tuple[str, str]]:
    """Query then form parameters as sent, parsed once per request (auth reads them too)."""
    if "raw_params" not in g:
        if request.method == "POST":  # HelpSpot's http-post mode sends both
            g.raw_params = list(request.values.items(multi=True))
        else:
            # a GET has no form; the standard library's parser spares werkzeug's
            # MultiDict, which cost a lookup ~12 us
            query = request.environ.get("QUERY_STRING", "")
            g.raw_params = parse_qsl(query, keep_blank_values=True, errors="replace")
    params: list[tuple[str, str]] = g.raw_params
    return params


def respond(answer: Answer) -> Response:
    """A Flask response for an Answer."""
    return Response(answer.body, status=answer.status, content_type=answer.content_type)
