"""Pushes and webhooks as messages in a room of ONCE Campfire (``backend = "campfire"``).

37signals' self-hosted Campfire lets a *bot* post to the rooms it is a member
of: ``POST {url}/rooms/{room}/{bot_key}/messages`` with the message as the
request body (the bot's page in Campfire shows it as ``curl -d 'Hello!' ...``).
The bot key, ``ID-TOKEN``, is in the URL's path: it is the secret, and no
error message or log line here ever contains it. Campfire answers ``201
Created`` with the new message's address in ``Location``
(``/messages/ID``): that id is the push's id.

The body is sent as ``text/plain``: Campfire reads the raw body whatever its
type, while with curl's form type Rails would also parse the message as a
form. Campfire stores the body as rich text, HTML: it renders ``<b>``,
``<a href>``, ``<br>`` and mentions (``<action-text-attachment>``), makes
bare addresses links, and plays a sound for a message that is exactly
``/play NAME``. So every value the ``message`` template prints is escaped as
HTML (:func:`campfire_escape`) and the template's own text is not: an admin
may write ``<strong>``, HelpSpot's text stays text. Line breaks become
``<br>``, since Campfire shows a body's own line breaks as spaces.

``check`` proves the key and the room without posting: it reads the room's
messages as the bot (``GET`` on the same address, Campfire's bot API since
2026). An older Campfire has no such read, and then only the address can be
checked; ``check`` says so.

A redelivered webhook posts its message again: Campfire's bot API takes no
idempotency key.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    PushRequest,
    Secret,
    TargetBackend,
    TargetSettings,
    TextTemplate,
    Webhook,
)

from .chat_message import message_problems, missing_link_warnings, render_message
from .http_client import (
    AbortableSession,
    Deadline,
    json_body,
    request_once,
    unencrypted_host,
)

VENDOR = "Campfire"
#: A room is no place for a whole e-mail thread; past this the message is cut.
MAX_MESSAGE_CHARS = 10_000
#: ``ID-TOKEN`` as Campfire makes it (the bot's user id, a dash, its token).
BOT_KEY = re.compile(r"\d+-[^\s/?#%]+")
#: Where Campfire sends a caller whose bot key it does not know.
SIGN_IN_PATH = "/session/new"
#: The new message's address in a 201's Location.
MESSAGE_PATH = re.compile(r"/messages/(\d+)/?\Z")
#: Campfire plays a sound for a message that is exactly ``/play NAME`` (Message#sound).
SOUND_COMMAND = "/play"
#: Put before a value that would read as that command: invisible, and it breaks the match.
ZERO_WIDTH_SPACE = "\u200b"
#: C0 and C1 controls but tab and line feed: no text in a chat room needs them.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: The staff comment, the request with its title and customer, and the link back.
DEFAULT_MESSAGE = """\
{% if staff_comment %}{{ staff_comment | truncate(1000) }}
{% endif %}HelpSpot request #{{ request_id or "?" }}{% if sTitle %}: {{ sTitle }}{% endif %}\
{% if customer %} ({{ customer }}){% endif %}
{{ request_url }}"""


@dataclass(frozen=True)
class CampfireTargetOptions:
    """The ``[targets.NAME]`` keys of a campfire target."""

    #: Campfire's address, as people open it (https://chat.example.com).
    url: str
    #: The room's number: ``N`` of its address ``/rooms/N``.
    room: int
    #: The bot's key, ``ID-TOKEN``, from the bot's page in Campfire: a secret.
    bot_key: Secret
    #: The message, a template whose printed values are escaped as HTML.
    message: str = DEFAULT_MESSAGE


def campfire_escape(text: str) -> str:
    """``text`` as text of a Campfire message: no tag, entity, mention or sound of its own."""
    text = CONTROL_CHARACTERS.sub("", _line_feeds(text))
    escaped = html.escape(text, quote=True)
    if escaped.lstrip().startswith(SOUND_COMMAND):
        return ZERO_WIDTH_SPACE + escaped
    return escaped


def message_html(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The rendered message as Campfire's body: line breaks as ``<br>``, cut at ``limit``."""
    text = _line_feeds(text)
    if len(text) > limit:
        # a tag or an entity cut in two would show as text, or eat what follows
        text = re.sub(r"<[^>]*\Z|&[^;\s]*\Z", "", text[: limit - 1]) + "…"
    return text.replace("\n", "<br>")


def _line_feeds(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


class CampfireTarget(TargetBackend[CampfireTargetOptions]):
    """Posts pushes and webhooks as a bot's messages in a Campfire room."""

    Options = CampfireTargetOptions

    def __init__(self, options: CampfireTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self._session = AbortableSession()
        self._message = TextTemplate(options.message, escape=campfire_escape)
        base = options.url.rstrip("/")
        key = quote(options.bot_key.reveal().strip(), safe="")
        self._messages_url = f"{base}/rooms/{options.room}/{key}/messages"

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """Campfire's address alone, a room number, a key shaped ``ID-TOKEN``, a message."""
        problems = []
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(("url", "must be Campfire's address, e.g. https://chat.example.com"))
        elif parts.query or parts.fragment or "/rooms/" in f"{parts.path}/":
            problems.append(
                (
                    "url",
                    "must be Campfire's address alone, e.g. https://chat.example.com: "
                    "the room and the bot key have options of their own",
                )
            )
        if options.room < 1:
            problems.append(("room", "must be the room's number, N of its address /rooms/N"))
        if not BOT_KEY.fullmatch(options.bot_key.reveal().strip()):
            problems.append(
                (
                    "bot_key",
                    "must be the bot's key, a number, a dash and letters and digits, as in "
                    "the bot's address on its page in Campfire (not the whole address)",
                )
            )
        return problems + message_problems(options.message)

    def check(self) -> list[str]:
        """Read the room's messages as the bot: proves the key and the room, posts nothing."""
        warnings = self._setup_warnings()
        response = request_once(
            self._session,
            "GET",
            self._messages_url,
            Deadline(self.target.timeout),
            vendor=VENDOR,
            headers={"Accept": "application/json"},
        )
        room = self.options.room
        if response.status_code == 200:
            if not isinstance(json_body(response, VENDOR), list):
                raise BackendError(
                    f"{VENDOR} answered reading room {room} with something that is not its "
                    "list of messages; check url"
                )
            return warnings
        if response.status_code == 404 and response.content.strip():
            # a page, not Campfire's empty 404: no such route, so no read API to ask
            return [
                *warnings,
                f"room: could not check bot_key and room {room} without posting: {VENDOR} "
                "has no bot API to read a room here (older than 2026), or url is not its "
                "address",
            ]
        raise BackendError(
            f"{VENDOR} refused to let the bot read room {room} "
            f"(HTTP {response.status_code}): {self._meaning(response)}"
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def push(self, request: PushRequest) -> str:
        """Post the pushed request as a message; the id is the message's in Campfire."""
        response = self._post(self.message_for(request.data))
        location = urlsplit(response.headers.get("Location", "")).path
        found = MESSAGE_PATH.search(location)
        if found:
            return found.group(1)
        # a 201 without the message's address (a proxy that drops it): made up, as
        # HelpSpot needs an id; unique enough, with the room, request and second
        return f"campfire-{self.options.room}-{request.request_id or 'request'}-{int(time.time())}"

    def deliver(self, webhook: Webhook) -> None:
        """Post the webhook as a message."""
        self._post(self.message_for(webhook.payload))

    def message_for(self, data: Mapping[str, object]) -> str:
        """The body posted for a pushed request or a webhook's payload (HTML)."""
        return message_html(render_message(self._message, data, self.target.request_link))

    # -- HTTP ------------------------------------------------------------------------

    def _post(self, body: str) -> requests.Response:
        response = request_once(
            self._session,
            "POST",
            self._messages_url,
            Deadline(self.target.timeout),
            vendor=VENDOR,
            data=body.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response.status_code == 201:
            return response
        # Campfire's refusals have no body; any other answer is some proxy's page,
        # which may echo the request line, the bot key in it: none is ever kept
        raise DeliveryFailed(
            f"{VENDOR} did not post the message (HTTP {response.status_code}): "
            f"{self._meaning(response)}",
            status=response.status_code,
            answer="",
        )

    def _meaning(self, response: requests.Response) -> str:
        status, room = response.status_code, self.options.room
        if 300 <= status < 400:
            location = urlsplit(response.headers.get("Location", ""))
            if location.path.endswith(SIGN_IN_PATH):
                return (
                    "Campfire does not know the bot key (it answered with its sign-in page); "
                    "copy bot_key again from the bot's page: a new key replaces the old one"
                )
            elsewhere = f"{location.scheme}://{location.hostname}" if location.hostname else ""
            return f"url redirects to {elsewhere or 'another address'}; set url to Campfire's own"
        if status in (401, 403):
            return "Campfire, or a proxy in front of it, refused the bot; check bot_key"
        if status == 404:
            return (
                f"no room {room}, or the bot is not a member of it (add the bot to the room "
                "in Campfire), or url is not Campfire's address"
            )
        if status == 413:
            return "the message is too large for Campfire or its proxy; shorten the template"
        if status == 422:
            return "Campfire found the message empty; check the message template"
        if status == 429:
            return (
                "this server's address may be banned by a Campfire admin (Campfire answers "
                "429 to a banned address), or a proxy is rate-limiting; try again later"
            )
        if status >= 500:
            return "Campfire is having problems; try again later"
        if 200 <= status < 300:
            # before 2026 Campfire answered 200 and a page to a room the bot is not in
            return (
                f"not Campfire's 201 Created: the bot may not be a member of room {room}, "
                "the room may be deleted, or a proxy answered"
            )
        return "an answer Campfire does not give"

    def _setup_warnings(self) -> list[str]:
        warnings = missing_link_warnings(self._message, bool(self.target.helpspot_url))
        host = unencrypted_host(self.options.url)
        if host:
            warnings.append(
                f"url: the bot key travels to {host} unencrypted (http://), "
                "in every message's address"
            )
        return warnings
