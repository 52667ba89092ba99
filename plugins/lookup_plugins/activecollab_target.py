"""ActiveCollab tasks from Request Push and webhooks (``backend = "activecollab"``).

Speaks ActiveCollab's REST API v1 (``URL/api/v1/...``, JSON, the API token in
the ``X-Angie-AuthApiToken`` header, as ActiveCollab's own SDK sends it). A
push or a webhook makes a task in the configured project with ``POST
/projects/ID/tasks`` (``name``, ``body``), answered with the task as
``{"single": {...}}``; its id is the task's ``id``. Details read ``GET
/projects/ID/tasks/TASK`` and, for the assignee's name, ``GET /users/ID``.
``check`` reads ``GET /projects/ID`` and creates nothing.

A task's ``body`` is rich text (HTML) in ActiveCollab, so the template's
plain text is escaped and its line breaks kept as ``<br>`` and paragraphs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests

from lookup_server.plugin import (
    DeliveryFailed,
    NotFound,
    PushDetails,
    Secret,
    StoreLocation,
    TargetSettings,
)

from .http_client import Deadline
from .tracker_target import DEFAULT_BODY, DEFAULT_TITLE, TrackerTarget

#: Statuses a refused task (a validation error) comes with.
VALIDATION_STATUSES = frozenset({400, 422})


@dataclass(frozen=True)
class ActiveCollabOptions:
    """The keys of a ``[targets.NAME]`` table with ``backend = "activecollab"``."""

    #: The account's address: https://app.activecollab.com/NUMBER, or a self-hosted one.
    url: str
    #: An API token (ActiveCollab issues one per application: see docs/backends).
    token: Secret
    #: The project new tasks go to (the number in the project's address).
    project_id: int
    #: The task's name (a template, README "Templates").
    title: str = DEFAULT_TITLE
    #: The task's description (a template; plain text, sent as HTML).
    body: str = DEFAULT_BODY
    #: The record of delivered webhooks; default: the user's state folder.
    store: StoreLocation | None = None


def body_html(text: str) -> str:
    """Plain text as the HTML of a task's body: escaped, paragraphs and line breaks kept."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "".join(
        "<p>" + "<br>".join(html.escape(line) for line in p.strip("\n").split("\n")) + "</p>"
        for p in paragraphs
    )


class ActiveCollabTarget(TrackerTarget[ActiveCollabOptions]):
    """Makes an ActiveCollab task of each pushed request and each webhook."""

    Options = ActiveCollabOptions
    VENDOR = "ActiveCollab"
    ITEM = "task"

    def __init__(self, options: ActiveCollabOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.site = options.url.rstrip("/")
        self.project_path = f"/projects/{options.project_id}"

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The shared checks; project_id must be a project's number."""
        problems = super().validate(options, target)
        if options.project_id <= 0:
            problems.append(("project_id", "must be the project's number (in its address)"))
        return problems

    # -- capabilities -----------------------------------------------------------------

    def _create(self, title: str, body: str, data: Mapping[str, object]) -> str:
        """``POST /projects/ID/tasks``: the new task's id."""
        response = self._api(
            "POST",
            f"{self.project_path}/tasks",
            self._deadline(),
            json={"name": title, "body": body_html(body)},
        )
        if response.status_code == 404:
            raise self._no_project(response)
        task = self._single(response, "the new task")
        task_id = task.get("id")
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id <= 0:
            raise self.refused("ActiveCollab answered without the new task's id", response)
        return str(task_id)

    def details(self, push_id: str) -> PushDetails:
        """The task's name, state, assignee and last update."""
        if not push_id.isdigit():
            raise NotFound(f"{push_id!r} is not an ActiveCollab task id")
        deadline = self._deadline()
        response = self._api("GET", f"{self.project_path}/tasks/{push_id}", deadline)
        if response.status_code == 404:
            raise NotFound(
                f"ActiveCollab has no task {push_id} in project {self.options.project_id} "
                "(deleted, or moved to another project)"
            )
        task = self._single(response, "the task")
        rows = [
            ("State", _state(task)),
            ("Assignee", self._assignee(task.get("assignee_id"), deadline)),
            ("Last update", _when(task.get("updated_on"))),
        ]
        name = task.get("name") if isinstance(task.get("name"), str) else ""
        path = task.get("url_path")
        link = self.site + path if isinstance(path, str) and path.startswith("/") else ""
        return PushDetails(
            title=f"ActiveCollab task {push_id}: {name or '(no name)'}",
            rows=tuple((label, value) for label, value in rows if value),
            link=link,
        )

    def check(self) -> list[str]:
        """Read the project (``GET /projects/ID``): proves the url, token and project_id."""
        self.record.count()
        response = self._api("GET", self.project_path, self._deadline())
        if response.status_code == 404:
            raise self._no_project(response)
        project = self._single(response, "the project")
        warnings = self._plain_http_warning()
        if project.get("is_completed") or project.get("is_trashed"):
            state = "in the trash" if project.get("is_trashed") else "completed"
            warnings.append(f"project_id: project {self.options.project_id} is {state}")
        return warnings

    # -- the REST API -----------------------------------------------------------------

    def _api(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        """One API call; refusals other than 404 and validation errors raised here."""
        headers = {
            "X-Angie-AuthApiToken": self.options.token.reveal(),
            "Accept": "application/json",
        }
        response = self._send(
            method, f"{self.site}/api/v1{path}", deadline, headers=headers, **kwargs
        )
        status = response.status_code
        if status == 404 or status in VALIDATION_STATUSES:
            return response
        problem = self.http_problem(status)
        if status == 403:
            problem = (
                f"ActiveCollab refused (HTTP 403): the token's user may not do that in project "
                f"{self.options.project_id}; make the user a member of it"
            )
        if problem:
            raise self.refused(problem, response)
        return response

    def _no_project(self, response: requests.Response) -> DeliveryFailed:
        return self.refused(
            f"ActiveCollab has no project {self.options.project_id} that the token's user "
            "can see (HTTP 404); check project_id",
            response,
        )

    def _single(self, response: requests.Response, what: str) -> Mapping[str, Any]:
        """The ``single`` object of an answer, or the error for an answer that has none."""
        if not 200 <= response.status_code < 300:
            raise self.refused(self._refusal(response, what), response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        single = answer.get("single") if isinstance(answer, dict) else None
        if not isinstance(single, dict):
            raise self.refused(
                f"ActiveCollab sent an unreadable answer for {what} (not its JSON)", response
            )
        return single

    def _refusal(self, response: requests.Response, what: str) -> str:
        """What ActiveCollab said was wrong with ``what``: its message and each field's errors."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        said: list[str] = []
        if isinstance(answer, dict):
            if isinstance(answer.get("message"), str):
                said.append(answer["message"])
            fields = answer.get("field_errors")
            if isinstance(fields, dict):
                for field, errors in fields.items():
                    listed = errors if isinstance(errors, list) else [errors]
                    said += [f"{field}: {e}" for e in listed if isinstance(e, str)]
        reason = self.quoted("; ".join(said)) if said else "no reason given"
        return f"ActiveCollab refused {what} (HTTP {response.status_code}): {reason}"

    def _assignee(self, user_id: object, deadline: Deadline) -> str:
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
            return "nobody"
        try:
            response = self._api("GET", f"/users/{user_id}", deadline)
        except DeliveryFailed as exc:
            if exc.status == 403:  # a user who may not see other users: the task still shows
                return f"user {user_id}"
            raise
        if response.status_code == 404:
            return f"user {user_id}"
        name = self._single(response, "the assignee").get("display_name")
        return name if isinstance(name, str) and name.strip() else f"user {user_id}"


def _state(task: Mapping[str, Any]) -> str:
    if task.get("is_trashed"):
        return "in the trash"
    return "completed" if task.get("is_completed") else "open"


def _when(timestamp: object) -> str:
    """ActiveCollab's Unix time as ``2026-03-01 10:00 UTC``."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or timestamp <= 0:
        return ""
    try:
        moment = datetime.fromtimestamp(timestamp, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.strftime("%Y-%m-%d %H:%M UTC")
