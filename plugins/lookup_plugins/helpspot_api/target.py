"""Write a survey's answer back into its HelpSpot request (``backend = "helpspot"``).

(Any other webhook naming a request, ``xRequest``, gets its ``note`` template
written the same way, once.)

A target whose webhooks are write-back jobs (lookup_plugins.thermostat.sync
hands them to the outbox), so they get the outbox's retries, attempts and
visibility like any webhook. ``deliver`` puts the score into a custom field
and a private note with score and feedback into the request, through
``private.request.update``, once:

* It first reads the request (``private.request.get``) and writes nothing when
  a note of its history already carries this response's mark: a job handed
  over twice (a crash between the outbox and the index) or retried after a
  write whose answer was lost writes once.
* HelpSpot reopens a closed request that the API updates (5.0.58,
  ``private_request_update``: ``fOpen`` 0 -> reopened, status active), and
  then applies ``fOpen`` and ``xStatus`` when they are posted. So for a closed
  request the job posts ``fOpen=0`` and the request's own ``xStatus``: it ends
  closed, as it was, with its status (HelpSpot's history still logs the
  reopening and the closing).
* ``fNoteType=0`` is a private note (1 public, 2 external); ``fNoteIsHTML=0``
  keeps the text as written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    Secret,
    TargetBackend,
    TargetSettings,
    TextTemplate,
    Webhook,
    request_context,
    template_problem,
)

from ..http_client import Deadline
from .client import HelpSpotApi, HelpSpotRefused

log = logging.getLogger(__name__)
#: The kind of job this target writes back (lookup_plugins.thermostat.sync.JOB_KIND).
JOB_KIND = "thermostat-response"
#: HelpSpot's error ids (lib/class.api.base.php) after which a retry cannot succeed:
#: no such request, its history is full.
FINAL_ERRORS = frozenset({103, 106})
#: ... and the one that names where a merged request went.
MERGED = 208
DEFAULT_NOTE = (
    '{% if kind == "thermostat-response" %}'
    "Survey answered: {{ score }}{% if score_class %} ({{ score_class }}){% endif %}"
    " in {{ survey_name }}, {{ answered_at }}\n"
    "{% if feedback %}Feedback: {{ feedback }}{% else %}No feedback given.{% endif %}"
    "{% else %}{{ last_note or sTitle }}{% endif %}"
)
#: Control characters but tab and newline: no place in a note.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class HelpSpotTargetOptions:
    """The keys of a ``[targets.NAME]`` table with ``backend = "helpspot"``."""

    #: HelpSpot's address, e.g. https://helpdesk.example.com (its API is /api/index.php).
    url: str
    #: A staff member's API token (HelpSpot: the staff member's profile > API tokens).
    token: Secret
    #: The custom field that takes the score, e.g. "Custom12" ("" : none).
    score_field: str = ""
    #: The private note's text (a template: score, score_class, feedback, survey_name,
    #: answered_at, response_id, email).
    note: str = DEFAULT_NOTE


class HelpSpotTarget(TargetBackend[HelpSpotTargetOptions]):
    """Writes survey results back into HelpSpot requests, once each."""

    Options = HelpSpotTargetOptions

    def __init__(self, options: HelpSpotTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.api = HelpSpotApi(options.url, options.token.reveal())
        self.note = TextTemplate(options.note)

    @classmethod
    def validate(
        cls, options: HelpSpotTargetOptions, target: TargetSettings
    ) -> list[tuple[str, str]]:
        """The score field is a custom field id; the note a template; the url HelpSpot's."""
        problems = []
        field = options.score_field
        if field and not (field.startswith("Custom") and field[6:].isdigit()):
            problems.append(("score_field", 'must be a custom field, like "Custom12"'))
        if not options.url.startswith(("https://", "http://")):
            problems.append(("url", "must be HelpSpot's address, starting with https://"))
        problem = template_problem(options.note)
        if problem:
            problems.append(("note", problem))
        return problems

    def deliver(self, webhook: Webhook) -> None:
        """Write one job (or webhook) back, unless its mark shows it was written already."""
        job = {**webhook.payload, "mark": marker(webhook)}
        request_id = str(job.get("xRequest", "")).strip()
        if not request_id.isdigit():
            log.warning("webhook %s names no request (xRequest): nothing to write", webhook.id)
            return
        deadline = Deadline(self.target.timeout)
        try:
            self._write_back(request_id, job, deadline)
        except HelpSpotRefused as exc:
            merged = exc.has(MERGED)
            if merged is not None and merged.fields.get("xRequest", "").isdigit():
                self._write_back_merged(merged.fields["xRequest"], job, deadline, exc)
                return
            final = any(e.id in FINAL_ERRORS for e in exc.errors)
            raise DeliveryFailed(
                str(exc), status=exc.status, answer=exc.answer, final=final
            ) from None

    def _write_back_merged(
        self, into: str, job: Mapping[str, Any], deadline: Deadline, first: HelpSpotRefused
    ) -> None:
        try:
            self._write_back(into, job, deadline)
        except HelpSpotRefused as exc:
            final = any(e.id in FINAL_ERRORS for e in exc.errors)
            raise DeliveryFailed(
                str(exc), status=exc.status, answer=exc.answer, final=final
            ) from first

    def _write_back(self, request_id: str, job: Mapping[str, Any], deadline: Deadline) -> None:
        mark = str(job["mark"])
        request = self.api.get(
            "private.request.get", {"xRequest": request_id, "fRawValues": "1"}, deadline
        )
        if not isinstance(request, Mapping):
            raise BackendError("HelpSpot sent an unreadable request; try again later")
        if any(mark in note for note in _notes(request)):
            log.info(
                "request %s already holds survey response %s", request_id, job.get("response_id")
            )
            return
        form = {
            "xRequest": request_id,
            "tNote": _CONTROL.sub("", f"{self.note.render(request_context(job))}\n\n{mark}"),
            "fNoteType": "0",
            "fNoteIsHTML": "0",
        }
        if self.options.score_field and job.get("score") is not None:
            form[self.options.score_field] = str(job["score"])
        if str(request.get("fOpen", "1")) == "0":
            # HelpSpot reopens what it updates; this closes it again, status and all
            form["fOpen"] = "0"
            form["xStatus"] = str(request.get("xStatus", ""))
        self.api.post("private.request.update", form, deadline)

    def check(self) -> list[str]:
        """Prove the token and the score field (reads only: private.request.getCustomFields)."""
        found = self.api.get("private.request.getCustomFields", {}, Deadline(self.target.timeout))
        field = self.options.score_field
        fields = found.get("field") if isinstance(found, Mapping) else None
        known = set(fields) if isinstance(fields, Mapping) else set()
        if field and field[6:] not in known:
            raise BackendError(
                f"HelpSpot has no custom field {field[6:]} (score_field = {field!r}); "
                "Admin > Custom Fields shows each field's id"
            )
        return []

    def close(self) -> None:
        """Close the connection pool."""
        self.api.close()


def marker(webhook: Webhook) -> str:
    """The mark a written note carries: found again, it means the job was written.

    A survey's job is marked by its response (two jobs of one response write
    once), any other webhook by its idempotency key.
    """
    job = webhook.payload
    if job.get("kind") == JOB_KIND and str(job.get("response_id", "")).isdigit():
        return f"[thermostat-response-{job['response_id']}]"
    return f"[lookup-server-webhook-{webhook.idempotency_key}]"


def _notes(request: Mapping[str, Any]) -> list[str]:
    """The text of every history entry of a ``private.request.get`` result."""
    history = request.get("request_history")
    items = history.get("item") if isinstance(history, Mapping) else None
    if isinstance(items, Mapping):
        entries: list[Any] = list(items.values())
    elif isinstance(items, list):
        entries = items
    else:
        return []
    return [str(e.get("tNote") or "") for e in entries if isinstance(e, Mapping)]
