"""A Jira Cloud REST API v3 stand-in: issues, projects, create metadata, the account.

Shapes, from Atlassian's reference (developer.atlassian.com/cloud/jira/platform/rest/v3):

* HTTP Basic with the account's e-mail address and an API token; a wrong pair
  is a 401 whose body is the plain text "Client must be authenticated to
  access this resource." (as Jira Cloud answers /rest/api/3/myself, quoted in
  atlassian/gajira-login#59); ``X-Seraph-LoginReason: AUTHENTICATION_DENIED``
  marks a CAPTCHA (the basic-authentication guide).
* "Create issue", ``POST /rest/api/3/issue`` ``{"fields": {...}}``: 201
  ``{"id", "key", "self"}``; a refusal is 400 ``{"errorMessages": [...],
  "errors": {field: message}}``. The messages: "You must specify a summary of
  the issue.", "Summary must be less than 255 characters." (the wording Jira
  answers, quoted in tenable/integration-jira-cloud#322 and
  ryanhoskin/pd2jira#13), "Operation value must be an Atlassian Document"
  for a description that is not ADF, and labels holding spaces.
* "Get issue", ``GET /rest/api/3/issue/{key}?fields=...``: ``{"id", "key",
  "self", "fields": {...}}`` with ``status`` (``name``, ``statusCategory``),
  ``assignee`` (``displayName``) or null, ``resolution`` (``name``) or null,
  ``updated`` (``2026-03-01T10:00:00.000+0000``); 404 ``{"errorMessages":
  ["Issue does not exist or you do not have permission to see it."],
  "errors": {}}``.
* "Get current user", ``GET /rest/api/3/myself``; "Get project", ``GET
  /rest/api/3/project/{key}`` (404 "No project could be found with key ...");
  "Get create metadata issue types for a project", ``GET
  /rest/api/3/issue/createmeta/{project}/issuetypes`` (``{"startAt",
  "maxResults", "total", "issueTypes"}``, only the types the account may
  create) and "... fields for a project and issue type id" (``"fields"``
  with ``fieldId``, ``name``, ``required``, ``hasDefaultValue``).
* ADF ("Atlassian Document Format", document structure, the ``paragraph``,
  ``text``, ``hardBreak`` nodes and the ``link`` mark): a document is checked
  as Jira does, an empty text node or a link without ``href`` is refused.
* Rate limiting ("Rate limiting" guide): 429 with ``Retry-After`` (seconds),
  scripted with :meth:`JiraEmulator.fail_next`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.plugins.emulators import Scripted

UNAUTHENTICATED = "Client must be authenticated to access this resource."
NO_ISSUE = "Issue does not exist or you do not have permission to see it."
NOT_ON_SCREEN = "Field 'labels' cannot be set. It is not on the appropriate screen, or unknown."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
ISSUE_TYPES = [
    {"id": "10001", "name": "Task", "subtask": False},
    {"id": "10002", "name": "Bug", "subtask": False},
    {"id": "10003", "name": "Sub-task", "subtask": True},
]


@dataclass
class JiraIssue:
    """One stored issue."""

    id: str
    key: str
    fields: dict[str, Any]
    status: str = "To Do"
    assignee: str = ""
    resolution: str = ""
    updated: str = "2026-03-01T10:00:00.000+0000"


@dataclass
class JiraProject:
    """One project: its key, its issue types and the extra fields a type requires."""

    key: str
    id: str = "10000"
    name: str = "Helpdesk"
    issue_types: list[dict[str, Any]] = field(default_factory=lambda: list(ISSUE_TYPES))
    #: issue type id -> names of the extra fields it requires (without a default)
    required: dict[str, list[str]] = field(default_factory=dict)
    #: False: the create screen has no Labels field
    labels_on_screen: bool = True


@dataclass
class JiraEmulator:
    """One Jira Cloud site."""

    email: str
    token: str
    projects: list[JiraProject] = field(default_factory=lambda: [JiraProject("HS")])
    issues: dict[str, JiraIssue] = field(default_factory=dict)
    #: False: the account lacks the Create issues permission everywhere
    may_create: bool = True
    active: bool = True
    page_size: int = 50
    script: list[Scripted] = field(default_factory=list)
    #: (method, path, args) of every request
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: the JSON body of every create request
    created: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next matching requests with this (a dict is sent as JSON)."""
        self.script.extend(
            Scripted(status, body, headers or {}, path_contains) for _ in range(times)
        )

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("jira-emulator")
        app.before_request(self._gate)
        app.add_url_rule("/rest/api/3/myself", "myself", self._myself)
        app.add_url_rule("/rest/api/3/project/<key>", "project", self._project)
        app.add_url_rule(
            "/rest/api/3/issue/createmeta/<key>/issuetypes", "types", self._issue_types
        )
        app.add_url_rule(
            "/rest/api/3/issue/createmeta/<key>/issuetypes/<type_id>", "fields", self._fields
        )
        app.add_url_rule("/rest/api/3/issue", "create", self._create, methods=["POST"])
        app.add_url_rule("/rest/api/3/issue/<key>", "issue", self._issue)
        return app

    # -- requests ----------------------------------------------------------------------------

    def _gate(self) -> Response | None:
        with self.lock:
            self.seen.append((request.method, request.path, dict(request.args)))
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != (self.email, self.token):
            return Response(
                UNAUTHENTICATED,
                401,
                {"WWW-Authenticate": 'Basic realm="protected-area"'},
                content_type="text/plain;charset=UTF-8",
            )
        with self.lock:
            for i, scripted in enumerate(self.script):
                if scripted.path_contains in request.path:
                    del self.script[i]
                    return _answer(scripted.status, scripted.body, scripted.headers)
        return None

    def _myself(self) -> Response:
        return _answer(
            200,
            {
                "self": f"{request.host_url}rest/api/3/user?accountId=5b10a2844c20165700ede21g",
                "accountId": "5b10a2844c20165700ede21g",
                "accountType": "atlassian",
                "emailAddress": self.email,
                "displayName": "HelpSpot integration",
                "active": self.active,
                "timeZone": "Europe/London",
            },
        )

    def _find_project(self, key: str) -> JiraProject | None:
        return next((p for p in self.projects if key in (p.key, p.id)), None)

    def _project(self, key: str) -> Response:
        project = self._find_project(key)
        if project is None:
            return _errors(404, [f"No project could be found with key '{key}'."])
        return _answer(
            200,
            {
                "self": f"{request.host_url}rest/api/3/project/{project.id}",
                "id": project.id,
                "key": project.key,
                "name": project.name,
                "projectTypeKey": "software",
                "issueTypes": project.issue_types,
            },
        )

    def _issue_types(self, key: str) -> Response:
        project = self._find_project(key)
        if project is None:
            return _errors(404, [f"No project could be found with key '{key}'."])
        types = project.issue_types if self.may_create else []
        return _page(types, "issueTypes", self.page_size)

    def _fields(self, key: str, type_id: str) -> Response:
        project = self._find_project(key)
        if project is None or not any(t["id"] == type_id for t in project.issue_types):
            return _errors(404, ["Issue type not found."])
        fields = [
            _meta("project", "Project", True),
            _meta("issuetype", "Issue Type", True),
            _meta("summary", "Summary", True),
            _meta("description", "Description", False),
            _meta("reporter", "Reporter", True, default=True),
        ]
        if project.labels_on_screen:
            fields.append(_meta("labels", "Labels", False))
        fields += [
            _meta(f"customfield_{10100 + i}", name, True)
            for i, name in enumerate(project.required.get(type_id, []))
        ]
        return _page(fields, "fields", self.page_size)

    def _create(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return _errors(400, ["Can not deserialize the request: no fields"])
        with self.lock:
            self.created.append(body)
        fields = body["fields"]
        project = self._find_project(
            str(_dig(fields, "project", "key") or _dig(fields, "project", "id"))
        )
        problems = _field_problems(fields, project)
        if problems:
            return _errors(400, [], problems)
        assert project is not None
        with self.lock:
            number = sum(1 for k in self.issues if k.startswith(project.key + "-")) + 1
            issue = JiraIssue(str(20000 + len(self.issues)), f"{project.key}-{number}", fields)
            self.issues[issue.key] = issue
        return _answer(
            201,
            {
                "id": issue.id,
                "key": issue.key,
                "self": f"{request.host_url}rest/api/3/issue/{issue.id}",
            },
        )

    def _issue(self, key: str) -> Response:
        issue = self.issues.get(key.upper())
        if issue is None:
            return _errors(404, [NO_ISSUE])
        shown = {
            "summary": issue.fields.get("summary", ""),
            "status": {
                "name": issue.status,
                "id": "10000",
                "statusCategory": {"key": "new", "name": "To Do", "colorName": "blue-gray"},
            },
            "assignee": (
                {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": issue.assignee}
                if issue.assignee
                else None
            ),
            "resolution": {"id": "10000", "name": issue.resolution} if issue.resolution else None,
            "updated": issue.updated,
            "labels": issue.fields.get("labels", []),
        }
        wanted = request.args.get("fields", "")
        if wanted:
            shown = {k: v for k, v in shown.items() if k in wanted.split(",")}
        return _answer(
            200,
            {
                "id": issue.id,
                "key": issue.key,
                "self": f"{request.host_url}rest/api/3/issue/{issue.id}",
                "fields": shown,
            },
        )


def _field_problems(fields: dict[str, Any], project: JiraProject | None) -> dict[str, str]:
    """What Jira's create would refuse, field by field."""
    if project is None:
        return {"project": "Specify a valid project ID or key"}
    wanted = (_dig(fields, "issuetype", "id"), _dig(fields, "issuetype", "name"))
    kind = next(
        (t for t in project.issue_types if t["id"] == wanted[0] or t["name"] == wanted[1]), None
    )
    if kind is None:
        return {"issuetype": "Specify a valid issue type"}
    problems = {**_summary_problems(fields.get("summary")), **_label_problems(fields, project)}
    if "description" in fields and not _is_adf(fields["description"]):
        problems["description"] = NOT_ADF
    elif len(json.dumps(fields.get("description"), ensure_ascii=False)) > 32767:
        problems["description"] = (
            "The entered text is too long. It exceeds the allowed limit of 32,767 characters."
        )
    for i, name in enumerate(project.required.get(kind["id"], [])):
        if f"customfield_{10100 + i}" not in fields:
            problems[f"customfield_{10100 + i}"] = f"{name} is required."
    return problems


def _summary_problems(summary: Any) -> dict[str, str]:
    if not isinstance(summary, str) or not summary.strip():
        return {"summary": "You must specify a summary of the issue."}
    if len(summary) >= 255:
        return {"summary": "Summary must be less than 255 characters."}
    if "\n" in summary or "\r" in summary:
        return {"summary": "The summary is invalid because it contains newline characters."}
    return {}


def _label_problems(fields: dict[str, Any], project: JiraProject) -> dict[str, str]:
    labels = fields.get("labels", [])
    if labels and not project.labels_on_screen:
        return {"labels": NOT_ON_SCREEN}
    for label in labels:
        if not isinstance(label, str) or not label or any(c.isspace() for c in label):
            return {"labels": f"The label '{label}' contains spaces which is invalid."}
    return {}


def _is_adf(doc: Any) -> bool:
    """A document of paragraphs holding text (non-empty, maybe link-marked) and hardBreaks."""
    if not isinstance(doc, dict) or doc.get("version") != 1 or doc.get("type") != "doc":
        return False
    blocks = doc.get("content")
    if not isinstance(blocks, list):
        return False
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "paragraph":
            return False
        inline = block.get("content", [])
        if not isinstance(inline, list) or not all(_is_inline(node) for node in inline):
            return False
    return True


def _is_inline(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "hardBreak":
        return True
    if node.get("type") != "text" or not isinstance(node.get("text"), str) or not node["text"]:
        return False
    for mark in node.get("marks", []):
        if mark.get("type") == "link" and not isinstance(_dig(mark, "attrs", "href"), str):
            return False
    return True


def _meta(field_id: str, name: str, required: bool, default: bool = False) -> dict[str, Any]:
    return {
        "fieldId": field_id,
        "key": field_id,
        "name": name,
        "required": required,
        "hasDefaultValue": default,
        "operations": ["set"],
    }


def _page(entries: list[Any], key: str, size: int) -> Response:
    start = int(request.args.get("startAt", "0"))
    size = min(size, int(request.args.get("maxResults", str(size))))
    return _answer(
        200,
        {
            "startAt": start,
            "maxResults": size,
            "total": len(entries),
            key: entries[start : start + size],
        },
    )


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _errors(status: int, messages: list[str], errors: dict[str, str] | None = None) -> Response:
    return _answer(status, {"errorMessages": messages, "errors": errors or {}})


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, dict | list):
        return Response(
            json.dumps(body), status, headers, content_type="application/json;charset=UTF-8"
        )
    return Response(body, status, headers, content_type="text/plain;charset=UTF-8")
