"""Send a Thermostat survey for a HelpSpot request (``backend = "thermostat"``, a target).

A trigger's webhook (or a Request Push) names the request; the target asks
``/api/ping`` whether its customer may be surveyed now (the answer cached per
person and survey as long as the API says), then sends the survey at once or
adds the address to the survey's campaign list, with ``xrequest`` and the
mapped request fields as custom fields, so that the answer can find its
request again (lookup_plugins.thermostat.source). Outcomes that are no error
(surveyed too recently, not eligible, no e-mail address) are recorded in the
send log and not retried; a reached plan limit (402) fails the webhook for
good and says so in ``check``; throttling (429) and outages (5xx) are retried
by the outbox, no sooner than the API asks.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    NotFound,
    PushDetails,
    PushRequest,
    Secret,
    TargetBackend,
    TargetSettings,
    Webhook,
    state_dir,
)

from ..http_client import Deadline
from . import sends
from .client import (
    DEFAULT_URL,
    PlanLimitReached,
    RateLimited,
    Refused,
    SurveyResponse,
    ThermostatApi,
    score_class,
)

log = logging.getLogger(__name__)
#: An address Thermostat can send to: one @, no blanks, a dot in the domain.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
#: Pages of responses ``details`` reads, newest first, looking for the answer.
DETAILS_PAGES = 4
#: Statuses after which a retry cannot succeed: the survey does not exist.
FINAL_STATUSES = frozenset({400, 404, 410})


@dataclass(frozen=True)
class ThermostatTargetOptions:
    """The keys of a ``[targets.NAME]`` table with ``backend = "thermostat"``."""

    token: Secret
    #: The survey's id in Thermostat.
    survey: str
    #: "send": the API's sendnow; "campaign": add the address to the survey's list.
    mode: Literal["send", "campaign"] = "send"
    #: HelpSpot field -> Thermostat custom field; xrequest (the request id) is always sent.
    fields: dict[str, str] = field(default_factory=dict)
    #: The request field holding the customer's address.
    email_field: str = "sEmail"
    url: str = DEFAULT_URL
    #: The send log; default: the user's state folder.
    store: Path | None = None


@dataclass(frozen=True)
class _Outcome:
    send: sends.Send

    @property
    def sent(self) -> bool:
        return self.send.outcome in (sends.SENT, sends.CAMPAIGN)


class ThermostatTarget(TargetBackend[ThermostatTargetOptions]):
    """Surveys for HelpSpot requests: webhooks (triggers) and Request Push."""

    Options = ThermostatTargetOptions

    def __init__(self, options: ThermostatTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.api = ThermostatApi(options.url, options.token.reveal())
        path = options.store or state_dir() / f"thermostat-{_safe(target.name)}.sqlite3"
        self.log = sends.SendLog(path)
        self._eligible: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    @classmethod
    def validate(
        cls, options: ThermostatTargetOptions, target: TargetSettings
    ) -> list[tuple[str, str]]:
        """The survey id is Thermostat's number; mapped fields need names on both sides."""
        problems = []
        if not options.survey.strip().isdigit():
            problems.append(("survey", "must be the survey's id in Thermostat, a number"))
        if not options.url.startswith(("https://", "http://")):
            problems.append(("url", "must start with https://"))
        for helpspot, thermostat in options.fields.items():
            if not helpspot.strip() or not thermostat.strip() or thermostat == "email":
                problems.append(
                    (f"fields.{helpspot}", "must map a request field to a custom field name")
                )
        return problems

    # -- capabilities ---------------------------------------------------------------------

    def deliver(self, webhook: Webhook) -> None:
        """Survey the webhook's request; an outcome that is no error is recorded, not retried."""
        try:
            outcome = self._survey(webhook.payload, self._deadline())
        except PlanLimitReached as exc:
            log.error("target %r: %s", self.target.name, exc)
            raise DeliveryFailed(str(exc), status=402, final=True) from None
        except RateLimited as exc:
            raise DeliveryFailed(str(exc), status=429, retry_after=exc.wait) from None
        except Refused as exc:
            final = exc.status in FINAL_STATUSES
            raise DeliveryFailed(
                str(exc), status=exc.status, answer=exc.answer, final=final
            ) from None
        if not outcome.sent:
            log.info(
                "target %r: request %s: %s",
                self.target.name,
                outcome.send.request_id or "?",
                outcome.send.outcome,
            )

    def push(self, request: PushRequest) -> str:
        """Survey the pushed request at once; its entry in the send log is the id.

        A person who may not be surveyed now still gets an id: its details say
        why nothing was sent (HelpSpot keeps the id, and staff may push again).
        A request without an address is refused: there is nobody to survey.
        """
        outcome = self._survey(request.data, self._deadline())
        if outcome.send.outcome == sends.SKIPPED:
            raise BackendError(outcome.send.outcome + _detail(outcome.send.detail))
        return outcome.send.push_id

    def details(self, push_id: str) -> PushDetails:
        """What was sent, and whether the person has answered, with score and feedback."""
        entry = self.log.get(push_id)
        if entry is None:
            raise NotFound(f"no survey {push_id} was sent from here")
        rows: list[tuple[str, str]] = [
            ("Sent to", entry.email),
            ("Sent", _when(entry.at)),
            ("Outcome", entry.outcome),
        ]
        deadline = self._deadline()
        answer = self._answer(entry, deadline) if entry.outcome in (sends.SENT,) else None
        if entry.outcome not in (sends.SENT, sends.CAMPAIGN):
            title = "No survey sent"
        elif answer is None:
            title = "Survey sent, not answered yet"
        else:
            survey = self.api.survey(entry.survey, deadline)
            title = f"Survey answered: {answer.score} ({score_class(answer.score, survey)})"
            rows += [("Answered", answer.created_at), ("Feedback", answer.feedback)]
        return PushDetails(title=title, rows=tuple(rows))

    def check(self) -> list[str]:
        """Read the plan's use and the survey (no survey is sent)."""
        deadline = self._deadline()
        account = self.api.account(deadline)
        if account.get("limit_reached"):
            raise BackendError(
                "Thermostat's monthly plan limit is reached "
                f"({account.get('monthly_plan_use')} of {account.get('monthly_plan_limit')}): "
                "no survey is sent until the plan is raised or the month ends"
            )
        survey = self.api.survey(self.options.survey.strip(), deadline)
        if self.options.mode == "campaign" and not survey.campaign_enabled:
            return [
                f"survey {survey.id} has no campaign enabled in Thermostat: addresses added "
                'to its list are never surveyed (enable it, or use mode = "send")'
            ]
        return []

    def close(self) -> None:
        """Close the connection pool."""
        self.api.close()

    # -- the work ---------------------------------------------------------------------------

    def _deadline(self) -> Deadline:
        return Deadline(self.target.timeout)

    def _survey(self, data: Mapping[str, Any], deadline: Deadline) -> _Outcome:
        request_id = _text(data, "xRequest")
        survey = self.options.survey.strip()
        email = _text(data, self.options.email_field)
        if not _EMAIL.fullmatch(email):
            return _Outcome(self.log.record(request_id, email[:200], survey, sends.SKIPPED))
        if not self._may_survey(survey, email, deadline):
            return _Outcome(self.log.record(request_id, email, survey, sends.NOT_ELIGIBLE))
        form = {"email": email, "xrequest": request_id}
        for helpspot, thermostat in self.options.fields.items():
            if helpspot != "xRequest" and _text(data, helpspot):
                form[thermostat] = _text(data, helpspot)
        try:
            answer = self.api.send(survey, self.options.mode, form, deadline)
        except PlanLimitReached as exc:
            self.log.record(request_id, email, survey, sends.LIMIT, str(exc))
            raise
        with self._lock:
            self._eligible.pop((survey, email.casefold()), None)
        if answer.status_code == 422:
            return _Outcome(self.log.record(request_id, email, survey, sends.TOO_RECENT))
        done = sends.SENT if self.options.mode == "send" else sends.CAMPAIGN
        return _Outcome(self.log.record(request_id, email, survey, done))

    def _may_survey(self, survey: str, email: str, deadline: Deadline) -> bool:
        key, now = (survey, email.casefold()), time.monotonic()
        with self._lock:
            cached = self._eligible.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        eligible, max_age = self.api.ping(survey, email, deadline)
        if max_age > 0:
            with self._lock:
                self._eligible[key] = (now + max_age, eligible)
        return eligible

    def _answer(self, entry: sends.Send, deadline: Deadline) -> SurveyResponse | None:
        """The response to this send: the newest with its request, answered after it."""
        for page in range(1, DETAILS_PAGES + 1):
            found = self.api.responses(entry.survey, page, deadline)
            for response in found.responses:
                if _epoch(response.created_at) < entry.at - 60:
                    return None  # newest first: older than the send, so no answer yet
                if response.xrequest == entry.request_id and response.email.casefold() == (
                    entry.email.casefold()
                ):
                    return response
            if found.last:
                break
        return None


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None or isinstance(value, dict | list):
        return ""
    text = str(value).strip()
    return "" if text == "null" else text


def _detail(detail: str) -> str:
    return f" ({detail})" if detail else ""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _epoch(created_at: str) -> float:
    """Thermostat's ``2018-04-28 14:03:26`` (UTC) as epoch seconds; 0 when unreadable."""
    try:
        when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
