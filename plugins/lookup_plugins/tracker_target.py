"""What the FogBugz and ActiveCollab targets share: one item per push or webhook.

Both make an item (a case, a task) in a tracker from a pushed request or an
automation rule's webhook, with a title and a body from the admin's templates
(README, Templates), and show it again when staff open its details. A
subclass says how to create and read the item; this class renders the texts,
creates an item at most once per webhook (:class:`.issue_tracker.CreatedIssues`), waits
out a rate limit when the tracker's ``Retry-After`` fits in the timeout, and
turns every refusal into a ``DeliveryFailed`` whose message names the problem
and whose answer excerpt never holds the token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import requests

from lookup_server.plugin import (
    DeliveryFailed,
    PushRequest,
    Secret,
    StoreLocation,
    TargetBackend,
    TargetSettings,
    TextTemplate,
    Webhook,
    request_context,
    template_problem,
)

from .http_client import (
    RETRY_STATUSES,
    AbortableSession,
    Deadline,
    answer_excerpt,
    blank_out,
    retry_after_seconds,
    unencrypted_host,
)
from .issue_tracker import CreatedIssues, send_waiting
from .state_store import store_path

log = logging.getLogger(__name__)

#: The item's title when the admin's template leaves it empty.
DEFAULT_TITLE = "{{ sTitle }}"
#: Who asked, what staff said, where the request is, and what the customer wrote.
DEFAULT_BODY = (
    "{% if customer %}Customer: {{ customer }}"
    "{% if sEmail and sEmail != customer %} <{{ sEmail }}>{% endif %}\n{% endif %}"
    "{% if staff_comment %}Comment from {{ staff or 'staff' }}: {{ staff_comment }}\n{% endif %}"
    "{% if request_url %}HelpSpot request: {{ request_url }}\n"
    "{% elif request_id %}HelpSpot request #{{ request_id }}\n{% endif %}"
    "{% if first_note %}\n{{ first_note }}{% endif %}"
)
#: Our own bounds (no tracker documents one): a title is a line, a body not a whole thread.
MAX_TITLE_CHARS = 255
MAX_BODY_CHARS = 60_000
#: A tracker's own words quoted in a message for staff: enough to act on.
MAX_QUOTED_CHARS = 200
#: Characters XML 1.0 cannot carry (FogBugz answers in XML), nor a tracker's text field.
_NOT_TEXT = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class TrackerOptions(Protocol):
    """The keys every tracker target has (read-only, as in a frozen dataclass)."""

    @property
    def url(self) -> str:
        """The tracker's address."""

    @property
    def token(self) -> Secret:
        """The API token."""

    @property
    def title(self) -> str:
        """The item's title, a template."""

    @property
    def body(self) -> str:
        """The item's text, a template."""

    @property
    def store(self) -> StoreLocation | None:
        """The record of delivered webhooks (None: the default)."""


OptionsT = TypeVar("OptionsT", bound=TrackerOptions)


def clean_text(text: str, limit: int) -> str:
    """``text`` without what XML cannot carry, cut at ``limit`` characters."""
    text = _NOT_TEXT.sub("", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class TrackerTarget(TargetBackend[OptionsT]):
    """Creates one item per push or webhook in a tracker; subclasses speak its API."""

    #: The tracker's name in messages.
    VENDOR: ClassVar[str] = "the tracker"
    #: What an item is called there ("case", "task").
    ITEM: ClassVar[str] = "item"

    def __init__(self, options: OptionsT, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.host = urlsplit(options.url).hostname or options.url
        self.record = CreatedIssues(
            options.store or StoreLocation(path=store_path("webhooks", target.name)),
            target.name,
            self.VENDOR,
            self.ITEM,
            attempt_seconds=target.timeout,
        )
        self._title = TextTemplate(options.title)
        self._body = TextTemplate(options.body)
        self._session = AbortableSession()
        token = options.token.reveal()
        self._hidden = [token, quote(token, safe="")]

    # -- what a subclass writes ------------------------------------------------------

    def _create(self, title: str, body: str, data: Mapping[str, object]) -> str:
        """Create the item; its id."""
        raise NotImplementedError

    # -- capabilities -------------------------------------------------------------------

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The url must be an http(s) address; the templates must compile."""
        problems = []
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(("url", f"must be the {cls.VENDOR} address, starting with https://"))
        for key in ("title", "body"):
            problem = template_problem(getattr(options, key))
            if problem:
                problems.append((key, problem))
        return problems

    def push(self, request: PushRequest) -> str:
        """Create the item from the pushed request; its id is what HelpSpot keeps."""
        title, body = self.texts(request.data)
        return self._create(title, body, request.data)

    def deliver(self, webhook: Webhook) -> None:
        """Create the item from the webhook, unless an earlier delivery of it did."""
        title, body = self.texts(webhook.payload)
        self.record.create_once(webhook, lambda: self._create(title, body, webhook.payload))

    def close(self) -> None:
        """Close the HTTP session and the webhook record's connections."""
        self._session.close()
        self.record.close()

    def _plain_http_warning(self) -> list[str]:
        if unencrypted_host(self.options.url):
            return [f"url: the token goes to {self.host} unencrypted (http://)"]
        return []

    # -- texts --------------------------------------------------------------------------

    def texts(self, data: Mapping[str, object]) -> tuple[str, str]:
        """The item's title and body for a pushed request or a webhook's payload."""
        context = request_context(data, self.target.helpspot_url)
        title = clean_text(" ".join(self._title.render(context).split()), MAX_TITLE_CHARS)
        if not title:
            number = context["request_id"]
            title = f"HelpSpot request #{number}" if number else "HelpSpot request"
        return title, clean_text(self._body.render(context), MAX_BODY_CHARS)

    # -- HTTP ---------------------------------------------------------------------------

    def _deadline(self) -> Deadline:
        return Deadline(self.target.timeout)

    def _send(self, method: str, url: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        """One request, repeated on a rate limit while ``Retry-After`` fits in the deadline."""
        response = send_waiting(
            self._session, method, url, deadline, vendor=self.VENDOR, wait_of=_wait_of, **kwargs
        )
        if response.status_code not in RETRY_STATUSES:
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if response.status_code == 429 or "Retry-After" in response.headers:
            raise self.refused(
                f"{self.VENDOR} is rate-limiting requests and asks to wait {wait:.0f} s, "
                f"longer than the timeout of {deadline.budget:g} s; try again shortly",
                response,
            )
        raise self.refused(self._outage(response.status_code), response)

    def refused(self, message: str, response: requests.Response) -> DeliveryFailed:
        """The error for an answer that is not what was asked for, with its status and start."""
        return DeliveryFailed(
            blank_out(message, self._hidden),
            status=response.status_code,
            answer=answer_excerpt(response, self._hidden),
        )

    def quoted(self, text: str) -> str:
        """The tracker's own words for a message: one line, short, never the token."""
        return blank_out(" ".join(text.split()), self._hidden)[:MAX_QUOTED_CHARS]

    def http_problem(self, status: int) -> str | None:
        """What an HTTP status that no tracker call expects means, or None for 2xx."""
        if 200 <= status < 300:
            return None
        if status in (301, 302, 303, 307, 308):
            return (
                f"{self.VENDOR} redirected the request (HTTP {status}): set url to the exact "
                f"address (http or https?) instead of {self.options.url}"
            )
        if status == 401:
            return f"{self.VENDOR} rejected the API token (HTTP 401); check token"
        if status == 403:
            return f"{self.VENDOR} refused: the token's user may not do that (HTTP 403)"
        if status >= 500:
            return self._outage(status)
        return f"{self.VENDOR} answered HTTP {status}; check url"

    def _outage(self, status: int) -> str:
        return f"{self.VENDOR} is having problems (HTTP {status}); try again later"


def _wait_of(response: requests.Response) -> float | None:
    """How long a tracker's rate limit or brief outage asks to wait; None for any other answer."""
    if response.status_code not in RETRY_STATUSES:
        return None
    return retry_after_seconds(response.headers.get("Retry-After"))
