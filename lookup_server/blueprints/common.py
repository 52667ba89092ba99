"""What every HelpSpot-facing blueprint needs: the app's state, auth, responses."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from flask import Response, current_app, request
from werkzeug.datastructures import MultiDict

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
    presented = path_key or shared_key(_values().get(KEY_PARAM)) or bearer_token(
        request.headers.get("Authorization"))
    authorize(server, request.remote_addr, presented)


def request_params() -> dict[str, str]:
    """The request's query and form parameters, decoded the HelpSpot way."""
    if request.method == "GET":
        # the standard library's parser: werkzeug's MultiDict costs a lookup ~12 us
        query = request.environ.get("QUERY_STRING", "")
        return decode_params(parse_qsl(query, keep_blank_values=True, errors="replace"))
    return decode_params(_values().items(multi=True))


def _values() -> MultiDict[str, str]:
    # Query first, then form (HelpSpot's http-post mode sends both). A GET has no
    # form to parse: skipping request.values spares every lookup that work.
    return request.values if request.method == "POST" else request.args


def respond(answer: Answer) -> Response:
    """A Flask response for an Answer."""
    return Response(answer.body, status=answer.status, content_type=answer.content_type)
