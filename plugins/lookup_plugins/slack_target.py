"""Pushes and webhooks as messages in a Slack channel (``backend = "slack"``).

The modern successor of HelpSpot's Campfire sample: each push or webhook
becomes a message posted to a Slack incoming webhook. Slack answers only
``ok``, so a push's id is made up here (``slack-REQUEST-TIMESTAMP``) and there
are no details to show.

Text from HelpSpot is escaped the way Slack asks (only ``&``, ``<`` and ``>``):
a title holding ``<!channel>`` or ``<https://evil|click>`` stays plain text.
The webhook URL is the secret: no error message ever contains it. A refusal
raises ``DeliveryFailed`` with Slack's status and, as its answer, Slack's error
code: any other answer comes from some other server and is never kept.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lookup_server.plugin import (
    DeliveryFailed,
    PushRequest,
    Secret,
    TargetBackend,
    TargetSettings,
    Webhook,
)

from .http_client import AbortableSession, Deadline, request_once

VENDOR = "Slack"
#: Longer texts are cut: a request's note can be a whole e-mail.
MAX_FIELD_CHARS = 500
#: Slack truncates messages past 40,000 characters; stay far below.
MAX_MESSAGE_CHARS = 3000
#: Slack's documented error answers for incoming webhooks, and what to do.
SLACK_ERRORS = {
    "invalid_payload": "Slack could not read the message",
    "no_text": "Slack got a message without text",
    "no_service": "the Slack webhook_url is disabled, revoked or wrong",
    "no_team": "the Slack workspace of webhook_url no longer exists",
    "team_disabled": "the Slack workspace of webhook_url is disabled",
    "channel_not_found": "the channel of the Slack webhook no longer exists",
    "channel_is_archived": "the channel of the Slack webhook is archived",
    "action_prohibited": "a Slack admin has restricted posting to that channel",
    "posting_to_general_channel_denied": "only Slack admins may post to that channel",
    "invalid_token": "the Slack webhook_url is no longer valid",
}
#: What Slack's error answers look like. Anything else comes from some other server
#: (a proxy, a load balancer), whose error page may echo the request line: the
#: webhook URL, the secret. It is never quoted.
SLACK_CODE = re.compile(r"[a-z][a-z0-9_]{0,59}")


@dataclass(frozen=True)
class SlackTargetOptions:
    """The ``[targets.NAME]`` keys of a slack target."""

    #: The incoming webhook's address (https://hooks.slack.com/services/...): a secret.
    webhook_url: Secret
    #: A request's address in HelpSpot, ``{request}`` replaced by its number.
    request_url: str = ""


def slack_escape(text: str) -> str:
    """``text`` with Slack's three control characters escaped (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str, label: str) -> str:
    """A Slack link ``<url|label>``; both parts escaped so neither can end it early."""
    return f"<{slack_escape(url).replace('|', '%7C')}|{slack_escape(label)}>"


def _short(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    return "" if value is None or isinstance(value, dict | list) else str(value)


class SlackTarget(TargetBackend[SlackTargetOptions]):
    """Posts pushes and webhooks to a Slack incoming webhook."""

    Options = SlackTargetOptions

    def __init__(self, options: SlackTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self._session = AbortableSession()

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The webhook URL must be an absolute http(s) address; request_url needs ``{request}``."""
        problems = []
        parts = urlsplit(options.webhook_url.reveal())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                (
                    "webhook_url",
                    "must be the incoming webhook's address, https://hooks.slack.com/services/...",
                )
            )
        if options.request_url and "{request}" not in options.request_url:
            problems.append(
                ("request_url", "must contain {request}, where the request number goes")
            )
        return problems

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def push(self, request: PushRequest) -> str:
        """Post the pushed request as a message; the id is made up (Slack returns none)."""
        self._post(self.push_message(request.data))
        return f"slack-{request.request_id or 'request'}-{int(time.time())}"

    def deliver(self, webhook: Webhook) -> None:
        """Post a summary of the webhook as a message."""
        self._post(self.webhook_message(webhook.payload))

    # -- messages --------------------------------------------------------------------

    def push_message(self, data: Mapping[str, object]) -> str:
        """The Slack text announcing a pushed request."""
        lines = [f"*HelpSpot request {self._request_ref(data)} was pushed*"]
        lines += self._request_lines(data)
        staff = " ".join(
            p for p in (_text(data, "acting_person_fname"), _text(data, "acting_person_lname")) if p
        )
        if staff:
            lines.append(f"Pushed by: {slack_escape(_short(staff))}")
        comment = _text(data, "staff_comment").strip()
        if comment:
            lines += [f">{slack_escape(line)}" for line in _short(comment).splitlines()]
        return _short("\n".join(lines), MAX_MESSAGE_CHARS)

    def webhook_message(self, payload: Mapping[str, object]) -> str:
        """The Slack text summarising a HelpSpot webhook."""
        lines = [f"*HelpSpot request {self._request_ref(payload)} changed*"]
        lines += self._request_lines(payload)
        state = ", ".join(p for p in (_text(payload, "sStatus"), _text(payload, "sCategory")) if p)
        if state:
            lines.append(f"Status: {slack_escape(_short(state))}")
        by = _text(payload, "acting_person")
        if by:
            lines.append(f"By: {slack_escape(_short(by))}")
        note = _text(payload, "note_content").strip()
        if note:
            kind = _text(payload, "note_type") or "note"
            lines.append(f"{slack_escape(_short(kind, 40)).capitalize()}:")
            lines += [f">{slack_escape(line)}" for line in _short(note).splitlines()]
        return _short("\n".join(lines), MAX_MESSAGE_CHARS)

    def _request_ref(self, data: Mapping[str, object]) -> str:
        number = _short(_text(data, "xRequest"), 40) or "?"
        if self.options.request_url and number != "?":
            return slack_link(self.options.request_url.replace("{request}", number), f"#{number}")
        return f"#{slack_escape(number)}"

    def _request_lines(self, data: Mapping[str, object]) -> list[str]:
        lines = []
        title = _text(data, "sTitle")
        if title:
            lines.append(f"Title: {slack_escape(_short(title))}")
        name = _text(data, "fullname") or " ".join(
            p for p in (_text(data, "sFirstName"), _text(data, "sLastName")) if p
        )
        email = _text(data, "sEmail")
        customer = " ".join(p for p in (name, f"<{email}>" if email else "") if p)
        if customer:
            lines.append(f"Customer: {slack_escape(_short(customer))}")
        return lines

    # -- HTTP ------------------------------------------------------------------------

    def _post(self, text: str) -> None:
        body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
        response = request_once(
            self._session,
            "POST",
            self.options.webhook_url.reveal(),
            Deadline(self.target.timeout),
            vendor=VENDOR,
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        if response.status_code == 200:
            return
        text = response.text.strip()
        code = text if SLACK_CODE.fullmatch(text) else ""
        meaning = SLACK_ERRORS.get(code, "")
        if response.status_code == 429:
            meaning = "Slack is rate-limiting this webhook; try again shortly"
        elif response.status_code >= 500 and not meaning:
            meaning = "Slack is having problems; try again later"
        said = code or ("an answer that is not Slack's" if text else "no answer")
        detail = f"{meaning} ({said})" if meaning else said
        raise DeliveryFailed(
            f"Slack refused the message (HTTP {response.status_code}): {detail}",
            status=response.status_code,
            answer=code,
        )
