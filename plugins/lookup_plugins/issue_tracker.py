"""What the jira and github targets share: texts that fit an issue, and the webhook record.

Both make an issue from a pushed request or a webhook, its title and its text
rendered from templates (README, "Templates"). A title is one line, cut to
what the tracker accepts; control characters go, as no tracker takes them.

The outbox delivers a webhook at least once: after a crash it delivers it
again, perhaps from another server. So :class:`CreatedIssues` remembers, by
the webhook's idempotency key, which issue it created (under the target's
``store``: its own SQLite file, or a PostgreSQL database every server shares,
as the http target keeps its pushes), and a redelivery returns that issue
instead of creating another. The record of an attempt is made before the
issue, by an insert only one of two racing servers can win: the other is told
to try again later. One window remains: the tracker has created the issue
but the server dies, or loses the answer (a timeout, a dropped connection),
before the record holds the issue. The next attempt then creates a second
issue; it logs a warning saying so, because the record shows that an
earlier attempt started and never finished.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    StoreLocation,
    TemplateProblem,
    TextTemplate,
    Webhook,
)

from .http_client import Deadline, request_once
from .state_store import Table, open_records

log = logging.getLogger(__name__)

#: C0 controls but tab and line feed, and DEL: JSON carries them, trackers refuse them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: What a title made of nothing HelpSpot sent says.
UNTITLED = "HelpSpot request"
#: Which webhook created which issue: "" while an attempt to create it runs.
CREATED = Table(
    name="created",
    shared_name="target_webhook_issues",
    key="idempotency_key",
    columns=(
        ("issue", "text"),
        ("request_id", "text"),
        ("started_at", "real"),
        ("created_at", "real"),
    ),
)
#: Seconds added to an attempt's time before its record counts as abandoned: the
#: servers' clocks may differ (NTP keeps them within far less).
CLOCK_MARGIN = 60.0
#: Seconds between two looks at a record another attempt is creating the issue of.
WAIT_STEP = 0.05


def plain(text: str) -> str:
    """``text`` without control characters (tab and line feed stay; CR LF becomes LF)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def one_line(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters (cut with "…")."""
    line = " ".join(plain(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def cut(text: str, limit: int) -> str:
    """``text`` of at most ``limit`` characters, a mark where it was cut."""
    mark = "\n[…]"
    return text if len(text) <= limit else text[: limit - len(mark)].rstrip() + mark


def render(template: TextTemplate, context: dict[str, object], option: str) -> str:
    """The template's text; a BackendError naming the option when it fails."""
    try:
        return plain(template.render(context))
    except TemplateProblem as exc:  # also an admin's {{ 1 / 0 }}
        raise BackendError(f"the {option} template cannot be used: {exc}; fix {option}") from None


def title_of(template: TextTemplate, context: dict[str, object], option: str, limit: int) -> str:
    """The rendered title as one line; "HelpSpot request N" when it renders empty."""
    title = one_line(render(template, context, option), limit)
    request = one_line(str(context.get("request_id", "")), 40)
    return title or f"{UNTITLED} {request}".strip()


def send_waiting(
    session: requests.Session,
    method: str,
    url: str,
    deadline: Deadline,
    *,
    vendor: str,
    wait_of: Callable[[requests.Response], float | None],
    **kwargs: Any,
) -> requests.Response:
    """One request, repeated while the tracker asks to wait and the deadline allows it.

    ``wait_of`` reads a rate limit from an answer: the seconds to wait, or None
    when the answer is final. The last answer is returned, a rate limit that
    outlasts the deadline included, so that its status reaches the outbox.
    """
    while True:
        response = request_once(session, method, url, deadline, vendor=vendor, **kwargs)
        wait = wait_of(response)
        if wait is None or not deadline.allows(wait):
            return response
        log.info("%s asked to wait %.1f s (HTTP %s); retrying", vendor, wait, response.status_code)
        response.close()
        deadline.wait(wait)


@dataclass(frozen=True)
class Created:
    """What the record holds for one webhook: its issue, "" while an attempt runs."""

    issue: str
    started_at: float


class CreatedIssues:
    """Which issue each webhook created, by idempotency key: in a file, or in a shared database.

    ``attempt_seconds`` is how long an attempt to create an issue may run (the
    target's timeout): a record younger than that, and a minute more for the
    servers' clocks, is another attempt still at work, which this one leaves alone.
    """

    def __init__(
        self,
        location: StoreLocation,
        target: str,
        tracker: str,
        item: str = "issue",
        *,
        attempt_seconds: float = 10.0,
    ) -> None:
        self.records = open_records(location, CREATED, target=target, what="the webhook record")
        self.tracker = tracker
        #: What the tracker calls what is made (an issue, a case, a task), for the log.
        self.item = item
        #: How long this attempt waits for another one at work on the same webhook.
        self.attempt_seconds = attempt_seconds
        self.in_flight_seconds = attempt_seconds + CLOCK_MARGIN
        #: The wall clock attempts are timed by.
        self.clock: Callable[[], float] = time.time

    def find(self, key: str) -> Created | None:
        """What was recorded for the webhook with this idempotency key."""
        found = self.records.get(key)
        if found is None:
            return None
        return Created(str(found["issue"] or ""), float(found["started_at"] or 0))

    def count(self) -> int:
        """How many webhooks are recorded (opens the store: a check that it works)."""
        return self.records.count()

    def close(self) -> None:
        """Let go of the store's connections."""
        self.records.close()

    def create_once(self, webhook: Webhook, create: Callable[[], str]) -> str:
        """The issue of this webhook: the recorded one, else the one ``create`` makes.

        Of two servers (or threads) delivering the same webhook at once, one
        creates the issue and the other waits for it, up to the attempt's time.
        """
        started = self.clock()
        found = self._claim(webhook, started)
        if found:
            log.info("webhook %s made %s %s %s already", webhook.id, self.tracker, self.item, found)
            return found
        key = webhook.idempotency_key
        try:
            issue = create()
        except DeliveryFailed:
            self._forget(key, started)  # the tracker answered "no": nothing was created
            raise
        except BackendError:
            self._abandon(key, started)  # perhaps created, answer lost: the next try may take over
            raise
        self._finish(webhook, issue)
        return issue

    def _claim(self, webhook: Webhook, started: float) -> str:
        """The recorded issue, or "" once this attempt holds the record and may create it."""
        key = webhook.idempotency_key
        request = str(webhook.payload.get("xRequest", ""))[:40]
        fresh = {"issue": "", "request_id": request, "started_at": started}
        give_up = time.monotonic() + self.attempt_seconds
        while True:
            if self.records.add(key, fresh):  # an insert only one of two racing can win
                return ""
            found = self.find(key)
            if found is not None and found.issue:
                return found.issue
            if found is not None and self.clock() - found.started_at >= self.in_flight_seconds:
                # abandoned: the row's old time lets one of two attempts taking over win
                expect = {"issue": "", "started_at": found.started_at}
                if self.records.change(key, {"started_at": started}, expect):
                    self._warn_second(webhook)
                    return ""
            if time.monotonic() >= give_up:
                other_started = started if found is None else found.started_at
                abandoned_at = other_started + self.in_flight_seconds
                raise self._busy(webhook, abandoned_at - self.clock())
            time.sleep(WAIT_STEP)  # another attempt is at it: its issue, or its failure, comes

    def _warn_second(self, webhook: Webhook) -> None:
        log.warning(
            "webhook %s: an earlier attempt to create its %s %s never finished (a "
            "crash, or an answer lost to a timeout); if %s created it then, the one "
            "created now is a second one",
            webhook.id,
            self.tracker,
            self.item,
            self.tracker,
        )

    def _busy(self, webhook: Webhook, wait: float) -> DeliveryFailed:
        return DeliveryFailed(
            f"another attempt is creating the {self.tracker} {self.item} of webhook "
            f"{webhook.id} now (another server, or a process still at it); tried again later",
            final=False,
            retry_after=max(1.0, wait),
        )

    def _forget(self, key: str, started: float) -> None:
        try:
            self.records.remove(key, {"issue": "", "started_at": started})
        except BackendError as exc:
            log.warning("%s", exc)

    def _abandon(self, key: str, started: float) -> None:
        """Mark this attempt over without an answer: no later one need wait for it."""
        try:
            self.records.change(key, {"started_at": 0.0}, {"issue": "", "started_at": started})
        except BackendError as exc:
            log.warning("%s", exc)

    def _finish(self, webhook: Webhook, issue: str) -> None:
        try:
            done = self.records.change(
                webhook.idempotency_key,
                {"issue": issue, "created_at": self.clock()},
                {"issue": ""},
            )
        except BackendError as exc:
            # The issue exists now: failing would have the outbox create it again.
            log.error(
                "webhook %s created %s %s %s, but it was not recorded: %s",
                webhook.id,
                self.tracker,
                self.item,
                issue,
                exc,
            )
            return
        if not done:
            log.error(
                "webhook %s created %s %s %s, but another attempt had recorded its own "
                "meanwhile (one of them is a second one)",
                webhook.id,
                self.tracker,
                self.item,
                issue,
            )
