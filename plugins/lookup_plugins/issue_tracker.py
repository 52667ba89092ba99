"""What the jira and github targets share: texts that fit an issue, and the webhook record.

Both make an issue from a pushed request or a webhook, its title and its text
rendered from templates (README, "Templates"). A title is one line, cut to
what the tracker accepts; control characters go, as no tracker takes them.

The outbox delivers a webhook at least once: after a crash it delivers it
again. So :class:`CreatedIssues` remembers, by the webhook's idempotency key,
which issue it created (a SQLite file under the target's ``store``, as the
http target keeps its pushes), and a redelivery returns that issue instead
of creating another. One window remains: the tracker has created the issue
but the server dies, or loses the answer (a timeout, a dropped connection),
before the record holds the issue. The next attempt then creates a second
issue; it logs a warning saying so, because the record shows that an
earlier attempt started and never finished.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    TemplateProblem,
    TextTemplate,
    Webhook,
)

from .http_client import Deadline, request_once
from .state_store import open_store

log = logging.getLogger(__name__)

#: C0 controls but tab and line feed, and DEL: JSON carries them, trackers refuse them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: What a title made of nothing HelpSpot sent says.
UNTITLED = "HelpSpot request"
WEBHOOKS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS created (idempotency_key TEXT PRIMARY KEY,"
    " issue TEXT NOT NULL, request_id TEXT, started_at REAL, created_at REAL)"
)


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
    """Which issue each webhook created, by idempotency key, in a SQLite file."""

    def __init__(self, path: Path, tracker: str, item: str = "issue") -> None:
        self.path = path
        self.tracker = tracker
        #: What the tracker calls what is made (an issue, a case, a task), for the log.
        self.item = item

    def _connect(self) -> sqlite3.Connection:
        return open_store(self.path, WEBHOOKS_SCHEMA, "the webhook record")

    def _run(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        conn = self._connect()
        try:
            with conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot use the webhook record {self.path} ({type(exc).__name__}); "
                "is its disk full, or the file damaged?"
            ) from None
        finally:
            conn.close()

    def find(self, key: str) -> Created | None:
        """What was recorded for the webhook with this idempotency key."""
        rows = self._run("SELECT issue, started_at FROM created WHERE idempotency_key = ?", key)
        return Created(str(rows[0][0]), float(str(rows[0][1] or 0))) if rows else None

    def count(self) -> int:
        """How many webhooks made an issue (opens the file: a check that it works)."""
        return int(str(self._run("SELECT count(*) FROM created WHERE issue != ''")[0][0]))

    def create_once(self, webhook: Webhook, create: Callable[[], str]) -> str:
        """The issue of this webhook: the recorded one, else the one ``create`` makes."""
        key = webhook.idempotency_key
        found = self.find(key)
        if found is not None and found.issue:
            log.info(
                "webhook %s made %s %s %s already", webhook.id, self.tracker, self.item, found.issue
            )
            return found.issue
        if found is not None:
            log.warning(
                "webhook %s: an earlier attempt to create its %s %s never finished (a "
                "crash, or an answer lost to a timeout); if %s created it then, the one "
                "created now is a second one",
                webhook.id,
                self.tracker,
                self.item,
                self.tracker,
            )
        else:
            request = str(webhook.payload.get("xRequest", ""))[:40]
            self._run(
                "INSERT OR IGNORE INTO created VALUES (?, '', ?, ?, NULL)",
                key,
                request,
                time.time(),
            )
        try:
            issue = create()
        except DeliveryFailed:
            self._forget(key)  # the tracker answered "no": nothing was created
            raise
        self._finish(webhook, issue)
        return issue

    def _forget(self, key: str) -> None:
        try:
            self._run("DELETE FROM created WHERE idempotency_key = ? AND issue = ''", key)
        except BackendError as exc:
            log.warning("%s", exc)

    def _finish(self, webhook: Webhook, issue: str) -> None:
        try:
            self._run(
                "UPDATE created SET issue = ?, created_at = ? WHERE idempotency_key = ?",
                issue,
                time.time(),
                webhook.idempotency_key,
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
