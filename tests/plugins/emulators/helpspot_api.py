"""A HelpSpot Web Service API stand-in: the private methods the helpspot target uses.

Shapes from HelpSpot's API manual (support.helpspot.com, API Manual > Web
Service API: ``api/index.php?method=…``, ``output=json``, the errors
document) and from HelpSpot 5.0.58's code, which the manual describes
(lib/class.api.base.php, lib/class.api.private.php):

* Bearer token, else error 1 (no credentials: HTTP 401) or 2 ("User
  authentication failed": HTTP 400). Every error is HTTP 400 with
  ``<errors><error><id/><description/></error></errors>``, or with
  ``output=json`` ``{"error": [{"id": …, "description": …}]}``; error 208
  (merged) adds the ``xRequest`` it was merged into.
* ``private.version`` -> ``version``, ``min_version``.
* ``private.request.get`` (``xRequest``, ``fRawValues``) -> the request row and
  ``request_history: {item: {ID: {xRequestHistory, tNote, fPublic,
  fNoteIsHTML, dtGMTChange, tLog}}}``; notes come back formatted as HTML
  (a text note escaped, line breaks as ``<br />``).
* ``private.request.update`` (POST ``xRequest``, ``tNote``, ``fNoteType`` 0
  private / 1 public / 2 external, ``fNoteIsHTML``, ``fOpen``, ``xStatus``,
  ``CustomN``): a closed request is reopened first (status active, a log
  entry), then the posted fields apply, so ``fOpen=0`` closes it again;
  -> ``{"xRequest": N}``. Errors 101 (a required parameter missing), 103 (no
  such request), 208 (merged), 106 (history limit).
* ``private.request.getCustomFields`` -> ``{"field": {ID: {fieldName,
  fieldType, …}}}`` (the id is the key).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.plugins.emulators import Scripted

ERRORS = {
    1: "Authentication information not sent",
    2: "User authentication failed",
    101: "Required parameter {} not supplied",
    103: "Valid request ID required",
    106: "Request history limit reached for this request",
    201: "Invalid method provided",
    208: "Request has been merged",
}
STATUS_ACTIVE = "1"


@dataclass
class HelpSpotRequest:
    """One request, as the database holds it."""

    xRequest: int
    fOpen: str = "1"
    xStatus: str = STATUS_ACTIVE
    sEmail: str = ""
    custom: dict[str, str] = field(default_factory=dict)
    #: the history: each entry's fields, oldest first
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass
class HelpSpotApiEmulator:
    """One HelpSpot installation with one staff member's API token."""

    token: str
    requests: dict[int, HelpSpotRequest] = field(default_factory=dict)
    custom_fields: dict[int, str] = field(default_factory=lambda: {12: "Survey score"})
    merged: dict[int, int] = field(default_factory=dict)
    next_history: int = 900
    script: list[Scripted] = field(default_factory=list)
    #: (method, fields) of every update that passed the token check
    updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def add(self, request_id: int, **fields: Any) -> HelpSpotRequest:
        """A request of this installation."""
        self.requests[request_id] = HelpSpotRequest(request_id, **fields)
        return self.requests[request_id]

    def notes(self, request_id: int) -> list[dict[str, str]]:
        """The note entries of a request's history (not the log lines)."""
        return [h for h in self.requests[request_id].history if h.get("tNote")]

    def fail_next(self, status: int, body: str, times: int = 1) -> None:
        """Answer the next requests with this instead."""
        self.script.extend(Scripted(status, body, {}) for _ in range(times))

    def app(self) -> Flask:
        """The WSGI app: everything is /api/index.php."""
        app = Flask("helpspot-api-emulator")
        app.add_url_rule("/api/index.php", "api", self._api, methods=["GET", "POST"])
        return app

    def _api(self) -> Response:
        if self.script:
            scripted = self.script.pop(0)
            return Response(scripted.body, status=scripted.status)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._error(1, status=401)
        if auth != f"Bearer {self.token}":
            return self._error(2)
        method = request.values.get("method", "")
        handler = {
            "private.version": self._version,
            "private.request.get": self._get,
            "private.request.update": self._update,
            "private.request.getCustomFields": self._custom_fields,
        }.get(method)
        if handler is None or (method == "private.request.update") != (request.method == "POST"):
            return self._error(201)
        return handler()

    def _version(self) -> Response:
        return self._result({"version": "2.0", "min_version": "1.7"})

    def _custom_fields(self) -> Response:
        return self._result(
            {
                "field": {
                    str(k): {"fieldName": v, "fieldType": "text"}
                    for k, v in self.custom_fields.items()
                }
            }
        )

    def _get(self) -> Response:
        raw = request.args.get("xRequest")
        if raw is None:
            return self._error(101, "xRequest")
        found = self.requests.get(self.merged.get(int(raw), int(raw)) if raw.isdigit() else -1)
        if found is None:
            return self._error(103)
        row: dict[str, Any] = {
            "xRequest": found.xRequest,
            "fOpen": found.fOpen,
            "xStatus": found.xStatus,
            "sEmail": found.sEmail,
            **{f"Custom{k}": v for k, v in found.custom.items()},
            "request_history": {"item": {h["xRequestHistory"]: h for h in found.history}},
        }
        return self._result(row)

    def _update(self) -> Response:
        form = dict(request.form)
        raw = form.get("xRequest", "")
        if not raw.strip():
            return self._error(101, "xRequest")
        if raw.isdigit() and int(raw) in self.merged:
            return self._error(208, extra={"xRequest": str(self.merged[int(raw)])})
        found = self.requests.get(int(raw)) if raw.isdigit() else None
        if found is None:
            return self._error(103)
        self.updates.append(("private.request.update", form))
        if found.fOpen == "0":  # HelpSpot reopens a closed request it updates
            found.fOpen, found.xStatus = "1", STATUS_ACTIVE
            self._log(found, "Request reopened")
        if form.get("tNote", "").strip():
            self._note(found, form)
        self._custom(found, form)
        if "xStatus" in form:
            found.xStatus = form["xStatus"]
        if "fOpen" in form:
            found.fOpen = form["fOpen"]
            if form["fOpen"] == "0":
                self._log(found, "Request closed")
        return self._result({"xRequest": str(found.xRequest)})

    def _custom(self, found: HelpSpotRequest, form: dict[str, str]) -> None:
        for name, value in form.items():
            number = name[6:]
            if name.startswith("Custom") and number.isdigit() and int(number) in self.custom_fields:
                found.custom[number] = value

    def _note(self, found: HelpSpotRequest, form: dict[str, str]) -> None:
        kind = form.get("fNoteType", "0")
        text = form["tNote"]
        as_html = (
            text if form.get("fNoteIsHTML") == "1" else html.escape(text).replace("\n", "<br />\n")
        )
        self.next_history += 1
        found.history.append(
            {
                "xRequestHistory": str(self.next_history),
                "xRequest": str(found.xRequest),
                "fPublic": "1" if kind == "1" else "0",
                "external": "1" if kind == "2" else "0",
                "fNoteIsHTML": form.get("fNoteIsHTML", "0"),
                "dtGMTChange": "1764756000",
                "tNote": as_html,
                "tLog": "",
            }
        )

    def _log(self, found: HelpSpotRequest, line: str) -> None:
        self.next_history += 1
        found.history.append(
            {
                "xRequestHistory": str(self.next_history),
                "xRequest": str(found.xRequest),
                "tNote": "",
                "tLog": line,
            }
        )

    def _result(self, body: Any) -> Response:
        if request.values.get("output") == "json":
            return jsonify(body)
        raise NotImplementedError("the emulator answers only output=json")

    def _error(
        self, code: int, text: str = "", status: int = 400, extra: dict[str, str] | None = None
    ) -> Response:
        description = ERRORS[code].format(text)
        if request.values.get("output") == "json":
            answer = jsonify({"error": [{**(extra or {}), "id": code, "description": description}]})
            answer.status_code = status
            return answer
        fields = "".join(f"\t\t<{k}>{html.escape(v)}</{k}>\n" for k, v in (extra or {}).items())
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<errors>\n\t<error>\n'
            f"{fields}\t\t<id>{code}</id>\n\t\t<description>{html.escape(description)}</description>\n"
            "\t</error>\n</errors>"
        )
        return Response(body, status=status, content_type="text/xml")
