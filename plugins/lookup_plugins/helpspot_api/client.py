"""A small client of HelpSpot's Web Service API, the private methods it needs.

As HelpSpot's API manual describes it, checked against HelpSpot 5.0.58's own
code (lib/class.api.base.php, lib/class.api.private.php): every call is
``{url}/api/index.php?method=NAME``, ``output=json`` for JSON, a private
method authenticated with ``Authorization: Bearer`` (an API token of a staff
member); a failed call is HTTP 400 (401 when no credentials came) with an
``<errors><error><id>N</id><description>…</description></error></errors>``
document, or with ``output=json`` ``{"error": [{"id": N, "description": …}]}``,
so both are read. ``private.request.update`` takes form fields; a closed
request it updates is reopened first (see the helpspot target).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from lxml import etree

from lookup_server.plugin import BackendError

from .. import http_client
from ..http_client import Deadline

log = logging.getLogger(__name__)
VENDOR = "HelpSpot"
#: Statuses worth another try within the deadline: throttling and brief outages.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Error ids of HelpSpot's API (lib/class.api.base.php) that name a credential problem.
AUTH_ERRORS = frozenset({1, 2, 3})

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass(frozen=True)
class ApiError:
    """One ``<error>`` of HelpSpot's answer."""

    id: int
    description: str
    #: Extra fields HelpSpot adds (``xRequest`` of the request a merged one went into).
    fields: Mapping[str, str]


class HelpSpotRefused(BackendError):
    """HelpSpot answered with errors (or an HTTP status it never uses for success)."""

    def __init__(self, message: str, status: int, errors: list[ApiError], answer: str) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors
        self.answer = answer

    def has(self, error_id: int) -> ApiError | None:
        """The error of that id, if HelpSpot gave it."""
        return next((e for e in self.errors if e.id == error_id), None)


class HelpSpotApi:
    """One HelpSpot installation, as one staff member's API token sees it."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._http: requests.Session | None = None

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def get(self, method: str, params: Mapping[str, str], deadline: Deadline) -> Any:
        """A GET method's JSON result."""
        return self._call("GET", method, deadline, params=dict(params))

    def post(self, method: str, form: Mapping[str, str], deadline: Deadline) -> Any:
        """A POST method's JSON result."""
        return self._call("POST", method, deadline, data=dict(form))

    def _call(self, verb: str, method: str, deadline: Deadline, **kwargs: Any) -> Any:
        query = {"method": method, "output": "json", **kwargs.pop("params", {})}
        response = http_client.send(
            self._session(),
            verb,
            f"{self.url}/api/index.php",
            deadline,
            vendor=VENDOR,
            retry_statuses=RETRY_STATUSES,
            params=query,
            **kwargs,
        )
        if response.status_code == 200:
            return http_client.json_body(response, VENDOR)
        raise refusal(response, method, self._token)

    def _session(self) -> requests.Session:
        if self._http is None:
            self._http = http_client.AbortableSession()
            self._http.headers["Authorization"] = f"Bearer {self._token}"
            self._http.headers["Accept"] = "application/json"
        return self._http


def refusal(response: requests.Response, method: str, token: str) -> HelpSpotRefused:
    """The error an answer other than 200 means, with HelpSpot's own error ids."""
    status = response.status_code
    errors = parse_errors(response.content)
    said = "; ".join(f"{e.description} (error {e.id})" for e in errors)
    if status in (400, 401) and any(e.id in AUTH_ERRORS for e in errors):
        message = (
            f"HelpSpot rejected the API token ({said}); check token (the staff member's "
            "API token, with the private API enabled in Admin > Settings > API)"
        )
    elif errors:
        message = f"HelpSpot refused {method}: {said}"
    elif status == 404:
        message = "HelpSpot has no API at this url (HTTP 404); check url"
    elif status >= 500:
        message = f"HelpSpot is having problems (HTTP {status}); try again later"
    else:
        message = f"HelpSpot answered {method} with HTTP {status}; check url"
    answer = said or http_client.answer_excerpt(response, [token])
    return HelpSpotRefused(http_client.blank_out(message, [token]), status, errors, answer)


def parse_errors(body: bytes) -> list[ApiError]:
    """The errors of an answer: JSON ``{"error": [...]}`` or XML ``<errors>``; [] for neither."""
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        try:
            data = json.loads(body)
        except ValueError:
            return []
        items = data.get("error") if isinstance(data, dict) else None
        return [_error(i) for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    if not stripped.startswith(b"<"):
        return []
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return []
    if root is None or root.tag != "errors":
        return []
    return [_error({child.tag: child.text or "" for child in e}) for e in root.iterfind("error")]


def _error(item: Mapping[str, Any]) -> ApiError:
    raw = str(item.get("id", "")).strip()
    rest = {str(k): str(v) for k, v in item.items() if k not in ("id", "description")}
    return ApiError(
        int(raw) if raw.isdigit() else 0, str(item.get("description", "")).strip(), rest
    )
