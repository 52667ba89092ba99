"""GitHub issues from Request Push and webhooks (``backend = "github"``).

GitHub's REST API with a token (``Authorization: Bearer``, ``Accept:
application/vnd.github+json``, ``X-GitHub-Api-Version``), on github.com or,
with ``api_url = "https://HOST/api/v3"``, on GitHub Enterprise Server. A push,
or a webhook from an automation rule, creates an issue in ``repository``
(``POST /repos/OWNER/REPO/issues``) with a title and body from templates and
the configured labels; the push id is the issue number.

The body is Markdown: every value HelpSpot sent goes into it as literal text
(see :mod:`.markdown`), while the template's own text stays Markdown.

Details show the issue's state, assignees and its last comment (the last page
of ``.../issues/N/comments``). Rate limits (403 or 429 with
``x-ratelimit-remaining: 0`` or ``retry-after``) are waited out when the wait
fits the timeout.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    NotFound,
    PushDetails,
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

from ..http_client import (
    AbortableSession,
    Deadline,
    answer_excerpt,
    blank_out,
    dig,
    json_body,
    retry_after_seconds,
    text_of,
    unencrypted_host,
)
from ..issue_tracker import (
    CreatedIssues,
    cut,
    one_line,
    render,
    send_waiting,
    title_of,
)
from ..state_store import store_path
from .markdown import markdown_context

VENDOR = "GitHub"
API_VERSION = "2022-11-28"
MAX_TITLE = 256
MAX_BODY = 65_536
#: Of a comment shown in the details, and of an error message from GitHub.
MAX_SHOWN = 500
MAX_SAID = 300
#: Comments a page holds at most.
PER_PAGE = 100
#: GitHub asks for at least a minute after a secondary rate limit without retry-after.
SECONDARY_WAIT = 60.0
ISSUE_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
REPOSITORY = re.compile(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}")
_LINK = re.compile(r'<([^>]+)>;\s*rel="([a-z]+)"')

DEFAULT_TITLE = "{% if sTitle %}{{ sTitle }}{% else %}HelpSpot request {{ request_id }}{% endif %}"
DEFAULT_BODY = """{{ first_note }}
{%- if staff_comment %}

{{ staff or "Staff" }}: {{ staff_comment }}
{%- endif %}

HelpSpot request {{ request_id }}{% if request_url %}: {{ request_url }}{% endif %}"""


@dataclass(frozen=True)
class GitHubOptions:
    """The ``[targets.NAME]`` keys of a github target."""

    #: ``OWNER/NAME`` of the repository the issues go to.
    repository: str
    token: Secret
    #: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server.
    api_url: str = "https://api.github.com"
    title: str = DEFAULT_TITLE
    body: str = DEFAULT_BODY
    labels: tuple[str, ...] = ()
    #: Which webhook created which issue; default: the user's state folder.
    store: StoreLocation | None = None
    #: GitHub rejects requests without a User-Agent.
    user_agent: str = "lookup-server (HelpSpot integration)"


class GitHubTarget(TargetBackend[GitHubOptions]):
    """Creates GitHub issues from pushes and webhooks; details show their state."""

    Options = GitHubOptions

    def __init__(self, options: GitHubOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.api = options.api_url.rstrip("/")
        self.repo = options.repository
        self.created = CreatedIssues(
            options.store or StoreLocation(path=store_path("webhooks", target.name)),
            target.name,
            VENDOR,
            attempt_seconds=target.timeout,
        )
        self._title = TextTemplate(options.title)
        self._body = TextTemplate(options.body)
        self._session = AbortableSession()
        self._session.headers.update(
            {
                "Authorization": f"Bearer {options.token.reveal()}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": options.user_agent,
            }
        )

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The repository must be OWNER/NAME, api_url an http(s) address; templates compile."""
        problems = []
        if not REPOSITORY.fullmatch(options.repository):
            problems.append(("repository", "must be OWNER/NAME, e.g. example/helpdesk"))
        parts = urlsplit(options.api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                ("api_url", "must be https://api.github.com or, on a server, https://HOST/api/v3")
            )
        for key in ("title", "body"):
            problem = template_problem(getattr(options, key))
            if problem:
                problems.append((key, problem))
        for label in options.labels:
            if not label.strip():
                problems.append(("labels", "must not hold an empty label"))
        return problems

    def close(self) -> None:
        """Close the HTTP session and the webhook record's connections."""
        self._session.close()
        self.created.close()

    # -- capabilities --------------------------------------------------------------

    def push(self, request: PushRequest) -> str:
        """Create the issue; its number is the push id."""
        return self._create(request.data)

    def deliver(self, webhook: Webhook) -> None:
        """Create the webhook's issue, unless an earlier delivery of it did."""
        self.created.create_once(webhook, lambda: self._create(webhook.payload))

    def details(self, push_id: str) -> PushDetails:
        """The issue's title, state, assignees and last comment."""
        if not ISSUE_NUMBER.fullmatch(push_id):
            raise NotFound(f"{push_id[:80]!r} is not a GitHub issue number")
        deadline = Deadline(self.target.timeout)
        response = self._call("GET", f"{self._repo_path()}/issues/{push_id}", deadline)
        if response.status_code == 301:  # transferred to another repository
            response = self._follow(response, deadline)
        if response.status_code in (404, 410):
            raise NotFound(
                f"GitHub has no issue #{push_id} in {self.repo} any more (HTTP "
                f"{response.status_code}: deleted, moved out of reach, or issues turned off)"
            )
        if response.status_code != 200:
            raise self._failure(response, "show the issue")
        issue = json_body(response, VENDOR)
        comment = self._last_comment(issue, deadline)
        rows = [
            ("State", _state(issue)),
            ("Assignees", _logins(dig(issue, "assignees")) or "nobody"),
            ("Updated", text_of(dig(issue, "updated_at")).replace("T", " ").replace("Z", " UTC")),
        ]
        if comment is not None:
            who = text_of(dig(comment, "user", "login")) or "someone"
            when = text_of(dig(comment, "created_at"))[:10]
            rows.append(
                (f"Last comment, {who}, {when}", cut(text_of(dig(comment, "body")), MAX_SHOWN))
            )
        number = text_of(dig(issue, "number")) or push_id
        return PushDetails(
            title=f"#{number} {text_of(dig(issue, 'title'))}".strip(),
            rows=tuple(rows),
            link=text_of(dig(issue, "html_url")),
        )

    def check(self) -> list[str]:
        """Prove the token and the repository, and that issues can be opened, creating nothing."""
        self.created.count()
        response = self._call("GET", self._repo_path(), Deadline(self.target.timeout))
        if response.status_code == 404:
            raise BackendError(
                f"GitHub has no repository {self.repo}, or the token cannot see it; check "
                "repository and the token's access"
            )
        if response.status_code != 200:
            raise self._failure(response, "read the repository")
        repo = json_body(response, VENDOR)
        if dig(repo, "has_issues") is False:
            raise BackendError(f"issues are turned off in {self.repo} (Settings > Features)")
        if dig(repo, "archived") is True:
            raise BackendError(f"{self.repo} is archived: no issue can be opened in it")
        return self._access_warnings(repo, response.headers.get("X-OAuth-Scopes"))

    # -- creating an issue ------------------------------------------------------------

    def _create(self, data: Any) -> str:
        context = request_context(data, self.target.helpspot_url)
        body: dict[str, Any] = {
            "title": title_of(self._title, context, "title", MAX_TITLE),
            "body": cut(render(self._body, markdown_context(context), "body"), MAX_BODY),
        }
        if self.options.labels:
            body["labels"] = list(self.options.labels)
        deadline = Deadline(self.target.timeout)
        response = self._call("POST", f"{self._repo_path()}/issues", deadline, json=body)
        if response.status_code != 201:
            raise self._failure(response, "create the issue")
        number = dig(json_body(response, VENDOR), "number")
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise BackendError("GitHub created an issue but its answer holds no issue number")
        return str(number)

    # -- details -----------------------------------------------------------------------

    def _last_comment(self, issue: Any, deadline: Deadline) -> Any:
        """The newest comment: on the last page of the comments, oldest first."""
        count = dig(issue, "comments")
        if not isinstance(count, int) or count <= 0:
            return None
        path = f"{self._repo_path()}/issues/{text_of(dig(issue, 'number'))}/comments"
        url = text_of(dig(issue, "comments_url"))
        if url.startswith(self.api + "/"):  # where a transferred issue's comments are now
            path = url[len(self.api) :]
        page = math.ceil(count / PER_PAGE)  # the count may be stale: Link tells the truth
        comments, last = self._comments(path, page, deadline)
        if not comments and page > 1:  # some were deleted: past the end now
            page = 1
            comments, last = self._comments(path, page, deadline)
        if last is not None and last > page:  # more were added meanwhile
            comments, _ = self._comments(path, last, deadline)
        return comments[-1] if comments else None

    def _comments(self, path: str, page: int, deadline: Deadline) -> tuple[list[Any], int | None]:
        """One page of comments, and the number of the last page (Link rel="last")."""
        params = {"per_page": str(PER_PAGE), "page": str(page)}
        response = self._call("GET", path, deadline, params=params)
        if response.status_code != 200:
            raise self._failure(response, "read the issue's comments")
        comments = json_body(response, VENDOR)
        if not isinstance(comments, list):
            raise BackendError("GitHub sent the issue's comments in an unexpected shape")
        return comments, _last_page(response.headers.get("Link", ""))

    def _follow(self, response: requests.Response, deadline: Deadline) -> requests.Response:
        """The answer at a 301's Location: on this API only, where the token may go."""
        location = response.headers.get("Location", "")
        if not location.startswith(self.api + "/"):
            raise BackendError(f"GitHub moved the issue somewhere other than {self.api}")
        return self._call("GET", location[len(self.api) :], deadline)

    # -- check ---------------------------------------------------------------------------

    def _access_warnings(self, repo: Any, scopes_header: str | None) -> list[str]:
        warnings = []
        private = dig(repo, "private") is True
        if scopes_header is not None:  # a classic token: its scopes are known
            scopes = {s.strip() for s in scopes_header.split(",")}
            if "repo" not in scopes and (private or "public_repo" not in scopes):
                needed = "repo" if private else "public_repo (or repo)"
                raise BackendError(f"the token lacks the {needed} scope: it cannot open issues")
        else:
            warnings.append(
                "GitHub does not show what a fine-grained or app token may do: make sure it "
                f"has Issues: Read and write on {self.repo}"
            )
        permissions = dig(repo, "permissions")
        if not isinstance(permissions, dict):
            warnings.append("GitHub did not say what the token's user may do in the repository")
        elif self.options.labels and not any(
            permissions.get(p) is True for p in ("push", "maintain", "admin")
        ):
            warnings.append(
                "labels: the token's user has no push access to "
                f"{self.repo}, so GitHub silently drops the labels"
            )
        if not private:
            warnings.append(
                f"{self.repo} is public: anyone can read its issues, all the templates put in"
            )
        if unencrypted_host(self.api):
            warnings.append(f"api_url: the token goes to {self.api} unencrypted (http://)")
        return warnings

    # -- HTTP ------------------------------------------------------------------------

    def _repo_path(self) -> str:
        owner, _, name = self.repo.partition("/")
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def _call(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        return send_waiting(
            self._session,
            method,
            self.api + path,
            deadline,
            vendor=VENDOR,
            wait_of=rate_limit_wait,
            **kwargs,
        )

    def _failure(self, response: requests.Response, doing: str) -> DeliveryFailed:
        """What went wrong, for staff and for the outbox (status, answer without the token)."""
        status = response.status_code
        answer = _json_or_none(response)
        said = self._said(answer)
        wait = rate_limit_wait(response)
        if status == 401:
            message = "GitHub rejected the token (HTTP 401); check token (expired or revoked?)"
        elif wait is not None:
            message = (
                f"GitHub is rate-limiting this token (HTTP {status}) and asks to wait "
                f"{wait:.0f} s; the push or webhook can be tried again then"
            )
        elif status == 403:
            needs = response.headers.get("X-Accepted-GitHub-Permissions", "")
            hint = f"; it needs {one_line(needs, 80)}" if needs else ""
            message = f"GitHub does not let the token {doing} (HTTP 403){said}{hint}"
        elif status == 404:
            message = (
                f"GitHub has no repository {self.repo}, or the token cannot see it (HTTP 404); "
                "check repository and the token's access"
            )
        elif status == 410:
            message = f"issues are turned off in {self.repo} (HTTP 410)"
        elif status == 422:
            message = f"GitHub refused the issue (HTTP 422){said}"
        elif status >= 500:
            message = f"GitHub is having problems (HTTP {status}); try again later"
        elif 300 <= status < 400:
            message = (
                f"GitHub answered {self.repo} with a redirect (HTTP {status}): was it renamed "
                "or moved? Set repository to its current OWNER/NAME"
            )
        else:
            message = f"GitHub refused to {doing} (HTTP {status}){said}"
        token = self.options.token.reveal()
        return DeliveryFailed(message, status=status, answer=answer_excerpt(response, [token]))

    def _said(self, answer: Any) -> str:
        """GitHub's ``message`` and each of its ``errors``, after ": " ("" when none)."""
        said = [text_of(dig(answer, "message"))]
        errors = dig(answer, "errors")
        for error in errors if isinstance(errors, list) else []:
            if isinstance(error, dict):
                detail = text_of(error.get("message")) or text_of(error.get("code"))
                field = text_of(error.get("field"))
                said.append(f"{field}: {detail}" if field else detail)
            else:
                said.append(text_of(error))
        text = blank_out("; ".join(s for s in said if s), [self.options.token.reveal()])
        return f": {one_line(text, MAX_SAID)}" if text else ""


def rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds GitHub asks to wait before the next request, or None (not a rate limit).

    From "Rate limits for the REST API": 403 or 429 with ``retry-after``, or
    with ``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset``; a
    secondary limit without either means a minute.
    """
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    if "retry-after" in headers:
        return retry_after_seconds(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers.get("x-ratelimit-reset", "")) - time.time())
        except ValueError:
            return SECONDARY_WAIT
    message = text_of(dig(_json_or_none(response), "message")).lower()
    if response.status_code == 429 or "rate limit" in message:
        return SECONDARY_WAIT
    return None


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _last_page(link: str) -> int | None:
    for url, rel in _LINK.findall(link):
        if rel == "last":
            pages = parse_qs(urlsplit(url).query).get("page", [])
            return int(pages[0]) if pages and pages[0].isdigit() else None
    return None


def _state(issue: Any) -> str:
    state = text_of(dig(issue, "state")) or "unknown"
    reason = text_of(dig(issue, "state_reason")).replace("_", " ")
    return f"{state} ({reason})" if state == "closed" and reason else state


def _logins(users: Any) -> str:
    return ", ".join(text_of(dig(u, "login")) for u in users) if isinstance(users, list) else ""
