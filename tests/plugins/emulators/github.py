"""A GitHub REST API stand-in: repositories, issues and their comments, rate limits.

Shapes, from GitHub's REST reference (docs.github.com/rest, the
github/rest-api-description OpenAPI and github/docs):

* Authentication: ``Authorization: Bearer TOKEN``; a wrong token is 401
  ``{"message": "Bad credentials", "documentation_url", "status": "401"}``.
  A request without ``User-Agent`` is refused ("Troubleshooting the REST
  API"), an unknown ``X-GitHub-Api-Version`` is a 400 ("API versions").
  Classic tokens' answers carry ``X-OAuth-Scopes`` ("Scopes for OAuth
  apps"); fine-grained tokens' do not.
* "Get a repository", ``GET /repos/{owner}/{repo}``: ``full_name``,
  ``private``, ``has_issues``, ``archived`` and, for an authenticated caller,
  ``permissions`` (``admin``, ``maintain``, ``push``, ``triage``, ``pull``).
* "Create an issue", ``POST /repos/{owner}/{repo}/issues``: 201 and the issue
  (``number``, ``html_url``, ``state``, ``comments``, ``comments_url``, ...)
  with ``Location``; 410 when issues are disabled; labels silently dropped
  without push access; 422 ``{"message": "Validation Failed", "errors":
  [{"resource", "field", "code", "message"}]}`` for a missing title or a
  title over 256 or a body over 65536 characters (the wording quoted in
  DavyJonesLocker/party_foul#122 and peter-evans/create-issue-from-file#1705);
  403 "Repository was archived so is read-only."
* "Get an issue", ``GET /repos/{owner}/{repo}/issues/{n}``: 200; 301 to
  ``/repositories/{id}/issues/{n}`` when transferred; 404; 410 when deleted.
* "List issue comments", ``GET .../issues/{n}/comments`` with ``per_page``
  (default 30, at most 100) and ``page``, oldest first, and a ``Link`` header
  with ``prev``, ``next``, ``first`` and ``last`` ("Using pagination").
* Rate limits ("Rate limits for the REST API"): every answer carries
  ``x-ratelimit-limit``, ``-remaining``, ``-used``, ``-reset`` (epoch seconds)
  and ``-resource``; a primary limit is 403 with ``x-ratelimit-remaining: 0``,
  a secondary one 403 or 429 "You have exceeded a secondary rate limit" with
  ``retry-after`` (scripted with :meth:`GitHubEmulator.fail_next`).

GitHub Enterprise Server serves the same under ``/api/v3`` (``prefix``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.plugins.emulators import Scripted

DOCS = "https://docs.github.com/rest"
VERSIONS = ("2022-11-28", "2026-03-10")


@dataclass
class GitHubIssue:
    """One stored issue and its comments, oldest first."""

    number: int
    title: str
    body: str
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    state_reason: str | None = None
    assignees: list[str] = field(default_factory=list)
    #: (login, created_at, body)
    comments: list[tuple[str, str, str]] = field(default_factory=list)
    #: set when transferred: (repository full name, its number there)
    moved_to: tuple[str, int] | None = None
    deleted: bool = False


@dataclass
class GitHubRepo:
    """One repository and what the token's user may do in it."""

    full_name: str
    id: int = 1296269
    private: bool = True
    has_issues: bool = True
    archived: bool = False
    permissions: dict[str, bool] = field(
        default_factory=lambda: {
            "admin": False,
            "maintain": False,
            "push": True,
            "triage": True,
            "pull": True,
        }
    )
    issues: dict[int, GitHubIssue] = field(default_factory=dict)


@dataclass
class GitHubEmulator:
    """One GitHub (or GitHub Enterprise Server, under ``prefix``)."""

    token: str
    repos: list[GitHubRepo] = field(default_factory=lambda: [GitHubRepo("example/helpdesk")])
    #: a classic token's scopes; None: a fine-grained token (no X-OAuth-Scopes)
    scopes: str | None = "repo"
    prefix: str = ""
    script: list[Scripted] = field(default_factory=list)
    #: (method, path, args) of every request
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
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

    def repo(self, full_name: str = "example/helpdesk") -> GitHubRepo:
        """The repository of that name."""
        return next(r for r in self.repos if r.full_name == full_name)

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("github-emulator")
        app.before_request(self._gate)
        app.after_request(self._rate_headers)
        p = self.prefix
        app.add_url_rule(f"{p}/repos/<owner>/<name>", "repo", self._repo)
        app.add_url_rule(
            f"{p}/repos/<owner>/<name>/issues", "create", self._create, methods=["POST"]
        )
        app.add_url_rule(f"{p}/repos/<owner>/<name>/issues/<int:number>", "issue", self._issue)
        app.add_url_rule(
            f"{p}/repositories/<int:repo_id>/issues/<int:number>", "by_id", self._issue_by_id
        )
        app.add_url_rule(
            f"{p}/repos/<owner>/<name>/issues/<int:number>/comments", "comments", self._comments
        )
        return app

    # -- requests ----------------------------------------------------------------------------

    def _gate(self) -> Response | None:
        with self.lock:
            self.seen.append((request.method, request.path, dict(request.args)))
            self.headers.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(
                401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}
            )
        if not request.headers.get("User-Agent"):
            return _json(403, {"message": "Request forbidden by administrative rules."})
        version = request.headers.get("X-GitHub-Api-Version", "2022-11-28")
        if version not in VERSIONS:
            return _json(400, {"message": f"Unsupported 'X-GitHub-Api-Version' header: {version}"})
        with self.lock:
            for i, scripted in enumerate(self.script):
                if scripted.path_contains in request.path:
                    del self.script[i]
                    if isinstance(scripted.body, dict | list):
                        return _json(scripted.status, scripted.body, scripted.headers)
                    return Response(scripted.body, scripted.status, scripted.headers)
        return None

    def _rate_headers(self, response: Response) -> Response:
        reset = str(int(time.time()) + 3600)
        for name, value in (
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-reset", reset),
            ("x-ratelimit-resource", "core"),
        ):
            response.headers.setdefault(name, value)
        if self.scopes is not None:
            response.headers.setdefault("X-OAuth-Scopes", self.scopes)
        return response

    def _find(self, owner: str, name: str) -> GitHubRepo | None:
        full = f"{owner}/{name}".lower()
        return next((r for r in self.repos if r.full_name.lower() == full), None)

    def _repo(self, owner: str, name: str) -> Response:
        repo = self._find(owner, name)
        if repo is None:
            return _not_found()
        return _json(
            200,
            {
                "id": repo.id,
                "name": repo.full_name.split("/")[1],
                "full_name": repo.full_name,
                "private": repo.private,
                "html_url": f"https://github.example/{repo.full_name}",
                "has_issues": repo.has_issues,
                "archived": repo.archived,
                "disabled": False,
                "open_issues_count": len(repo.issues),
                "permissions": repo.permissions,
            },
        )

    def _create(self, owner: str, name: str) -> Response:
        repo = self._find(owner, name)
        if repo is None:
            return _not_found()
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _json(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        with self.lock:
            self.created.append(body)
        if not repo.has_issues:
            return _json(
                410,
                {
                    "message": "Issues are disabled for this repo",
                    "documentation_url": DOCS,
                    "status": "410",
                },
            )
        if repo.archived:
            return _json(
                403,
                {
                    "message": "Repository was archived so is read-only.",
                    "documentation_url": DOCS,
                    "status": "403",
                },
            )
        errors = _validation_errors(body)
        if errors:
            return _json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": errors,
                    "documentation_url": DOCS,
                    "status": "422",
                },
            )
        labels = [str(label) for label in body.get("labels", [])]
        with self.lock:
            number = max([0, *repo.issues]) + 1
            issue = GitHubIssue(number, body["title"], str(body.get("body") or ""))
            if repo.permissions.get("push"):  # "silently dropped otherwise"
                issue.labels = labels
            repo.issues[number] = issue
        response = _json(201, self._issue_json(repo, issue))
        response.headers["Location"] = f"{self._api()}/repos/{repo.full_name}/issues/{number}"
        return response

    def _issue(self, owner: str, name: str, number: int) -> Response:
        repo = self._find(owner, name)
        issue = repo.issues.get(number) if repo is not None else None
        if repo is None or issue is None:
            return _not_found()
        if issue.deleted:
            return _json(
                410,
                {"message": "This issue was deleted", "documentation_url": DOCS, "status": "410"},
            )
        if issue.moved_to is not None:
            target = self.repo(issue.moved_to[0])
            location = f"{self._api()}/repositories/{target.id}/issues/{issue.moved_to[1]}"
            return _json(
                301,
                {"message": "Moved Permanently", "url": location, "documentation_url": DOCS},
                {"Location": location},
            )
        return _json(200, self._issue_json(repo, issue))

    def _issue_by_id(self, repo_id: int, number: int) -> Response:
        repo = next((r for r in self.repos if r.id == repo_id), None)
        issue = repo.issues.get(number) if repo is not None else None
        if repo is None or issue is None:
            return _not_found()
        return _json(200, self._issue_json(repo, issue))

    def _comments(self, owner: str, name: str, number: int) -> Response:
        repo = self._find(owner, name)
        issue = repo.issues.get(number) if repo is not None else None
        if repo is None or issue is None:
            return _not_found()
        per_page = min(100, int(request.args.get("per_page", "30")))
        page = max(1, int(request.args.get("page", "1")))
        shown = issue.comments[(page - 1) * per_page : page * per_page]
        answer = _json(
            200,
            [
                {
                    "id": 1000 + (page - 1) * per_page + i,
                    "user": {"login": login, "type": "User"},
                    "created_at": created,
                    "updated_at": created,
                    "body": text,
                    "html_url": f"https://github.example/{repo.full_name}/issues/{number}#issuecomment-{i}",
                }
                for i, (login, created, text) in enumerate(shown)
            ],
        )
        last = max(1, math.ceil(len(issue.comments) / per_page))
        if last > 1:
            answer.headers["Link"] = _link_header(
                f"{self._api()}/repositories/{repo.id}/issues/{number}/comments",
                page,
                last,
                per_page,
            )
        return answer

    def _api(self) -> str:
        return request.host_url.rstrip("/") + self.prefix

    def _issue_json(self, repo: GitHubRepo, issue: GitHubIssue) -> dict[str, Any]:
        api = f"{self._api()}/repos/{repo.full_name}/issues/{issue.number}"
        return {
            "id": 1_000_000 + issue.number,
            "number": issue.number,
            "url": api,
            "comments_url": f"{api}/comments",
            "html_url": f"https://github.example/{repo.full_name}/issues/{issue.number}",
            "title": issue.title,
            "body": issue.body,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "labels": [{"name": label} for label in issue.labels],
            "assignees": [{"login": login} for login in issue.assignees],
            "assignee": {"login": issue.assignees[0]} if issue.assignees else None,
            "comments": len(issue.comments),
            "created_at": "2026-03-01T10:00:00Z",
            "updated_at": "2026-03-02T11:30:00Z",
            "user": {"login": "helpspot-bot"},
        }


def _validation_errors(body: dict[str, Any]) -> list[dict[str, str]]:
    title = body.get("title")
    if not isinstance(title, str | int) or str(title) == "":
        return [{"resource": "Issue", "code": "missing_field", "field": "title"}]
    errors = []
    if len(str(title)) > 256:
        errors.append(
            {
                "resource": "Issue",
                "code": "custom",
                "field": "title",
                "message": "title is too long (maximum is 256 characters)",
            }
        )
    if len(str(body.get("body") or "")) > 65536:
        errors.append(
            {
                "resource": "Issue",
                "code": "custom",
                "field": "body",
                "message": "body is too long (maximum is 65536 characters)",
            }
        )
    labels = body.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        errors.append({"resource": "Label", "code": "invalid", "field": "name"})
    return errors


def _link_header(base: str, page: int, last: int, per_page: int) -> str:
    def url(n: int) -> str:
        return f"<{base}?per_page={per_page}&page={n}>"

    links = []
    if page > 1:
        links.append(f'{url(page - 1)}; rel="prev"')
    if page < last:
        links.append(f'{url(page + 1)}; rel="next"')
        links.append(f'{url(last)}; rel="last"')
    if page > 1:
        links.append(f'{url(1)}; rel="first"')
    return ", ".join(links)


def _not_found() -> Response:
    return _json(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status, headers, content_type="application/json; charset=utf-8"
    )
