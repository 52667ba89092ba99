"""A push and webhook target that forwards to any HTTP endpoint as JSON (``backend = "http"``).

``push`` POSTs the pushed request as JSON to ``url``; the id is the
``id_field`` of the JSON answer. ``deliver`` POSTs a webhook's payload the same
way with an ``Idempotency-Key`` header, so the receiver can drop the duplicates
an at-least-once outbox may produce; with ``signing_secret`` it is signed as the
Standard Webhooks specification says (:mod:`.webhook_signature`). A refusal
raises ``DeliveryFailed`` with the status and the start of the answer, where
the secrets, the header values and the URL past its host are blanked out (an
error page may echo them).

``details`` must show "the stored push and the answer", and the other system
offers no standard way to read a push back. So every push is recorded
(``store``: a small SQLite file, by default in the user's state folder, shared
by the server processes of one host; or a PostgreSQL database shared by every
server): details work for any push recorded there, even after a restart,
without asking the other system anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import requests

from lookup_server.plugin import (
    BackendError,
    NotFound,
    PushDetails,
    PushRequest,
    Secret,
    StoreLocation,
    TargetBackend,
    TargetSettings,
    Webhook,
)

from .http_client import (
    AbortableSession,
    Deadline,
    blank_out,
    dig,
    refused_delivery,
    request_once,
    unencrypted_host,
)
from .state_store import Table, open_records, store_path
from .webhook_signature import BadSigningSecret, signature_headers, signing_key

log = logging.getLogger(__name__)

#: HelpSpot keeps at most 255 characters of a push id (HELPSPOT.md §5).
MAX_ID_CHARS = 255
#: Enough of the answer to see what the other system said, without storing a novel.
MAX_ANSWER_CHARS = 4000
#: Enough of an error message from the other system for staff to act on.
MAX_REMOTE_MESSAGE = 200
#: One record per push: what HelpSpot sent and what the other system answered.
PUSHES = Table(
    name="pushes",
    shared_name="target_pushes",
    key="push_id",
    columns=(
        ("request_id", "text"),
        ("title", "text"),
        ("customer", "text"),
        ("pushed_at", "real"),
        ("status", "integer"),
        ("answer", "text"),
    ),
)


@dataclass(frozen=True)
class HttpTargetOptions:
    """The ``[targets.NAME]`` keys of an http target."""

    url: str
    #: The answer's field holding the id; dots go deeper (``data.id``).
    id_field: str = "id"
    #: Extra request headers (not secret: they appear in the config as they are).
    headers: dict[str, str] = field(default_factory=dict)
    #: Sent as ``Authorization: Bearer SECRET``.
    secret: Secret | None = None
    #: Signs webhooks (Standard Webhooks): ``whsec_`` and a base64 key of 24 to 64 bytes.
    signing_secret: Secret | None = None
    #: While rotating: the secret being replaced, whose signature is sent too.
    signing_secret_previous: Secret | None = None
    #: Where pushes are recorded for ``details``: a file (default: in the user's state
    #: folder) or a postgresql:// URL, shared by every server.
    store: StoreLocation | None = None
    #: The pushed item's address in the other system, ``{id}`` replaced by its id.
    link: str = ""


class HttpTarget(TargetBackend[HttpTargetOptions]):
    """Forwards pushes and webhooks to an HTTP endpoint as JSON."""

    Options = HttpTargetOptions

    def __init__(self, options: HttpTargetOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.host = urlsplit(options.url).hostname or "the target"
        location = options.store or StoreLocation(path=default_store(target.name))
        self.log = PushLog(location, target.name)
        self._session = AbortableSession()
        self._hidden = hidden_texts(options)
        self._signing_keys = [signing_key(s.reveal()) for s in signing_secrets(options)]
        #: The wall clock a signature's timestamp is read from.
        self.clock: Callable[[], float] = time.time

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The url must be an absolute http(s) address; a link must hold ``{id}``."""
        problems = []
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(("url", "must be an address starting with https:// (or http://)"))
        if options.link and "{id}" not in options.link:
            problems.append(("link", "must contain {id}, where the pushed item's id goes"))
        for name in ("signing_secret", "signing_secret_previous"):
            secret = getattr(options, name)
            try:
                if secret is not None:
                    signing_key(secret.reveal())
            except BadSigningSecret as exc:
                problems.append((name, str(exc)))
        if options.signing_secret_previous is not None and options.signing_secret is None:
            problems.append(
                ("signing_secret_previous", "is only used with signing_secret, the new one")
            )
        return problems

    def check(self) -> list[str]:
        """Warn about an unencrypted address; fail when the push record cannot be opened."""
        self.log.count()
        if unencrypted_host(self.options.url):
            return [f"url: pushes and webhooks go to {self.host} unencrypted (http://)"]
        return []

    def close(self) -> None:
        """Close the HTTP session and the push record's connections."""
        self._session.close()
        self.log.close()

    # -- capabilities --------------------------------------------------------------

    def push(self, request: PushRequest) -> str:
        """POST the request as JSON; the id is ``id_field`` of the JSON answer."""
        response = self._post(_json_bytes(request.data), {})
        if not 200 <= response.status_code < 300:
            raise BackendError(self._refusal("push", response))
        answer = _json_or_none(response)
        value = dig(answer, *self.options.id_field.split("."))
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise BackendError(
                f"{self.host} accepted the push (HTTP {response.status_code}) but its answer "
                f"has no {self.options.id_field!r} field; check id_field"
            )
        push_id = str(value)[:MAX_ID_CHARS]
        try:
            self.log.record(push_id, request, response.status_code, response.text)
        except BackendError as exc:
            # The item exists over there now: failing would make staff push it twice.
            log.error(
                "target %r: push %r went through but was not recorded: %s",
                self.target.name,
                push_id,
                exc,
            )
        return push_id

    def details(self, push_id: str) -> PushDetails:
        """What was pushed and what the other system answered, from the push record."""
        recorded = self.log.find(push_id)
        if recorded is None:
            raise NotFound(f"no push with id {push_id!r} was recorded by this server")
        link = (
            self.options.link.replace("{id}", quote(push_id, safe="")) if self.options.link else ""
        )
        return PushDetails(title=f"Pushed to {self.host}", rows=recorded.rows(), link=link)

    def deliver(self, webhook: Webhook) -> None:
        """POST the webhook's payload as JSON with its Idempotency-Key, signed; raise unless 2xx.

        The signature's webhook-id is the idempotency key (the same on every try),
        its timestamp this attempt's.
        """
        body = _json_bytes(webhook.payload)
        extra = {"Idempotency-Key": webhook.idempotency_key}
        if self._signing_keys:
            extra |= signature_headers(
                self._signing_keys, webhook.idempotency_key, int(self.clock()), body
            )
        response = self._post(body, extra)
        if not 200 <= response.status_code < 300:
            # final for a 4xx that no retry can change; a Retry-After is honoured
            raise refused_delivery(
                self._refusal("webhook", response),
                response,
                self._hidden,
                datetime.fromtimestamp(self.clock(), timezone.utc),
            )

    # -- HTTP ------------------------------------------------------------------------

    def _post(self, data: bytes, extra: Mapping[str, str]) -> requests.Response:
        headers = {"Accept": "application/json", **self.options.headers, **extra}
        if self.options.secret is not None:
            headers["Authorization"] = f"Bearer {self.options.secret.reveal()}"
        headers["Content-Type"] = "application/json; charset=utf-8"
        return request_once(
            self._session,
            "POST",
            self.options.url,
            Deadline(self.target.timeout),
            vendor=self.host,
            data=data,
            headers=headers,
        )

    def _refusal(self, what: str, response: requests.Response) -> str:
        message = _remote_message(_json_or_none(response), self._hidden)
        said = f": {message}" if message else ""
        return f"{self.host} refused the {what} (HTTP {response.status_code}){said}"


def _json_bytes(body: Mapping[str, object]) -> bytes:
    """The body as sent, and as signed: the same bytes."""
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        raise BackendError("the data cannot be sent as JSON") from None


def signing_secrets(options: HttpTargetOptions) -> list[Secret]:
    """The secrets webhooks are signed with, the current one first."""
    return [s for s in (options.signing_secret, options.signing_secret_previous) if s is not None]


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _remote_message(answer: Any, hidden: Iterable[str]) -> str:
    """A short ``error`` or ``message`` text from a JSON answer ("" when none).

    It may quote the request: ``hidden`` is blanked out of it.
    """
    for key in ("error", "message", "detail"):
        value = answer.get(key) if isinstance(answer, dict) else None
        if isinstance(value, str) and value.strip():
            return blank_out(" ".join(value.split()), hidden)[:MAX_REMOTE_MESSAGE]
    return ""


def hidden_texts(options: HttpTargetOptions) -> list[str]:
    """What no answer excerpt may show: the secret, header values, the URL past its host.

    The URL's path is there too: webhook services often put their token in it.
    Each as written and percent-encoded or decoded, as an error page may echo it.
    """
    parts = urlsplit(options.url)
    texts = [options.url, f"{parts.path}?{parts.query}", parts.path, parts.query]
    texts += [parts.password or "", *options.headers.values()]
    texts += [value for _, value in parse_qsl(parts.query)]
    for secret in (options.secret, *signing_secrets(options)):
        if secret is not None:
            texts.append(secret.reveal())
    return [*texts, *(unquote(t) for t in texts), *(quote(t, safe="") for t in texts)]


def customer_of(request: PushRequest) -> str:
    """``Full Name <email>`` of the request's customer, from what is there."""
    name = request.text("fullname") or " ".join(
        part for part in (request.text("sFirstName"), request.text("sLastName")) if part
    )
    email = request.text("sEmail")
    return " ".join(part for part in (name, f"<{email}>" if email else "") if part)


def default_store(target: str) -> Path:
    """``push-TARGET.sqlite3`` in the user's state folder (see :func:`store_path`)."""
    return store_path("push", target)


@dataclass(frozen=True)
class RecordedPush:
    """One push as recorded: what HelpSpot sent and what the target answered."""

    push_id: str
    request_id: str
    title: str
    customer: str
    pushed_at: float
    status: int
    answer: str

    def rows(self) -> tuple[tuple[str, str], ...]:
        """Label/value rows for the details view (the core escapes them)."""
        when = datetime.fromtimestamp(self.pushed_at, timezone.utc)
        return (
            ("Id", self.push_id),
            ("HelpSpot request", self.request_id),
            ("Title", self.title),
            ("Customer", self.customer),
            ("Pushed at", when.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("Answer", f"HTTP {self.status}"),
            ("Answer body", self.answer),
        )


class PushLog:
    """Pushes made through one target: in its own file, or in a database every server shares."""

    def __init__(self, location: StoreLocation, target: str) -> None:
        self.records = open_records(location, PUSHES, target=target, what="the push record")

    def record(self, push_id: str, request: PushRequest, status: int, answer: str) -> None:
        """Remember one push (the latest wins when the target reuses an id)."""
        self.records.put(
            push_id,
            {
                "request_id": request.request_id,
                "title": request.text("sTitle"),
                "customer": customer_of(request),
                "pushed_at": time.time(),
                "status": status,
                "answer": answer[:MAX_ANSWER_CHARS],
            },
        )

    def find(self, push_id: str) -> RecordedPush | None:
        """The recorded push with this id, or None."""
        found = self.records.get(push_id)
        return None if found is None else RecordedPush(push_id=push_id, **found)

    def count(self) -> int:
        """How many pushes are recorded (opens the store: a check that it works)."""
        return self.records.count()

    def close(self) -> None:
        """Let go of the store's connections."""
        self.records.close()
