"""Jira Cloud issues from Request Push and webhooks (``backend = "jira"``).

Jira's REST API v3, with HTTP Basic: the account's e-mail address and an API
token. A push, or a webhook from an automation rule, creates an issue of
``issue_type`` in ``project`` (``POST /rest/api/3/issue``); the push id is the
issue key (``HS-12``). Its summary and description come from templates
(README, "Templates").

Why v3 rather than v2's plain-string description: v2 reads that string as
Jira wiki markup, so a customer's ``{code}``, ``[label|url]`` or ``*text*``
would turn into markup. v3 takes Atlassian Document Format, whose text nodes
are literal: the rendered text goes in as it is, a paragraph per blank-line
block and its line breaks kept, and the link back to the request
(``request_url``) becomes a link mark.

Details read the issue's summary, status, assignee, resolution and last
update (``GET /rest/api/3/issue/KEY?fields=...``). Rate limits (429, and 503
with ``Retry-After``) are waited out when the wait fits the timeout.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

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
    render,
    send_waiting,
    title_of,
)
from ..state_store import store_path
from .adf import description_adf

VENDOR = "Jira"
#: Jira refuses a summary of 255 characters or more ("must be less than 255").
MAX_SUMMARY = 254
#: Of an error message from Jira, enough for staff to act on.
MAX_SAID = 300
#: Pages of create metadata read by check() (50 entries a page).
MAX_META_PAGES = 10
#: Fields lookup-server fills, or Jira fills itself, when it creates an issue.
FILLED_FIELDS = frozenset({"project", "issuetype", "summary", "description", "labels", "reporter"})
ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]*-[1-9][0-9]{0,17}", re.IGNORECASE)
PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]*|[0-9]+", re.IGNORECASE)
#: X-Seraph-LoginReason values meaning the credentials were not even checked or failed.
LOGIN_FAILED = ("AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED")

DEFAULT_SUMMARY = (
    "{% if sTitle %}{{ sTitle }}{% else %}HelpSpot request {{ request_id }}{% endif %}"
)
DEFAULT_DESCRIPTION = """{{ first_note }}
{%- if staff_comment %}

{{ staff or "Staff" }}: {{ staff_comment }}
{%- endif %}

Customer: {{ customer or "unknown" }}
{%- if sEmail and sEmail != customer %} ({{ sEmail }}){% endif %}
{%- if sPhone %}, {{ sPhone }}{% endif %}
HelpSpot request {{ request_id }}{% if request_url %}: {{ request_url }}{% endif %}"""


@dataclass(frozen=True)
class JiraOptions:
    """The ``[targets.NAME]`` keys of a jira target."""

    #: The site, https://NAME.atlassian.net.
    url: str
    #: The Atlassian account the API token belongs to.
    email: str
    token: Secret
    #: The project's key (or id) the issues go to.
    project: str
    #: The issue type's name (or id) in that project.
    issue_type: str = "Task"
    summary: str = DEFAULT_SUMMARY
    description: str = DEFAULT_DESCRIPTION
    #: Labels every issue gets (Jira labels hold no spaces).
    labels: tuple[str, ...] = ()
    #: Which webhook created which issue; default: the user's state folder.
    store: StoreLocation | None = None


class JiraTarget(TargetBackend[JiraOptions]):
    """Creates Jira issues from pushes and webhooks; details show their status."""

    Options = JiraOptions

    def __init__(self, options: JiraOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.site = options.url.rstrip("/")
        self.created = CreatedIssues(
            options.store or StoreLocation(path=store_path("webhooks", target.name)),
            target.name,
            VENDOR,
            attempt_seconds=target.timeout,
        )
        self._summary = TextTemplate(options.summary)
        self._description = TextTemplate(options.description)
        self._session = AbortableSession()
        self._session.auth = (options.email, options.token.reveal())
        self._session.headers["Accept"] = "application/json"
        basic = f"{options.email}:{options.token.reveal()}".encode()
        # an error page may echo the request's headers: the token, or all of Basic
        self._hidden = [options.token.reveal(), base64.b64encode(basic).decode()]

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The site must be an http(s) address, the project a key; templates must compile."""
        problems = []
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(("url", "must be the site's address, https://NAME.atlassian.net"))
        if "@" not in options.email:
            problems.append(
                ("email", "must be the e-mail address of the token's Atlassian account")
            )
        if not PROJECT_KEY.fullmatch(options.project):
            problems.append(("project", "must be the project's key (e.g. HS) or id"))
        if not options.issue_type.strip():
            problems.append(("issue_type", "must name an issue type of the project, e.g. Task"))
        for key in ("summary", "description"):
            problem = template_problem(getattr(options, key))
            if problem:
                problems.append((key, problem))
        for label in options.labels:
            if not label or any(c.isspace() for c in label):
                problems.append(("labels", f"{label!r} is not a word: Jira labels hold no spaces"))
        return problems

    def close(self) -> None:
        """Close the HTTP session and the webhook record's connections."""
        self._session.close()
        self.created.close()

    # -- capabilities --------------------------------------------------------------

    def push(self, request: PushRequest) -> str:
        """Create the issue; its key is the push id."""
        return self._create(request.data)

    def deliver(self, webhook: Webhook) -> None:
        """Create the webhook's issue, unless an earlier delivery of it did."""
        self.created.create_once(webhook, lambda: self._create(webhook.payload))

    def details(self, push_id: str) -> PushDetails:
        """The issue's summary, status, assignee, resolution and last update."""
        if not ISSUE_KEY.fullmatch(push_id):
            raise NotFound(f"{push_id[:80]!r} is not a Jira issue key")
        response = self._call(
            "GET",
            f"/rest/api/3/issue/{quote(push_id, safe='')}",
            Deadline(self.target.timeout),
            params={"fields": "summary,status,assignee,resolution,updated"},
        )
        if response.status_code == 404:
            raise NotFound(f"Jira has no issue {push_id}, or {self.options.email} may not see it")
        if response.status_code != 200:
            raise self._failure(response, "show the issue")
        issue = json_body(response, VENDOR)
        key = text_of(dig(issue, "key")) or push_id
        fields = dig(issue, "fields")
        return PushDetails(
            title=f"{key}: {text_of(dig(fields, 'summary'))}".rstrip(": "),
            rows=(
                ("Status", text_of(dig(fields, "status", "name")) or "unknown"),
                ("Assignee", text_of(dig(fields, "assignee", "displayName")) or "Unassigned"),
                ("Resolution", text_of(dig(fields, "resolution", "name")) or "Unresolved"),
                ("Updated", _when(text_of(dig(fields, "updated")))),
            ),
            link=f"{self.site}/browse/{quote(key, safe='')}",
        )

    def check(self) -> list[str]:
        """Prove the account, the project and the issue type, creating nothing."""
        self.created.count()
        deadline = Deadline(self.target.timeout)
        me = self._read("/rest/api/3/myself", deadline, "read its own account")
        if me is None:
            raise BackendError(f"{self.site} has no Jira Cloud REST API v3; check url")
        if dig(me, "active") is False:
            raise BackendError(f"the Jira account {self.options.email} is deactivated")
        project = quote(self.options.project, safe="")
        if self._read(f"/rest/api/3/project/{project}", deadline, "read the project") is None:
            raise BackendError(
                f"Jira has no project {self.options.project}, or {self.options.email} may "
                "not see it; check project"
            )
        issue_type = self._issue_type(deadline)
        fields = self._pages(
            f"/rest/api/3/issue/createmeta/{project}/issuetypes/{quote(issue_type, safe='')}",
            "fields",
            deadline,
        )
        return self._field_warnings(fields)

    # -- creating an issue ------------------------------------------------------------

    def _create(self, data: Any) -> str:
        context = request_context(data, self.target.helpspot_url)
        fields: dict[str, Any] = {
            "project": _by_key_or_id(self.options.project, "key"),
            "issuetype": _by_key_or_id(self.options.issue_type, "name"),
            "summary": title_of(self._summary, context, "summary", MAX_SUMMARY),
            "description": description_adf(
                render(self._description, context, "description"), context["request_url"]
            ),
        }
        if self.options.labels:
            fields["labels"] = list(self.options.labels)
        deadline = Deadline(self.target.timeout)
        response = self._call("POST", "/rest/api/3/issue", deadline, json={"fields": fields})
        if response.status_code != 201:
            raise self._failure(response, "create the issue")
        key = text_of(dig(json_body(response, VENDOR), "key"))
        if not ISSUE_KEY.fullmatch(key):
            raise BackendError("Jira created an issue but its answer holds no issue key")
        return key

    # -- check ---------------------------------------------------------------------------

    def _issue_type(self, deadline: Deadline) -> str:
        """The id of the configured issue type, among those the account may create."""
        project = quote(self.options.project, safe="")
        types = self._pages(
            f"/rest/api/3/issue/createmeta/{project}/issuetypes", "issueTypes", deadline
        )
        if not types:
            raise BackendError(
                f"{self.options.email} may not create issues in {self.options.project} "
                "(Jira's Create issues permission)"
            )
        wanted = self.options.issue_type
        for kind in types:
            if wanted in (text_of(dig(kind, "name")), text_of(dig(kind, "id"))):
                return text_of(dig(kind, "id"))
        names = ", ".join(sorted(text_of(dig(kind, "name")) for kind in types))
        raise BackendError(
            f"project {self.options.project} has no issue type {wanted!r} "
            f"({names[:200]}); check issue_type"
        )

    def _field_warnings(self, fields: list[Any]) -> list[str]:
        ids = {text_of(dig(f, "fieldId")) for f in fields}
        warnings = [
            f"issue_type {self.options.issue_type!r} requires {text_of(dig(f, 'name'))!r}, "
            "which lookup-server does not fill: Jira will refuse every issue"
            for f in fields
            if dig(f, "required") is True
            and dig(f, "hasDefaultValue") is not True
            and text_of(dig(f, "fieldId")) not in FILLED_FIELDS
        ]
        if "description" not in ids:
            warnings.append("the create screen has no description: Jira will refuse every issue")
        if self.options.labels and "labels" not in ids:
            warnings.append("labels: the create screen has no Labels field; Jira will refuse them")
        if unencrypted_host(self.site):
            warnings.append(f"url: the API token goes to {self.site} unencrypted (http://)")
        return warnings

    def _read(self, path: str, deadline: Deadline, doing: str) -> Any:
        """The JSON at ``path``; None for a 404."""
        response = self._call("GET", path, deadline)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._failure(response, doing)
        return json_body(response, VENDOR)

    def _pages(self, path: str, key: str, deadline: Deadline) -> list[Any]:
        """Every entry of a paged ``{startAt, maxResults, total, KEY: [...]}`` answer."""
        found: list[Any] = []
        for _ in range(MAX_META_PAGES):
            page = self._read(path + f"?startAt={len(found)}", deadline, "read the create metadata")
            entries = dig(page, key)
            if not isinstance(entries, list):
                raise BackendError(f"Jira answered {path} without {key}; check url")
            found += entries
            total = dig(page, "total")
            if not entries or not isinstance(total, int) or len(found) >= total:
                break
        return found

    # -- HTTP ------------------------------------------------------------------------

    def _call(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        response = send_waiting(
            self._session,
            method,
            self.site + path,
            deadline,
            vendor=VENDOR,
            wait_of=_rate_limit_wait,
            **kwargs,
        )
        if response.headers.get("X-Seraph-LoginReason", "") in LOGIN_FAILED:
            raise self._failure(response, "log in")
        return response

    def _failure(self, response: requests.Response, doing: str) -> DeliveryFailed:
        """What went wrong, for staff and for the outbox (status, answer without the token)."""
        status = response.status_code
        reason = response.headers.get("X-Seraph-LoginReason", "")
        said = self._said(response)
        email = self.options.email
        if reason == "AUTHENTICATION_DENIED":
            message = (
                f"Jira wants a CAPTCHA answered for {email} after failed logins (HTTP {status}); "
                "log in once in a browser, then check token"
            )
        elif status == 401 or reason == "AUTHENTICATED_FAILED":
            message = (
                f"Jira rejected the e-mail address and API token (HTTP {status}); check email "
                "and token (id.atlassian.com > Security > API tokens)"
            )
        elif status == 403:
            message = f"Jira does not let {email} {doing} (HTTP 403){said}; check its permissions"
        elif status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            message = (
                f"Jira is rate-limiting requests (HTTP 429; wait {wait:.0f} s); try again shortly"
            )
        elif status >= 500:
            message = f"Jira is having problems (HTTP {status}){said}; try again later"
        elif 300 <= status < 400:
            message = (
                f"Jira redirected the request (HTTP {status}); set url to the site's "
                "address, https://NAME.atlassian.net"
            )
        elif status == 404:
            message = f"Jira found nothing at {self.site} to {doing} (HTTP 404); check url"
        else:
            message = f"Jira refused to {doing} (HTTP {status}){said}"
        return DeliveryFailed(message, status=status, answer=answer_excerpt(response, self._hidden))

    def _said(self, response: requests.Response) -> str:
        """Jira's own messages (``errorMessages``, ``errors``) after ": " ("" when none)."""
        try:
            answer = response.json()
        except ValueError:
            return ""
        messages = dig(answer, "errorMessages")
        errors = dig(answer, "errors")
        said = [text_of(m) for m in messages] if isinstance(messages, list) else []
        if isinstance(errors, dict):
            said += [f"{field}: {text_of(message)}" for field, message in errors.items()]
        text = blank_out("; ".join(s for s in said if s), self._hidden)
        return f": {' '.join(text.split())[:MAX_SAID]}" if text else ""


def _rate_limit_wait(response: requests.Response) -> float | None:
    """Seconds Jira asks to wait: 429, or a 503 with Retry-After (rate limiting guide)."""
    if response.status_code == 429 or (
        response.status_code == 503 and "Retry-After" in response.headers
    ):
        return retry_after_seconds(response.headers.get("Retry-After"))
    return None


def _by_key_or_id(value: str, name: str) -> dict[str, str]:
    return {"id": value} if value.isdigit() else {name: value}


def _when(value: str) -> str:
    """Jira's ``2026-03-01T10:00:00.000+0000`` as ``2026-03-01 10:00 UTC``."""
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return value
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
