"""Pushes and webhooks as messages in a Slack channel (``backend = "slack"``).

The modern successor of HelpSpot's Campfire sample: each push or webhook
becomes a message posted to a Slack incoming webhook. Slack answers only
``ok``, so a push's id is made up here (``slack-REQUEST-TIMESTAMP``) and there
are no details to show.

The message comes from the ``message`` template (README, "Templates"; its
default is :data:`DEFAULT_MESSAGE`). Slack's markup is ``*bold*``,
``<url|label>``, ``<!channel>`` and ``>`` quotes; every value the template
prints is escaped the way Slack asks (only ``&``, ``<`` and ``>``), its own
text is not. So an admin's template may hold markup, while a title holding
``<!channel>`` or ``<https://evil|click>`` stays plain text.

The link back to the request is ``[server] helpspot_url``'s, or the older
``request_url`` option's when a configuration still has it: a target's own
setting wins over the server-wide one, so adding helpspot_url for another
target never changes the links this one posts (``check`` says so).

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
from urllib.parse import quote, urlsplit

from lookup_server.plugin import (
    DeliveryFailed,
    PushRequest,
    Secret,
    TargetBackend,
    TargetSettings,
    TextTemplate,
    Webhook,
)

from .chat_message import message_problems, missing_link_warnings, render_message
from .http_client import AbortableSession, Deadline, request_once

VENDOR = "Slack"
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
#: The message as it was before it became a template: the request as a link, its
#: title and customer; for a push who pushed it and the comment, quoted; for a
#: webhook (which carries sStatus, a push does not) its status, who acted, and the
#: newest note, quoted. Comments and notes are cut at 500 characters.
DEFAULT_MESSAGE = """\
*HelpSpot request {% if request_url %}<{{ request_url }}|#{{ request_id }}>\
{% else %}#{{ request_id or "?" }}{% endif %} \
{% if sStatus %}changed{% else %}was pushed{% endif %}*
{% if sTitle %}Title: {{ sTitle }}
{% endif %}{% if customer %}Customer: {{ customer }}\
{% if sEmail and sEmail != customer %} &lt;{{ sEmail }}&gt;{% endif %}
{% endif %}{% if staff %}Pushed by: {{ staff }}
{% endif %}{% if sStatus %}Status: {{ sStatus }}{% if sCategory %}, {{ sCategory }}{% endif %}
{% endif %}{% if acting_person %}By: {{ acting_person }}
{% endif %}{% for line in (staff_comment | truncate(500)).splitlines() %}>{{ line }}
{% endfor %}{% if note_content %}{{ (note_type or "note") | capitalize }}:
{% for line in (last_note | truncate(500)).splitlines() %}>{{ line }}
{% endfor %}{% endif %}"""


@dataclass(frozen=True)
class SlackTargetOptions:
    """The ``[targets.NAME]`` keys of a slack target."""

    #: The incoming webhook's address (https://hooks.slack.com/services/...): a secret.
    webhook_url: Secret
    #: Older: a request's address in HelpSpot, ``{request}`` replaced by its number.
    #: When set, it wins over ``[server] helpspot_url``, which is the way now.
    request_url: str = ""
    #: The message, a template whose printed values are escaped for Slack.
    message: str = DEFAULT_MESSAGE


def slack_escape(text: str) -> str:
    """``text`` with Slack's three control characters escaped (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackTarget(TargetBackend[SlackTargetOptions]):
    """Posts pushes and webhooks to a Slack incoming webhook."""

    Options = SlackTargetOptions

    def __init__(self, options: SlackTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self._session = AbortableSession()
        self._message = TextTemplate(options.message, escape=slack_escape)

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """An http(s) webhook_url, ``{request}`` in request_url, a message that compiles."""
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
        return problems + message_problems(options.message)

    def check(self) -> list[str]:
        """Warn about links: none where the message wants one, or request_url overriding."""
        warnings = missing_link_warnings(
            self._message, bool(self.options.request_url or self.target.helpspot_url)
        )
        if self.options.request_url and self.target.helpspot_url:
            warnings.append(
                "request_url: the links posted use this older option, not [server] "
                "helpspot_url; remove request_url to use helpspot_url"
            )
        return warnings

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def push(self, request: PushRequest) -> str:
        """Post the pushed request as a message; the id is made up (Slack returns none)."""
        self._post(self.message_for(request.data))
        return f"slack-{request.request_id or 'request'}-{int(time.time())}"

    def deliver(self, webhook: Webhook) -> None:
        """Post the webhook as a message."""
        self._post(self.message_for(webhook.payload))

    def message_for(self, data: Mapping[str, object]) -> str:
        """The Slack text for a pushed request or a webhook's payload."""
        return _short(render_message(self._message, data, self.request_url), MAX_MESSAGE_CHARS)

    def request_url(self, request_id: str) -> str:
        """The request's page: the older request_url option when set, else helpspot_url's."""
        if self.options.request_url and request_id:
            return self.options.request_url.replace("{request}", quote(request_id, safe=""))
        return self.target.request_link(request_id)

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
