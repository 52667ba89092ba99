"""An ActiveCollab REST API v1 stand-in: projects, their tasks, users.

Shapes, from ActiveCollab's documentation and SDK:

* Every call is ``URL/api/v1/PATH`` with the token in the ``X-Angie-AuthApiToken``
  header and JSON bodies (activecollab/activecollab-feather-sdk, ``Client.php``
  and ``Connector.php``).
* ``POST /projects/ID/tasks`` with ``{"name": …}`` answers HTTP 200 with
  ``{"single": TASK, "subscribers": […], "comments": [], "reminders": [],
  "subtasks": [], "task_list": null, "tracked_time": 0, "tracked_expenses": 0}``;
  ``GET /projects/ID/tasks/TASK`` answers the same; a task has ``id``,
  ``class``, ``url_path`` (``/projects/1/tasks/1``), ``name``, ``assignee_id``
  (0: nobody), ``is_completed``, ``is_trashed``, ``project_id``, ``body``,
  ``created_on``/``updated_on`` (Unix time), ``task_number``, ...
  (developers.activecollab.com/api-documentation/v1/projects/elements/tasks/
  task-url.html and tasks.html).
* ``GET /projects/ID`` gives a project like those of ``GET /projects`` (``id``,
  ``class``, ``url_path``, ``name``, ``is_completed``, ``is_trashed``,
  ``members``, ...) under ``single``; ``GET /users/ID`` gives a user under
  ``single`` (``display_name``, ``email``, ...) (the same documentation,
  tasks.html and authentication.html).

Not found in the documentation, so chosen here and marked: an unknown token is
HTTP 401, a project the user is no member of HTTP 403, an unknown project,
task or user HTTP 404, each with a short JSON ``message``; a task without a
name HTTP 400 with ``{"type": "ValidationErrors", "message": …,
"field_errors": {"name": […]}}``, the shape of ActiveCollab's framework as we
know it, which the target reads only for its ``message`` and ``field_errors``
(``validation_status`` makes it 422 to check both). ActiveCollab documents no
rate limit; :meth:`ActiveCollabEmulator.fail_next` serves one, or any other
answer a test needs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from tests.plugins.emulators import Scripted


@dataclass
class ActiveCollabUser:
    """One user of the account."""

    id: int
    display_name: str
    email: str

    def json(self) -> dict[str, Any]:
        """The user object, as ``GET /users/ID`` gives it."""
        first, _, last = self.display_name.partition(" ")
        return {
            "id": self.id,
            "class": "Member",
            "url_path": f"/users/{self.id}",
            "is_archived": False,
            "is_trashed": False,
            "first_name": first,
            "last_name": last or None,
            "display_name": self.display_name,
            "short_display_name": first,
            "email": self.email,
            "created_on": 1430163964,
            "updated_on": 1430163964,
        }


@dataclass
class ActiveCollabProject:
    """One project; ``members`` are user ids (the token's user must be one)."""

    id: int
    name: str
    members: list[int]
    is_completed: bool = False

    def json(self) -> dict[str, Any]:
        """The project object."""
        return {
            "id": self.id,
            "class": "Project",
            "url_path": f"/projects/{self.id}",
            "name": self.name,
            "completed_on": None,
            "is_completed": self.is_completed,
            "members": self.members,
            "is_trashed": False,
            "created_on": 1430164414,
            "updated_on": 1430164414,
            "body": None,
            "body_formatted": "",
            "leader_id": self.members[0] if self.members else 0,
        }


@dataclass
class ActiveCollabTask:
    """One stored task."""

    id: int
    project_id: int
    task_number: int
    name: str
    body: str
    assignee_id: int = 0
    is_completed: bool = False
    updated_on: int = field(default_factory=lambda: int(time.time()))

    def json(self) -> dict[str, Any]:
        """The task object."""
        return {
            "id": self.id,
            "class": "Task",
            "url_path": f"/projects/{self.project_id}/tasks/{self.id}",
            "name": self.name,
            "assignee_id": self.assignee_id,
            "delegated_by_id": 0,
            "completed_on": None,
            "completed_by_id": None,
            "is_completed": self.is_completed,
            "comments_count": 0,
            "attachments": [],
            "labels": [],
            "is_trashed": False,
            "project_id": self.project_id,
            "is_hidden_from_clients": False,
            "body": self.body,
            "body_formatted": self.body,
            "created_on": self.updated_on,
            "created_by_id": 1,
            "updated_on": self.updated_on,
            "updated_by_id": 1,
            "task_number": self.task_number,
            "task_list_id": 0,
            "position": self.task_number,
            "is_important": False,
            "due_on": None,
            "estimate": 0,
        }


def default_users() -> list[ActiveCollabUser]:
    """The token's user and a colleague."""
    return [
        ActiveCollabUser(1, "Ada Lovelace", "ada@example.com"),
        ActiveCollabUser(2, "Grace Hopper", "grace@example.com"),
    ]


def default_projects() -> list[ActiveCollabProject]:
    """The support project, and one the token's user is no member of."""
    return [
        ActiveCollabProject(7, "Customer support", [1, 2]),
        ActiveCollabProject(8, "Secret plans", [2]),
    ]


@dataclass
class ActiveCollabEmulator:
    """One ActiveCollab account, seen by the user of ``token`` (user 1)."""

    token: str
    users: list[ActiveCollabUser] = field(default_factory=default_users)
    projects: list[ActiveCollabProject] = field(default_factory=default_projects)
    tasks: dict[int, ActiveCollabTask] = field(default_factory=dict)
    next_id: int = 500
    me: int = 1
    validation_status: int = 400
    script: list[Scripted] = field(default_factory=list)
    #: (method, path, JSON body or None) of every request
    seen: list[tuple[str, str, Any]] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next matching requests with this instead (a dict is sent as JSON)."""
        self.script.extend(
            Scripted(status, body, headers or {}, path_contains) for _ in range(times)
        )

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("activecollab-emulator")
        app.before_request(self._gate)
        app.add_url_rule("/api/v1/projects/<int:project_id>", "project", self._project)
        app.add_url_rule(
            "/api/v1/projects/<int:project_id>/tasks", "create", self._create, methods=["POST"]
        )
        app.add_url_rule(
            "/api/v1/projects/<int:project_id>/tasks/<int:task_id>", "task", self._task
        )
        app.add_url_rule("/api/v1/users/<int:user_id>", "user", self._user)
        return app

    def _gate(self) -> Response | None:
        self.seen.append((request.method, request.path, request.get_json(silent=True)))
        for i, s in enumerate(self.script):
            if s.path_contains in request.path:
                del self.script[i]
                if isinstance(s.body, dict):
                    return Response(
                        _dumps(s.body), s.status, s.headers, content_type="application/json"
                    )
                return Response(s.body, s.status, s.headers)
        if request.headers.get("X-Angie-AuthApiToken") != self.token:
            return _message(401, "Not authenticated")
        return None

    def _member_project(self, project_id: int) -> ActiveCollabProject | Response:
        project = next((p for p in self.projects if p.id == project_id), None)
        if project is None:
            return _message(404, "Project not found")
        if self.me not in project.members:
            return _message(403, "You are not a member of this project")
        return project

    def _project(self, project_id: int) -> Response:
        project = self._member_project(project_id)
        if isinstance(project, Response):
            return project
        return jsonify({"single": project.json()})

    def _create(self, project_id: int) -> Response:
        project = self._member_project(project_id)
        if isinstance(project, Response):
            return project
        body = request.get_json(silent=True)
        if request.mimetype != "application/json" or not isinstance(body, dict):
            return _message(400, "Expected a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            answer = {
                "type": "ValidationErrors",
                "message": "Validation failed",
                "field_errors": {"name": ["Task name is required"]},
            }
            return Response(_dumps(answer), self.validation_status, content_type="application/json")
        self.next_id += 1
        number = 1 + sum(t.project_id == project.id for t in self.tasks.values())
        task = ActiveCollabTask(self.next_id, project.id, number, name, str(body.get("body") or ""))
        self.tasks[task.id] = task
        return jsonify(_task_answer(task))

    def _task(self, project_id: int, task_id: int) -> Response:
        project = self._member_project(project_id)
        if isinstance(project, Response):
            return project
        task = self.tasks.get(task_id)
        if task is None or task.project_id != project.id:
            return _message(404, "Task not found")
        return jsonify(_task_answer(task))

    def _user(self, user_id: int) -> Response:
        user = next((u for u in self.users if u.id == user_id), None)
        if user is None:
            return _message(404, "User not found")
        return jsonify({"single": user.json()})


def _task_answer(task: ActiveCollabTask) -> dict[str, Any]:
    return {
        "single": task.json(),
        "subscribers": [1],
        "comments": [],
        "reminders": [],
        "subtasks": [],
        "task_list": None,
        "tracked_time": 0,
        "tracked_expenses": 0,
    }


def _message(status: int, message: str) -> Response:
    return Response(_dumps({"message": message}), status, content_type="application/json")


def _dumps(value: Any) -> str:
    return json.dumps(value)
