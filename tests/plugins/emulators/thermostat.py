"""A Thermostat (thermostat.io) API stand-in, serving the shapes its sources give.

* thermostat.io/help/api: ``/api`` under the account's address, ``Accept:
  application/json`` and ``Authorization: Bearer TOKEN``; 200 calls a minute.
  A missing or wrong token is 401 ``{"message": "Unauthenticated."}`` (the
  token is a Laravel Passport JWT, per thermostat.io/help/api/auth: Laravel's
  own answer).
* thermostat.io/help/api/methods: ``GET /api/account`` (``monthly_plan_limit``,
  ``monthly_plan_use``, ``limit_reached``), ``GET /api/surveys`` (the survey
  objects, ``type`` "nps" or "csat", ``csat_1``…``csat_5``,
  ``lockout_period``, ``campaign_enabled``); errors are 4xx with a JSON list
  of issues.
* HelpSpot 5.0.58, lib/api.thermostat.lib.php: ``POST /api/survey/{id}/sendnow``
  and ``POST /api/survey/{id}/email`` (add to the survey's campaign list),
  form fields ``email`` and ``xrequest``; lib/../GetThermostatResponses.php: a
  response's ``id``, ``survey_id``, ``score``, ``feedback``, ``created_at``,
  ``updated_at``, ``type`` and ``custom_fields`` (what was posted besides
  ``email``, ``xrequest`` among it).
* Issue 18, for what the pages above do not show: ``GET /api/ping?survey=&email=``
  is 200 when the person may be surveyed now and a plain-text 400 "not
  eligible" otherwise, either with ``Cache-Control: max-age``; a send to a
  person surveyed within the survey's lockout is 422; a send past the month's
  plan limit is 402; throttling is 429 with ``Retry-After`` and
  ``X-RateLimit-Limit``/``-Remaining`` (Laravel's throttle headers, also on
  every answer); ``GET /api/survey/{id}/responses?page=&per_page=`` pages of
  at most 500, newest first, in Laravel's paginator shape (``data``,
  ``current_page``, ``last_page``, ``per_page``, ``total``,
  ``next_page_url``). The response's ``email`` is this project's assumption:
  a lookup by e-mail needs it, and the pages above do not list it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.plugins.emulators import Scripted

MAX_PER_PAGE = 500
RATE_LIMIT = 200


def survey(survey_id: int, name: str, kind: str = "nps", campaign: bool = False) -> dict[str, Any]:
    """A survey object as GET /api/surveys lists it (the methods page's fields)."""
    item: dict[str, Any] = {
        "id": survey_id,
        "archived": False,
        "name": name,
        "slug": name.lower().replace(" ", "-"),
        "type": kind,
        "lockout_period": 180,
        "campaign_enabled": campaign,
        "created_at": "2018-04-28 14:03:26",
    }
    if kind == "csat":
        item.update(csat_1="Terrible", csat_2="Bad", csat_3="Okay", csat_4="Good", csat_5="Great!")
    return item


@dataclass
class ThermostatEmulator:
    """One Thermostat account."""

    token: str
    surveys: list[dict[str, Any]]
    responses: list[dict[str, Any]] = field(default_factory=list)
    plan_limit: int = 10000
    plan_use: int = 0
    #: (survey id, e-mail folded) surveyed within the lockout: ping 400, send 422.
    locked_out: set[tuple[str, str]] = field(default_factory=set)
    ping_max_age: int = 3600
    next_id: int = 5000
    script: list[Scripted] = field(default_factory=list)
    #: (method, path, args or form) of every request that passed the token check
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: (survey id, "sendnow" or "email", form) of every survey sent or listed
    sent: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next matching requests with this instead."""
        self.script.extend(
            Scripted(status, body, headers or {}, path_contains) for _ in range(times)
        )

    def answer(self, email: str, score: int, feedback: str = "", at: str = "") -> dict[str, Any]:
        """The person answers the survey last sent to them; the stored response."""
        survey_id, _, form = next(s for s in reversed(self.sent) if s[2]["email"] == email)
        custom = {k: v for k, v in form.items() if k != "email"}
        return self.add_response(int(survey_id), email, score, feedback, custom, at)

    def add_response(
        self,
        survey_id: int,
        email: str,
        score: int | None,
        feedback: str = "",
        custom_fields: dict[str, str] | None = None,
        at: str = "",
    ) -> dict[str, Any]:
        """Store a response as if someone had answered."""
        self.next_id += 1
        kind = next(s["type"] for s in self.surveys if s["id"] == survey_id)
        stamp = at or f"2026-12-03 10:{self.next_id % 60:02d}:00"
        item = {
            "id": self.next_id,
            "survey_id": survey_id,
            "email": email,
            "score": score,
            "feedback": feedback,
            "created_at": stamp,
            "updated_at": stamp,
            "type": kind,
            "custom_fields": dict(custom_fields or {}),
        }
        self.responses.append(item)
        return item

    def pages_read(self) -> list[str]:
        """The page numbers of every responses request, in order."""
        return [args.get("page", "") for _, path, args in self.seen if path.endswith("/responses")]

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("thermostat-emulator")
        app.before_request(self._gate)
        app.after_request(self._rate_headers)
        app.add_url_rule("/api/account", "account", self._account)
        app.add_url_rule("/api/surveys", "surveys", self._surveys)
        app.add_url_rule("/api/ping", "ping", self._ping)
        app.add_url_rule("/api/survey/<int:sid>/sendnow", "sendnow", self._send, methods=["POST"])
        app.add_url_rule("/api/survey/<int:sid>/email", "email", self._send, methods=["POST"])
        app.add_url_rule("/api/survey/<int:sid>/responses", "responses", self._responses)
        return app

    def _gate(self) -> Response | None:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            return _json({"message": "Unauthenticated."}, 401)
        self.seen.append((request.method, request.path, dict(request.values)))
        for i, scripted in enumerate(self.script):
            if scripted.path_contains in request.path:
                del self.script[i]
                body = scripted.body
                answer = (
                    _json(body, scripted.status)
                    if not isinstance(body, str | bytes)
                    else (Response(body, status=scripted.status))
                )
                answer.headers.update(scripted.headers)
                return answer
        return None

    def _rate_headers(self, response: Response) -> Response:
        response.headers.setdefault("X-RateLimit-Limit", str(RATE_LIMIT))
        response.headers.setdefault("X-RateLimit-Remaining", str(RATE_LIMIT - 1))
        return response

    def _account(self) -> Response:
        return _json(
            {
                "monthly_plan_limit": self.plan_limit,
                "monthly_plan_use": self.plan_use,
                "limit_reached": self.plan_use >= self.plan_limit,
            }
        )

    def _surveys(self) -> Response:
        return _json(self.surveys)

    def _known(self, survey_id: str) -> bool:
        return any(str(s["id"]) == survey_id for s in self.surveys)

    def _ping(self) -> Response:
        survey_id, email = request.args.get("survey", ""), request.args.get("email", "")
        if not self._known(survey_id) or not email:
            return _json(["survey and email are required"], 422)
        cache = {"Cache-Control": f"private, max-age={self.ping_max_age}"}
        if (survey_id, email.casefold()) in self.locked_out:
            return Response("not eligible", 400, headers=cache, content_type="text/plain")
        return _json({"eligible": True}, 200, cache)

    def _send(self, sid: int) -> Response:
        if not self._known(str(sid)):
            return _json(["No query results for model [Survey]."], 404)
        form = dict(request.form)
        email = form.get("email", "")
        if "@" not in email:
            return _json({"email": ["The email must be a valid email address."]}, 422)
        if self.plan_use >= self.plan_limit:
            return _json(["Monthly plan limit reached."], 402)
        key = (str(sid), email.casefold())
        if key in self.locked_out:
            return _json(["This person was surveyed too recently."], 422)
        action = request.path.rsplit("/", 1)[-1]
        self.sent.append((str(sid), action, form))
        if action == "sendnow":
            self.plan_use += 1
            self.locked_out.add(key)
        return _json({"success": True}, 200)

    def _responses(self, sid: int) -> Response:
        if not self._known(str(sid)):
            return _json(["No query results for model [Survey]."], 404)
        per_page = min(int(request.args.get("per_page", "15")), MAX_PER_PAGE)
        page = max(int(request.args.get("page", "1")), 1)
        mine = sorted((r for r in self.responses if r["survey_id"] == sid), key=lambda r: -r["id"])
        last_page = max((len(mine) + per_page - 1) // per_page, 1)
        chunk = mine[(page - 1) * per_page : page * per_page]
        base = f"{request.host_url.rstrip('/')}{request.path}"
        return _json(
            {
                "current_page": page,
                "data": chunk,
                "first_page_url": f"{base}?page=1",
                "from": (page - 1) * per_page + 1 if chunk else None,
                "last_page": last_page,
                "last_page_url": f"{base}?page={last_page}",
                "next_page_url": f"{base}?page={page + 1}" if page < last_page else None,
                "path": base,
                "per_page": per_page,
                "prev_page_url": f"{base}?page={page - 1}" if page > 1 else None,
                "to": (page - 1) * per_page + len(chunk) if chunk else None,
                "total": len(mine),
            }
        )


def throttled(retry_after: int) -> dict[str, str]:
    """The headers of Laravel's 429."""
    return {
        "Retry-After": str(retry_after),
        "X-RateLimit-Limit": str(RATE_LIMIT),
        "X-RateLimit-Remaining": "0",
    }


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    answer = jsonify(body)
    answer.status_code = status
    answer.headers.update(headers or {})
    return answer
