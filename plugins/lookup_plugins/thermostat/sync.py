"""Bring the local index up to date with Thermostat, and hand new answers to write-back.

A sync reads each survey's responses newest first, a page of up to 500 at a
time, and stops at the first response it already has (where the last sync
ended), so a sync costs a page or two however many answers there are. Nothing
is kept of a sync that fails half-way: the index is replaced only once all
surveys are read, so the next sync starts from the same place.

A new response that carries ``xrequest`` becomes a write-back job for the
configured target: it is stored in the outbox first, then marked in the index
in the same transaction as the response. A crash between the two only means
the job is handed over again at the next sync; the target's ``deliver`` finds
its own mark in the request and writes nothing twice. A job the outbox could
not take stays unmarked and is handed over again at every sync until it is.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lookup_server.plugin import BackendError, WebhookSubmitter

from ..http_client import Deadline
from .client import Survey, SurveyResponse, ThermostatApi, score_class
from .index import rewrite, search_keys

log = logging.getLogger(__name__)
#: Each call of a sync must end within this (it runs in the background, not for staff).
CALL_TIMEOUT = 30.0
#: A first sync reads at most this many pages of a survey (500 000 answers).
MAX_PAGES = 1000
#: What a write-back job says it is (the helpspot target checks it).
JOB_KIND = "thermostat-response"


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    ran: bool
    new: int = 0
    handed_over: int = 0


@dataclass(frozen=True)
class WriteBack:
    """Where new answers with a request go: a target, through ``submit``."""

    target: str
    submit: WebhookSubmitter


class ResponseSync:
    """Syncs one source's surveys into its index."""

    def __init__(
        self,
        api: ThermostatApi,
        surveys: list[str],
        path: Path,
        key_fields: dict[str, str],
    ) -> None:
        self.api, self.surveys, self.path, self.key_fields = api, surveys, path, key_fields

    def run(self, writeback: WriteBack | None) -> SyncResult:
        """One sync; False in ``ran`` when another process is syncing right now."""
        counts = {"new": 0, "handed_over": 0}

        def change(conn: sqlite3.Connection) -> None:
            known = {survey.id: survey for survey in self.api.surveys(self._deadline())}
            for survey_id in self.surveys:
                survey = known.get(survey_id)
                if survey is None:
                    raise BackendError(f"Thermostat has no survey {survey_id}; check surveys")
                counts["new"] += self._sync_survey(conn, survey, writeback)
            if writeback is not None:
                counts["handed_over"] += _hand_over_pending(conn, writeback)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('synced_at', ?)", (str(time.time()),))

        ran = rewrite(self.path, change)
        return SyncResult(ran, counts["new"], counts["handed_over"])

    def _deadline(self) -> Deadline:
        return Deadline(CALL_TIMEOUT)

    def _sync_survey(
        self, conn: sqlite3.Connection, survey: Survey, writeback: WriteBack | None
    ) -> int:
        conn.execute(
            "INSERT INTO surveys (id, name, type, labels) VALUES (?, ?, ?, ?) ON CONFLICT (id)"
            " DO UPDATE SET name = excluded.name, type = excluded.type, labels = excluded.labels",
            (survey.id, survey.name, survey.type, json.dumps(dict(survey.labels))),
        )
        (cursor,) = conn.execute("SELECT cursor FROM surveys WHERE id = ?", (survey.id,)).fetchone()
        fresh: list[SurveyResponse] = []
        for page in range(1, MAX_PAGES + 1):
            found = self.api.responses(survey.id, page, self._deadline())
            older = [r for r in found.responses if r.id <= cursor]
            fresh += [r for r in found.responses if r.id > cursor]
            if older or found.last:
                break
        for response in sorted(fresh, key=lambda r: r.id):  # oldest first
            self._store(conn, survey, response, writeback)
        if fresh:
            conn.execute(
                "UPDATE surveys SET cursor = ? WHERE id = ?",
                (max(r.id for r in fresh), survey.id),
            )
        return len(fresh)

    def _store(
        self,
        conn: sqlite3.Connection,
        survey: Survey,
        response: SurveyResponse,
        writeback: WriteBack | None,
    ) -> None:
        fields = {k: v for k, v in response.custom_fields.items() if k not in ("xrequest",)}
        handed = 0
        if writeback is not None and response.xrequest:
            handed = int(_submit(writeback, job(survey, response)))
        conn.execute(
            "INSERT OR IGNORE INTO responses (id, survey_id, email, email_folded, customer_id,"
            " last_folded, first_folded, phone_tail, score, feedback, created_at, xrequest,"
            " fields, writeback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                response.id,
                survey.id,
                response.email,
                *search_keys(response.email, fields, self.key_fields),
                response.score,
                response.feedback,
                response.created_at,
                response.xrequest,
                json.dumps(fields),
                handed,
            ),
        )


def job(survey: Survey, response: SurveyResponse) -> dict[str, object]:
    """The write-back job of one response, as the helpspot target takes it."""
    return {
        "kind": JOB_KIND,
        "xRequest": response.xrequest,
        "response_id": response.id,
        "survey_id": survey.id,
        "survey_name": survey.name,
        "survey_type": survey.type,
        "score": response.score,
        "score_class": score_class(response.score, survey),
        "feedback": response.feedback,
        "answered_at": response.created_at,
        "email": response.email,
    }


def _submit(writeback: WriteBack, payload: Mapping[str, object]) -> bool:
    try:
        writeback.submit(writeback.target, payload)
    except BackendError as exc:
        log.error(
            "survey response %s for request %s: write-back not handed over yet (%s); "
            "the next sync tries again",
            payload.get("response_id"),
            payload.get("xRequest"),
            exc,
        )
        return False
    return True


def _hand_over_pending(conn: sqlite3.Connection, writeback: WriteBack) -> int:
    """Hand over the jobs an earlier sync could not; how many went."""
    pending = conn.execute(
        "SELECT r.id, r.survey_id, s.name, s.type, s.labels, r.email, r.score, r.feedback,"
        " r.created_at, r.xrequest FROM responses r JOIN surveys s ON s.id = r.survey_id"
        " WHERE r.writeback = 0 AND r.xrequest != '' ORDER BY r.id LIMIT 500"
    ).fetchall()
    done = 0
    for row in pending:
        survey = Survey(row[1], row[2], row[3], {int(k): v for k, v in json.loads(row[4]).items()})
        response = SurveyResponse(
            row[0], row[1], row[5], row[6], row[7], row[8], {"xrequest": row[9]}
        )
        if not _submit(writeback, job(survey, response)):
            break  # the outbox is still unusable: the rest waits for the next sync
        conn.execute("UPDATE responses SET writeback = 1 WHERE id = ?", (row[0],))
        done += 1
    return done
