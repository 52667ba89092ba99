"""A customer's Thermostat surveys in Live Lookup (``backend = "thermostat"``, a source).

Lookups read only the local index (lookup_plugins.thermostat.index), so they
never wait on Thermostat and go on working while it is down; every answer
says how old its data is. The server keeps the index up to date: one sync
thread per process, every ``sync_every`` seconds, of which one at a time
syncs (a file lock). The command line reads the same index and never syncs.

A person is their e-mail address; what else is known of them (customer id,
names, phone) comes from the custom fields of their latest answer, which the
thermostat target fills from the request (its ``fields``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lookup_server.plugin import (
    PHONE_SUFFIX_DIGITS,
    BackendError,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Customer,
    SearchTerm,
    Secret,
    SourceBackend,
    SourceSettings,
    WebhookSubmitter,
    phone_matches,
    state_dir,
    with_field_map,
)

from ..http_client import Deadline
from .client import DEFAULT_URL, Survey, ThermostatApi, score_class
from .index import ReaderCache, Snapshot, StoredResponse, StoredSurvey
from .sync import ResponseSync, WriteBack

log = logging.getLogger(__name__)
_TOP = "\U0010ffff"  # sorts after every string with the same prefix
#: The fields a person's answers add to their customer, besides their own fields.
SUMMARY = ("latest_score", "latest_class", "latest_feedback", "latest_date", "latest_survey")


@dataclass(frozen=True)
class ThermostatSourceOptions:
    """The keys of a ``[sources.NAME]`` table with ``backend = "thermostat"``."""

    token: Secret
    #: The surveys (ids in Thermostat) whose answers staff see.
    surveys: list[str]
    url: str = DEFAULT_URL
    #: The local index; default: the user's state folder.
    index_path: Path | None = None
    #: Seconds between syncs (the server's; the command line never syncs).
    sync_every: int = 300
    #: The target (backend "helpspot") that writes new answers back into their
    #: request; "" writes nothing back.
    writeback_target: str = ""


class ThermostatSource(SourceBackend[ThermostatSourceOptions]):
    """Survey answers by e-mail, customer id, phone or name, from the local index."""

    Options = ThermostatSourceOptions
    # Lookups read a local, immutable SQLite file: called inline, like the CSV backend.
    waits_on_network = False

    def __init__(self, options: ThermostatSourceOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self.api = ThermostatApi(options.url, options.token.reveal())
        self.path = options.index_path or (
            state_dir() / f"thermostat-{re.sub(r'[^A-Za-z0-9_-]', '_', source.name)}.sqlite3"
        )
        self.key_fields = {
            element: source.backend_field(element)
            for element in ("customer_id", "first_name", "last_name", "phone")
        }
        self.reader = ReaderCache(self.path)
        self.sync = ResponseSync(
            self.api, [s.strip() for s in options.surveys], self.path, self.key_fields
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def validate(
        cls, options: ThermostatSourceOptions, source: SourceSettings
    ) -> list[tuple[str, str]]:
        """Surveys are Thermostat's numbers; a sync needs a minute at least between runs."""
        problems = []
        if not options.surveys or not all(s.strip().isdigit() for s in options.surveys):
            problems.append(("surveys", 'must list the surveys\' ids in Thermostat: ["1234"]'))
        if options.sync_every < 60:
            problems.append(
                ("sync_every", "must be 60 seconds or more (the API allows 200 calls a minute)")
            )
        return problems

    # -- life cycle --------------------------------------------------------------------------

    def start_background(self, submit: WebhookSubmitter) -> None:
        """Sync now and every ``sync_every`` seconds, on a thread of this process."""
        writeback = (
            WriteBack(self.options.writeback_target, submit)
            if self.options.writeback_target
            else None
        )
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._sync_forever, args=(writeback,), name="thermostat-sync", daemon=True
        )
        self._thread.start()

    def _sync_forever(self, writeback: WriteBack | None) -> None:
        while not self._stop.is_set():
            self.sync_now(writeback)
            self._stop.wait(self.options.sync_every)

    def sync_now(self, writeback: WriteBack | None) -> bool:
        """One sync; a failure is logged (lookups go on from the index as it is)."""
        try:
            result = self.sync.run(writeback)
        except BackendError as exc:
            log.error("source %r: cannot sync with Thermostat: %s", self.source.name, exc)
            return False
        except Exception:
            log.exception("source %r: the sync failed", self.source.name)
            return False
        if result.new or result.handed_over:
            log.info(
                "source %r: %d new answer(s); %d write-back job(s) handed over",
                self.source.name,
                result.new,
                result.handed_over,
            )
        return result.ran

    def check(self) -> list[str]:
        """Prove the token and the surveys (reads only), and say how old the index is."""
        deadline = Deadline(self.source.timeout)
        known = {s.id for s in self.api.surveys(deadline)}
        missing = [s for s in self.options.surveys if s.strip() not in known]
        if missing:
            raise BackendError(f"Thermostat has no survey {', '.join(missing)}; check surveys")
        snapshot = self.reader.current()
        if snapshot is None:
            return ["no answers indexed yet: the server syncs them when it starts"]
        age = time.time() - float(snapshot.meta.get("synced_at", "0"))
        if age > 3 * self.options.sync_every:
            return [f"the index was last synced {_ago(age)}: is the server running?"]
        return []

    def close(self) -> None:
        """Stop the sync thread and close the connection pool."""
        self._stop.set()
        self.api.close()

    # -- lookups -----------------------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Everyone with an answer matching ``term``, with their surveys' summary."""
        snapshot = self.reader.current()
        if snapshot is None:
            raise BackendError(
                "no survey answers indexed yet: the server's first sync with Thermostat "
                "has not finished (see the server log)"
            )
        people = _matching(snapshot, term, limit)
        return [self._customer(snapshot, email) for email in people[:limit]]

    def _customer(self, snapshot: Snapshot, email_folded: str) -> Customer:
        answers = snapshot.responses_of(email_folded)
        latest = answers[0]
        survey = snapshot.surveys.get(latest.survey_id)
        same = [a.score for a in answers if a.survey_id == latest.survey_id and a.score is not None]
        own = {k: v for k, v in latest.fields.items() if v}
        fields = {
            **with_field_map({"customer_id": "", **own}, self.source),
            "email": latest.email,
            "latest_score": "" if latest.score is None else str(latest.score),
            "latest_class": score_class(latest.score, _as_survey(survey)),
            "latest_feedback": latest.feedback,
            "latest_date": latest.created_at,
            "latest_survey": survey.name if survey else latest.survey_id,
            "answers": str(len(same)),
            "average": f"{sum(same) / len(same):.1f}" if same else "",
            "surveys": _surveys_line(snapshot, answers),
            "data_age": _data_age(snapshot),
        }
        return Customer({k: v for k, v in fields.items() if v != "" or k == "customer_id"})


def _matching(snapshot: Snapshot, term: SearchTerm, limit: int) -> list[str]:
    match term:
        case ById(customer_id):
            return snapshot.emails("customer_id = ?", (customer_id,), limit)
        case ByEmail():
            return snapshot.emails("email_folded = ?", (term.folded,), limit)
        case ByPhone(digits) if len(digits) >= PHONE_SUFFIX_DIGITS:
            found = snapshot.emails("phone_tail = ?", (digits[-PHONE_SUFFIX_DIGITS:],), limit * 20)
            return [e for e in found if _phone_of(snapshot, e, digits)][:limit]
        case ByPhone(digits):
            return snapshot.emails("phone_tail = ?", (digits,), limit)
        case ByName():
            where = "last_folded >= ? AND last_folded <= ?"
            params: tuple[str, ...] = (term.last_folded, term.last_folded + _TOP)
            if term.first:
                where += " AND first_folded >= ? AND first_folded <= ?"
                params += (term.first_folded, term.first_folded + _TOP)
            return snapshot.emails(where, params, limit)


def _phone_of(snapshot: Snapshot, email_folded: str, digits: str) -> bool:
    return any(
        phone_matches(value, digits)
        for answer in snapshot.responses_of(email_folded)
        for value in answer.fields.values()
    )


def _as_survey(stored: StoredSurvey | None) -> Survey | None:
    if stored is None:
        return None
    return Survey(stored.id, stored.name, stored.type, stored.labels)


def _surveys_line(snapshot: Snapshot, answers: list[StoredResponse]) -> str:
    """One line per survey: its answers and their average, newest survey first."""
    parts = []
    for survey_id in dict.fromkeys(a.survey_id for a in answers):
        scores = [a.score for a in answers if a.survey_id == survey_id and a.score is not None]
        survey = snapshot.surveys.get(survey_id)
        name = survey.name if survey else survey_id
        average = f", average {sum(scores) / len(scores):.1f}" if scores else ""
        parts.append(f"{name}: {len(scores)} answer{'s' if len(scores) != 1 else ''}{average}")
    return "; ".join(parts)


def _data_age(snapshot: Snapshot) -> str:
    synced = float(snapshot.meta.get("synced_at", "0"))
    when = datetime.fromtimestamp(synced, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"as of {when} ({_ago(time.time() - synced)})"


def _ago(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return "less than a minute ago"
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes // 60
    return f"{hours} h ago" if hours < 48 else f"{hours // 24} days ago"
