"""A ONCE Campfire stand-in: its bot API, as Campfire documents and answers it.

Campfire documents the bot API in two places: the bot's page in Campfire
(``app/views/accounts/bots/_bot.html.erb`` in basecamp/once-campfire), which
shows ``curl -d 'Hello!' {base}/rooms/{room}/{bot_key}/messages`` and ``curl -F
"attachment=@/path/to/file" ...`` for each room, and basecamp/campfire-bot-kit's
README ("Posting messages to rooms": the message in the request body, an
attachment as the multipart field ``attachment``, the token in the URL). What it
answers is documented only by its source, basecamp/once-campfire, cited here
shape by shape:

* ``POST``: ``201 Created``, no body, ``Location: {base}/messages/{id}``
  (``Messages::ByBotsController#create``). The raw body is the message, whatever
  its type (``RawRequestBody``); a blank one is ``422``, no body
  (``ensure_body_or_attachment_present``). Attachments are not emulated: the
  target never sends one.
* The bot key is ``ID-TOKEN``, the token 12 letters and digits
  (``User::Bot#bot_key``, ``generate_bot_token``). A key Campfire does not know
  (or a deactivated bot's) is sent to the sign-in page: ``302``, ``Location:
  {base}/session/new`` (``Authentication#request_authentication``; the test
  "create can't be abused to post messages as any user").
* A room the bot is not a member of: ``404``, no body (``set_room``, since
  2026). Before that Campfire answered ``200`` with a page, "This room was
  deleted." (``MessagesController#create``, ``messages/room_not_found``):
  ``legacy=True``.
* A ``POST`` from an address an admin banned: ``429``, no body
  (``BlockBannedRequests``).
* ``GET`` on the same address: the room's newest messages, a JSON list of
  ``{id, created_at, body: {plain_text, html}, creator, room: {id}, url}``
  (``ByBotsController#index``, ``messages/_message.json.jbuilder``, 2026). A
  legacy Campfire has no such route: ``404`` with Rails' page (``public/404.html``).
* What a room shows of a body (:class:`PostedMessage`): rich text, HTML
  (``has_rich_text :body``), whose tags are kept when
  ``ContentFilters::SanitizeTags`` allows them; a mention is an
  ``<action-text-attachment>`` of a user (``Message::Mentionee``), and a body
  that is exactly ``/play NAME`` plays a sound (``Message#sound``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import Flask, Response, jsonify, request
from lxml import html as lxml_html

from tests.plugins.emulators import Scripted

#: Tags a Campfire room renders (ContentFilters::SanitizeTags::ALLOWED_TAGS).
RENDERED_TAGS = frozenset(
    (
        *("a", "abbr", "acronym", "address", "b", "big", "blockquote", "br", "cite", "code"),
        *("dd", "del", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr"),
        *("i", "ins", "kbd", "li", "ol", "p", "pre", "samp", "small", "span", "strong", "sub"),
        *("sup", "time", "tt", "ul", "var", "action-text-attachment", "figure", "figcaption"),
    )
)
#: Message#sound's pattern, over the body as plain text.
SOUND = re.compile(r"\A/play (?P<name>\w+)\Z")
#: Messages a GET answers with (Message::PAGE_SIZE).
PAGE_SIZE = 40
ROOM_DELETED_PAGE = (
    '<turbo-frame id="composer-frame"><span class="composer__input">'
    "<span>This room was deleted.</span></span></turbo-frame>"
)
RAILS_404_PAGE = "<!DOCTYPE html><html><body><h1>The page you were looking for doesn't exist.</h1>"


@dataclass
class PostedMessage:
    """One message a bot posted, and what the room makes of its body."""

    id: int
    room: int
    bot: str
    body: str
    content_type: str
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    )

    def _tree(self) -> lxml_html.HtmlElement:
        return lxml_html.fragment_fromstring(self.body or " ", create_parent="div")

    @property
    def tags(self) -> list[str]:
        """The elements of the body that the room renders, in order."""
        return [
            str(e.tag) for e in self._tree().iter() if isinstance(e.tag, str) and e.tag != "div"
        ]

    @property
    def plain_text(self) -> str:
        """The body as text, each ``<br>`` a line break (ActionText's to_plain_text)."""
        tree = self._tree()
        for br in tree.iter("br"):
            br.tail = "\n" + (br.tail or "")
        return str(tree.text_content())

    @property
    def sound(self) -> str | None:
        """The sound the room plays for it, if any."""
        found = SOUND.match(self.plain_text)
        return found.group("name") if found else None

    def as_json(self, base: str) -> dict[str, object]:
        """As the bot API's GET lists it."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "body": {"plain_text": self.plain_text, "html": self.body},
            "creator": {"id": int(self.bot.split("-")[0]), "name": "HelpSpot", "role": "bot"},
            "room": {"id": self.room},
            "url": f"{base}/rooms/{self.room}/messages/{self.id}",
        }


@dataclass
class CampfireEmulator:
    """One Campfire: its bots (key -> the rooms each is a member of) and what they posted."""

    bots: dict[str, set[int]]
    legacy: bool = False
    banned: bool = False
    next_id: int = 100
    messages: list[PostedMessage] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    #: (method, path) of every request
    seen: list[tuple[str, str]] = field(default_factory=list)

    def fail_next(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        """Answer the next request with this instead."""
        self.script.append(Scripted(status, body, headers or {}))

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("campfire-emulator")
        app.add_url_rule(
            "/rooms/<int:room>/<bot_key>/messages",
            "bot_messages",
            self._bot_messages,
            methods=["GET", "POST"],
        )
        return app

    def _bot_messages(self, room: int, bot_key: str) -> Response:
        self.seen.append((request.method, request.path))
        body = request.get_data()  # read first, as Rails does
        if self.script:
            canned = self.script.pop(0)
            return Response(canned.body, status=canned.status, headers=canned.headers)
        if request.method == "GET" and self.legacy:
            return Response(RAILS_404_PAGE, status=404, content_type="text/html")
        rooms = self.bots.get(bot_key.strip())
        if rooms is None:
            return Response(status=302, headers={"Location": f"{request.host_url}session/new"})
        if request.method == "GET":
            return self._index(room, rooms)
        if self.banned:
            return Response(status=429)
        if room not in rooms:
            if self.legacy:
                return Response(ROOM_DELETED_PAGE, status=200, content_type="text/html")
            return Response(status=404)
        return self._create(room, bot_key.strip(), body)

    def _index(self, room: int, rooms: set[int]) -> Response:
        if room not in rooms:
            return Response(status=404)
        listed = [m for m in self.messages if m.room == room][-PAGE_SIZE:]
        base = request.host_url.rstrip("/")
        return jsonify([m.as_json(base) for m in listed])

    def _create(self, room: int, bot: str, body: bytes) -> Response:
        text = body.decode("utf-8", errors="replace")
        if not text.strip():
            return Response(status=422)
        self.next_id += 1
        self.messages.append(
            PostedMessage(self.next_id, room, bot, text, request.content_type or "")
        )
        location = f"{request.host_url}messages/{self.next_id}"
        return Response(status=201, headers={"Location": location})
