"""Thermostat's JSON API, as its documentation and HelpSpot's own integration use it.

Where each call comes from (the emulator in tests/plugins/emulators/thermostat.py
serves the same shapes and cites the same sources):

* thermostat.io/help/api: ``https://thermostat.io/api``, ``Accept:
  application/json`` and ``Authorization: Bearer TOKEN`` on every request,
  throttled to 200 calls a minute; errors are 4xx with a JSON list of issues.
* thermostat.io/help/api/methods: ``GET /api/account`` (``monthly_plan_limit``,
  ``monthly_plan_use``, ``limit_reached``) and ``GET /api/surveys`` (``id``,
  ``name``, ``type`` nps or csat, ``csat_1``…``csat_5``, ``lockout_period``,
  ``campaign_enabled``).
* HelpSpot 5.0.58's own client (lib/api.thermostat.lib.php): ``POST
  /api/survey/{id}/sendnow`` and ``POST /api/survey/{id}/email`` (the survey's
  campaign list) with form fields ``email`` and ``xrequest``; what else is
  posted comes back as the response's ``custom_fields``; a response has
  ``id``, ``survey_id``, ``score``, ``feedback``, ``created_at``, ``type`` and
  ``custom_fields.xrequest`` (or ``xRequest``).
* Issue 18 of this project, for what those pages do not show: ``GET /api/ping``
  (may this person be surveyed now: 200, or a plain-text 400 "not eligible",
  cached as its ``Cache-Control: max-age`` says), 422 (surveyed too recently),
  402 (the month's plan limit is reached), 429 with ``Retry-After`` and
  ``X-RateLimit-*`` (Laravel's throttle, which the API runs on), and ``GET
  /api/survey/{id}/responses`` in pages of up to 500, newest first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from lookup_server.plugin import BackendError

from .. import http_client
from ..http_client import Deadline

log = logging.getLogger(__name__)
VENDOR = "Thermostat"
DEFAULT_URL = "https://thermostat.io"
#: The most responses one page of the responses API holds.
PER_PAGE = 500
#: A rate limit of this long or less is waited out within a call's deadline.
SHORT_WAIT = 2.0
#: A throttled answer without a usable wait: the API's window is a minute.
DEFAULT_THROTTLE = 60.0


class RateLimited(BackendError):
    """Thermostat throttles this token: try again in ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(
            f"Thermostat is rate-limiting this token (HTTP 429): try again in {wait:.0f} s"
        )
        self.wait = wait


class PlanLimitReached(BackendError):
    """The account's monthly plan limit is used up (HTTP 402): nothing is sent."""


class Refused(BackendError):
    """Thermostat refused the request itself (a 4xx): ``status`` and its issues."""

    def __init__(self, message: str, status: int, answer: str) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer


@dataclass(frozen=True)
class Survey:
    """What the target and the source need of one survey."""

    id: str
    name: str
    #: "nps" (0-10) or "csat" (1-5, labelled by csat_1 … csat_5).
    type: str
    labels: Mapping[int, str] = field(default_factory=dict)
    campaign_enabled: bool = False


@dataclass(frozen=True)
class SurveyResponse:
    """One answer to a survey."""

    id: int
    survey_id: str
    email: str
    score: int | None
    feedback: str
    created_at: str
    custom_fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def xrequest(self) -> str:
        """The HelpSpot request the survey was sent for ("" when none)."""
        value = self.custom_fields.get("xrequest") or self.custom_fields.get("xRequest") or ""
        return value if value.isdigit() else ""


@dataclass(frozen=True)
class ResponsePage:
    """One page of a survey's responses, newest first."""

    responses: list[SurveyResponse]
    last: bool


class ThermostatApi:
    """One account's API: its token, and what the API said about throttling it."""

    def __init__(
        self,
        url: str,
        token: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._clock = clock
        self._http: requests.Session | None = None
        self._lock = threading.Lock()
        #: Monotonic time before which a call would only be throttled again.
        self._throttled_until = 0.0

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- calls --------------------------------------------------------------------------

    def account(self, deadline: Deadline) -> dict[str, Any]:
        """The plan's use this month (read only)."""
        return _object(self.call("GET", "/api/account", deadline), "account")

    def surveys(self, deadline: Deadline) -> list[Survey]:
        """Every survey of the account."""
        body = http_client.json_body(self.call("GET", "/api/surveys", deadline), VENDOR)
        if not isinstance(body, list):
            raise BackendError("Thermostat sent an unreadable list of surveys; try again later")
        return [survey_of(item) for item in body if isinstance(item, Mapping)]

    def survey(self, survey_id: str, deadline: Deadline) -> Survey:
        """One survey by id; BackendError naming it when the account has none such."""
        for found in self.surveys(deadline):
            if found.id == survey_id:
                return found
        raise BackendError(f"Thermostat has no survey {survey_id} in this account; check survey")

    def ping(self, survey_id: str, email: str, deadline: Deadline) -> tuple[bool, float]:
        """May ``email`` be surveyed now, and for how many seconds that answer holds."""
        response = self.call(
            "GET", "/api/ping", deadline, params={"survey": survey_id, "email": email}, ok=(400,)
        )
        plain = response.headers.get("Content-Type", "").startswith("text/plain")
        if response.status_code == 400 and not plain:
            # "not eligible" is plain text; a JSON 400 is a request Thermostat refused
            said = issues(response, self._token)
            raise Refused(f"Thermostat refused the ping: {said}", 400, said)
        if response.status_code == 200:
            http_client.json_body(response, VENDOR)  # a proxy's page says nothing of the person
        return response.status_code == 200, max_age(response)

    def send(
        self, survey_id: str, mode: str, form: Mapping[str, str], deadline: Deadline
    ) -> requests.Response:
        """Send the survey now (``mode`` "send") or add to its campaign list ("campaign")."""
        action = "sendnow" if mode == "send" else "email"
        path = f"/api/survey/{quote(survey_id, safe='')}/{action}"
        response = self.call("POST", path, deadline, data=dict(form), ok=(422,))
        http_client.json_body(response, VENDOR)  # a proxy's page is no survey sent
        return response

    def responses(self, survey_id: str, page: int, deadline: Deadline) -> ResponsePage:
        """Page ``page`` (from 1) of a survey's responses, newest first."""
        path = f"/api/survey/{quote(survey_id, safe='')}/responses"
        params = {"page": str(page), "per_page": str(PER_PAGE)}
        body = _object(self.call("GET", path, deadline, params=params), "responses")
        items = body.get("data")
        if not isinstance(items, list):
            raise BackendError("Thermostat sent an unreadable page of responses; try again later")
        found = [response_of(item, survey_id) for item in items if isinstance(item, Mapping)]
        last = body.get("next_page_url") is None or not items
        return ResponsePage([r for r in found if r is not None], last)

    # -- HTTP ---------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        deadline: Deadline,
        *,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """One call; a 2xx answer (or one of ``ok``), else the error it means.

        A throttled answer is waited out when that is short and fits the
        deadline, else RateLimited; until then, calls are not even sent.
        """
        for _ in range(2):
            self._not_throttled()
            response = http_client.request_once(
                self._session(), method, self.url + path, deadline, vendor=VENDOR, **kwargs
            )
            if response.status_code != 429:
                _raise_for_status(response, ok, self._token)
                return response
            wait = throttle_wait(response)
            with self._lock:
                self._throttled_until = max(self._throttled_until, self._clock() + wait)
            if wait > SHORT_WAIT or not deadline.allows(wait):
                raise RateLimited(wait)
            log.info("Thermostat asks to wait %.1f s (HTTP 429); waiting", wait)
            deadline.wait(wait)
            with self._lock:
                self._throttled_until = 0.0
        raise RateLimited(DEFAULT_THROTTLE)

    def _not_throttled(self) -> None:
        with self._lock:
            left = self._throttled_until - self._clock()
        if left > 0:
            raise RateLimited(left)

    def _session(self) -> requests.Session:
        if self._http is None:
            self._http = http_client.AbortableSession()
            self._http.headers["Authorization"] = f"Bearer {self._token}"
            self._http.headers["Accept"] = "application/json"
            self._http.headers["User-Agent"] = "lookup-server (HelpSpot integration)"
        return self._http


def throttle_wait(response: requests.Response) -> float:
    """Seconds a 429 asks to wait: ``Retry-After``, else ``X-RateLimit-Reset``, else a minute."""
    if response.headers.get("Retry-After"):
        return http_client.retry_after_seconds(response.headers["Retry-After"])
    reset = response.headers.get("X-RateLimit-Reset", "")
    if reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return DEFAULT_THROTTLE


def max_age(response: requests.Response) -> float:
    """How long an answer may be kept: its ``Cache-Control: max-age`` (0 when none)."""
    for part in response.headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "no-store" or name.lower() == "no-cache":
            return 0.0
        if name.lower() == "max-age" and value.strip().isdigit():
            return float(value.strip())
    return 0.0


def issues(response: requests.Response, token: str = "") -> str:
    """The issues of an error answer as one line (its JSON list, or its text), token hidden."""
    try:
        body = response.json()
    except ValueError:
        return http_client.answer_excerpt(response, [token]).strip()[:300]
    found: list[str] = []
    _collect(body, found)
    text = "; ".join(found) if found else json.dumps(body)
    return http_client.blank_out(text, [token])[:300]


def _collect(value: object, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)


def _raise_for_status(response: requests.Response, ok: tuple[int, ...], token: str) -> None:
    status = response.status_code
    said = issues(response, token)
    if 200 <= status < 300 or status in ok:
        return
    if status == 401:
        raise Refused(
            "Thermostat rejected the API token (HTTP 401); check token "
            "(Account > Integrations in Thermostat)",
            status,
            said,
        )
    if status == 402:
        raise PlanLimitReached(
            "Thermostat's monthly plan limit is reached (HTTP 402): no survey is sent "
            "until the plan is raised or the month ends"
        )
    if status == 403:
        raise Refused("the Thermostat token may not do that (HTTP 403)", status, said)
    if status == 404:
        raise Refused("Thermostat has no such survey (HTTP 404); check survey", status, said)
    if status >= 500:
        raise Refused(
            f"Thermostat is having problems (HTTP {status}); try again later",
            status,
            said,
        )
    raise Refused(
        f"Thermostat refused the request (HTTP {status}): {said}",
        status,
        said,
    )


def _object(response: requests.Response, what: str) -> dict[str, Any]:
    body = http_client.json_body(response, VENDOR)
    if not isinstance(body, dict):
        raise BackendError(f"Thermostat sent an unreadable {what}; try again later")
    return body


def survey_of(item: Mapping[str, Any]) -> Survey:
    """A survey object of ``GET /api/surveys``."""
    kind = str(item.get("type") or "nps").lower()
    labels = {
        n: str(item[f"csat_{n}"]) for n in range(1, 6) if item.get(f"csat_{n}") not in (None, "")
    }
    return Survey(
        id=http_client.text_of(item.get("id")),
        name=http_client.text_of(item.get("name")),
        type="csat" if kind == "csat" else "nps",
        labels=labels,
        campaign_enabled=bool(item.get("campaign_enabled")),
    )


def response_of(item: Mapping[str, Any], survey_id: str) -> SurveyResponse | None:
    """A response object, or None when it has no usable id."""
    raw_id = item.get("id")
    if not isinstance(raw_id, int) and not (isinstance(raw_id, str) and raw_id.isdigit()):
        return None
    score = item.get("score")
    fields = item.get("custom_fields")
    return SurveyResponse(
        id=int(raw_id),
        survey_id=http_client.text_of(item.get("survey_id")) or survey_id,
        email=http_client.text_of(item.get("email")).strip(),
        score=_score(score),
        feedback=http_client.text_of(item.get("feedback")),
        created_at=http_client.text_of(item.get("created_at")),
        custom_fields=(
            {str(k): http_client.text_of(v) for k, v in fields.items()}
            if isinstance(fields, Mapping)
            else {}
        ),
    )


def _score(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def score_class(score: int | None, survey: Survey | None) -> str:
    """A score's class: NPS detractor (0-6), passive (7-8), promoter (9-10); CSAT's label."""
    if score is None:
        return ""
    if survey is not None and survey.type == "csat":
        return survey.labels.get(score, f"{score} of 5")
    if score <= 6:
        return "detractor"
    return "passive" if score <= 8 else "promoter"
