"""The github target (Request Push, details, webhooks) against the GitHub emulator."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.github.markdown import markdown_text
from lookup_plugins.github.target import DEFAULT_BODY, GitHubOptions, GitHubTarget

from lookup_server.config.settings import config_from_mapping
from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    NotFound,
    PushRequest,
    Secret,
    StoreLocation,
    TargetSettings,
    Webhook,
)
from tests.conftest import assert_not_revealed
from tests.plugins.conftest import file_store
from tests.plugins.emulators import serve
from tests.plugins.emulators.github import GitHubEmulator, GitHubIssue, GitHubRepo
from tests.plugins.test_jira import README, readme_targets
from tests.support import php_bridge
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "github_pat_11ABCDEFG0123456789_secret"
HELPSPOT = "https://helpdesk.example.com"
ZWSP = "\u200b"


def make_target(
    url: str,
    store: Path | StoreLocation,
    token: str = TOKEN,
    timeout: float = 5.0,
    helpspot_url: str = HELPSPOT,
    **options: Any,
) -> GitHubTarget:
    """A github target for the emulated repository example/helpdesk."""
    opts = GitHubOptions(
        repository="example/helpdesk",
        token=Secret(token),
        api_url=url,
        store=store if isinstance(store, StoreLocation) else file_store(store),
        **options,
    )
    return GitHubTarget(opts, TargetSettings("gh", "github", timeout, helpspot_url))


@pytest.fixture
def emulator() -> Iterator[tuple[GitHubEmulator, str]]:
    """A fresh GitHub with a private repository example/helpdesk, and its API URL."""
    emu = GitHubEmulator(TOKEN)
    with serve(emu.app()) as running:
        yield emu, running.base_url


@pytest.fixture
def github(emulator: tuple[GitHubEmulator, str]) -> GitHubEmulator:
    """The emulated GitHub."""
    return emulator[0]


@pytest.fixture
def target(emulator: tuple[GitHubEmulator, str], tmp_path: Path) -> Iterator[GitHubTarget]:
    """A target for ``emulator`` labelling its issues."""
    made = make_target(emulator[1], tmp_path / "webhooks.sqlite3", labels=("helpspot", "support"))
    yield made
    made.close()


class TestGitHubTargetContract(TargetContract):
    """The shared target behaviour, against the emulator."""

    backend_name = "github"
    invalid_options = (
        (
            GitHubOptions(
                repository="not a repository",
                token=Secret(CONTRACT_SECRET),
                api_url="github.com",
                body="{{ unclosed",
                labels=("",),
            ),
            {"repository", "api_url", "body", "labels"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(GitHubEmulator(CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> GitHubTarget:
            return make_target(address, tmp_path / "webhooks.sqlite3", CONTRACT_SECRET, timeout)

        return make


def pushed(**data: object) -> PushRequest:
    """A pushed request as HelpSpot sends it."""
    base: dict[str, object] = {
        "xRequest": "12400",
        "sTitle": "Printer on fire",
        "sFirstName": "Grace",
        "sLastName": "Hopper",
        "sEmail": "grace@example.com",
        "staff_comment": "Ask @octocat about #12",
        "acting_person_fname": "Ada",
        "acting_person_lname": "Lovelace",
        "request_history": {
            "678": {
                "xRequestHistory": "678",
                "fInitial": "1",
                "fNoteIsHTML": "1",
                "tNote": "<p>It is <b>on fire</b> &amp; smoking</p>",
            }
        },
    }
    return PushRequest({**base, **data})


# -- Request Push --------------------------------------------------------------------------


def test_push_creates_the_issue_and_returns_its_number(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    assert target.push(pushed()) == "1"
    (sent,) = github.created
    assert sent == {
        "title": "Printer on fire",
        "body": (
            "It is on fire \\& smoking\n\n"
            f"Ada Lovelace: Ask @{ZWSP}octocat about \\#{ZWSP}12\n\n"
            f"HelpSpot request 12400: {HELPSPOT}/admin.php?pg=request&reqid=12400"
        ),
        "labels": ["helpspot", "support"],
    }
    assert github.repo().issues[1].labels == ["helpspot", "support"]


def test_it_sends_githubs_headers(target: GitHubTarget, github: GitHubEmulator) -> None:
    target.push(pushed())
    headers = github.headers[-1]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-Github-Api-Version"] == "2022-11-28"
    assert headers["User-Agent"] == "lookup-server (HelpSpot integration)"


def test_values_are_literal_markdown_and_the_template_is_not() -> None:
    assert markdown_text("# Title\n1. *x* <b>y</b> [a](javascript:x) `c`") == (
        "\\# Title\n1\\. \\*x\\* \\<b\\>y\\</b\\> \\[a\\]\\(javascript:x\\) \\`c\\`"
    )
    # GitHub notifies @name and links #123 escaped or not: a zero-width space stops it
    assert (
        markdown_text("cc @team, see owner/repo#3") == f"cc @{ZWSP}team, see owner/repo\\#{ZWSP}3"
    )
    assert markdown_text("grace@example.com") == "grace@example\\.com"  # no mention


def test_templates_shape_title_and_body(
    emulator: tuple[GitHubEmulator, str], tmp_path: Path
) -> None:
    target = make_target(
        emulator[1],
        tmp_path / "w.sqlite3",
        title="{{ sTitle }} ({{ customer }})\nsecond line",
        body="**From** {{ customer }}\n\n> {{ last_note }}\n\n[Open]({{ request_url }})",
    )
    target.push(pushed(sFirstName="Grace_*"))
    sent = emulator[0].created[-1]
    assert (
        sent["title"] == "Printer on fire (Grace_* Hopper) second line"
    )  # titles are not Markdown
    assert sent["body"] == (
        "**From** Grace\\_\\* Hopper\n\n> It is on fire \\& smoking\n\n"
        f"[Open]({HELPSPOT}/admin.php?pg=request&reqid=12400)"
    )


def test_a_long_title_and_body_are_cut(target: GitHubTarget, github: GitHubEmulator) -> None:
    target.push(pushed(sTitle="t" * 400, staff_comment="w " * 40_000))
    sent = github.created[-1]
    assert len(sent["title"]) == 256 and sent["title"].endswith("…")
    assert len(sent["body"]) <= 65_536 and sent["body"].endswith("[…]")


def test_labels_dropped_without_push_access(target: GitHubTarget, github: GitHubEmulator) -> None:
    github.repo().permissions["push"] = False
    target.push(pushed())
    assert github.repo().issues[1].labels == []  # as GitHub does: silently
    assert any("silently drops the labels" in w for w in target.check())


# -- details ---------------------------------------------------------------------------------


def test_details_show_state_assignees_and_the_last_comment(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    number = target.push(pushed())
    issue = github.repo().issues[int(number)]
    issue.state, issue.state_reason, issue.assignees = "closed", "not_planned", ["ada", "bob"]
    issue.comments = [("ada", f"2026-03-{d:02d}T10:00:00Z", f"comment {d}") for d in range(1, 31)]
    issue.comments += [("bob", "2026-04-01T09:00:00Z", "the <b>last</b> one")]
    details = target.details(number)
    assert details.title == "#1 Printer on fire"
    assert details.rows == (
        ("State", "closed (not planned)"),
        ("Assignees", "ada, bob"),
        ("Updated", "2026-03-02 11:30:00 UTC"),
        ("Last comment, bob, 2026-04-01", "the <b>last</b> one"),
    )
    assert details.link == "https://github.example/example/helpdesk/issues/1"


def test_the_last_comment_is_on_the_last_page(target: GitHubTarget, github: GitHubEmulator) -> None:
    number = target.push(pushed())
    issue = github.repo().issues[int(number)]
    issue.comments = [("ada", "2026-03-01T10:00:00Z", f"c{i}") for i in range(250)]
    assert target.details(number).rows[-1][1] == "c249"
    pages = [args for _, path, args in github.seen if path.endswith("/comments")]
    assert pages == [{"per_page": "100", "page": "3"}]  # one request, not three


def test_comments_added_or_deleted_since_the_count_are_followed(
    target: GitHubTarget, github: GitHubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.plugins.emulators import github as emulated

    number = target.push(pushed())
    issue = github.repo().issues[int(number)]
    issue.comments = [("ada", "2026-03-01T10:00:00Z", f"c{i}") for i in range(150)]
    real = emulated.GitHubEmulator._issue_json

    def stale(self: Any, repo: GitHubRepo, shown: GitHubIssue) -> dict[str, Any]:
        return {**real(self, repo, shown), "comments": stale_count}

    monkeypatch.setattr(emulated.GitHubEmulator, "_issue_json", stale)
    stale_count = 50  # 100 added since: page 1 of 2
    assert target.details(number).rows[-1][1] == "c149"
    stale_count = 450  # 300 deleted since: page 5 is past the end
    assert target.details(number).rows[-1][1] == "c149"


def test_details_of_an_issue_without_comments(target: GitHubTarget, github: GitHubEmulator) -> None:
    details = target.details(target.push(pushed()))
    assert [label for label, _ in details.rows] == ["State", "Assignees", "Updated"]
    assert dict(details.rows)["State"] == "open"
    assert not [path for _, path, _ in github.seen if path.endswith("/comments")]


def test_details_follow_a_transferred_issue(target: GitHubTarget, github: GitHubEmulator) -> None:
    other = GitHubRepo("example/moved", id=777)
    other.issues[9] = GitHubIssue(
        9, "Moved here", "", comments=[("eve", "2026-05-01T00:00:00Z", "hi")]
    )
    github.repos.append(other)
    number = target.push(pushed())
    github.repo().issues[int(number)].moved_to = ("example/moved", 9)
    details = target.details(number)
    assert details.title == "#9 Moved here" and details.rows[-1] == (
        "Last comment, eve, 2026-05-01",
        "hi",
    )


def test_details_of_deleted_unknown_or_malformed_issues(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    number = target.push(pushed())
    github.repo().issues[int(number)].deleted = True
    with pytest.raises(NotFound, match=r"no issue #1 in example/helpdesk any more \(HTTP 410"):
        target.details(number)
    with pytest.raises(NotFound, match=r"HTTP 404"):
        target.details("4242")
    asked = len(github.seen)
    for bad in ("0", "1/comments", "-1", "12345678901"):
        with pytest.raises(NotFound, match=r"is not a GitHub issue number"):
            target.details(bad)
    assert len(github.seen) == asked


# -- errors ----------------------------------------------------------------------------------


def test_a_wrong_token(
    emulator: tuple[GitHubEmulator, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = make_target(emulator[1], tmp_path / "w.sqlite3", token="ghp_wrong" + TOKEN)
    with pytest.raises(DeliveryFailed, match=r"rejected the token \(HTTP 401\)") as failed:
        target.push(pushed())
    assert failed.value.status == 401 and "Bad credentials" in failed.value.answer
    with pytest.raises(DeliveryFailed, match=r"HTTP 401"):
        target.check()
    assert_not_revealed([TOKEN], str(failed.value) + failed.value.answer, caplog)


def test_forbidden_says_what_the_token_needs(target: GitHubTarget, github: GitHubEmulator) -> None:
    github.fail_next(
        403,
        {"message": "Resource not accessible by personal access token", "documentation_url": "x"},
        {"X-Accepted-GitHub-Permissions": "issues=write"},
    )
    with pytest.raises(DeliveryFailed) as failed:
        target.push(pushed())
    assert str(failed.value) == (
        "GitHub does not let the token create the issue (HTTP 403): Resource not accessible "
        "by personal access token; it needs issues=write"
    )


def test_issues_disabled(target: GitHubTarget, github: GitHubEmulator) -> None:
    github.repo().has_issues = False
    with pytest.raises(
        DeliveryFailed, match=r"issues are turned off in example/helpdesk \(HTTP 410\)"
    ):
        target.push(pushed())
    with pytest.raises(BackendError, match=r"issues are turned off"):
        target.check()


def test_an_unknown_repository(emulator: tuple[GitHubEmulator, str], tmp_path: Path) -> None:
    emulator[0].repos.clear()
    target = make_target(emulator[1], tmp_path / "w.sqlite3")
    with pytest.raises(
        DeliveryFailed, match=r"no repository example/helpdesk, or the token cannot see it"
    ):
        target.push(pushed())
    with pytest.raises(BackendError, match=r"no repository example/helpdesk"):
        target.check()


def test_a_validation_failure_names_each_error(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    github.fail_next(
        422,
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": "Issue", "code": "invalid", "field": "assignees"},
                {
                    "resource": "Label",
                    "code": "custom",
                    "field": "name",
                    "message": "name is too long",
                },
                "a plain error",
            ],
        },
    )
    with pytest.raises(DeliveryFailed) as failed:
        target.push(pushed())
    assert str(failed.value) == (
        "GitHub refused the issue (HTTP 422): Validation Failed; assignees: invalid; "
        "name: name is too long; a plain error"
    )


def test_a_primary_rate_limit_is_waited_out_when_it_fits(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    now = str(int(time.time()))
    github.fail_next(
        403,
        {"message": "API rate limit exceeded"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": now},
    )
    assert target.push(pushed()) == "1"
    assert [m for m, p, _ in github.seen if p.endswith("/issues")] == ["POST", "POST"]


def test_a_primary_rate_limit_beyond_the_timeout(
    emulator: tuple[GitHubEmulator, str], tmp_path: Path
) -> None:
    reset = str(int(time.time()) + 1800)
    emulator[0].fail_next(
        403,
        {"message": "API rate limit exceeded for user ID 1."},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
    )
    target = make_target(emulator[1], tmp_path / "w.sqlite3", timeout=1)
    with pytest.raises(
        DeliveryFailed, match=r"rate-limiting this token \(HTTP 403\) and asks to wait 1[78]\d\d s"
    ) as failed:
        target.deliver(Webhook(1, "k1", {"xRequest": "1"}))
    assert failed.value.status == 403


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        (403, {"retry-after": "120"}, "120"),
        (429, {"retry-after": "30"}, "30"),
        (403, {}, "60"),  # no header: "wait for at least one minute"
    ],
)
def test_a_secondary_rate_limit(
    emulator: tuple[GitHubEmulator, str],
    tmp_path: Path,
    status: int,
    headers: dict[str, str],
    wait: str,
) -> None:
    emulator[0].fail_next(
        status,
        {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."},
        headers,
    )
    target = make_target(emulator[1], tmp_path / "w.sqlite3", timeout=1)
    with pytest.raises(
        DeliveryFailed,
        match=rf"rate-limiting this token \(HTTP {status}\) and asks to wait {wait} s",
    ):
        target.push(pushed())


@pytest.mark.parametrize("status", [500, 502, 503])
def test_an_outage(target: GitHubTarget, github: GitHubEmulator, status: int) -> None:
    github.fail_next(status, "<html>Unicorn!</html>")
    with pytest.raises(DeliveryFailed, match=rf"GitHub is having problems \(HTTP {status}\)"):
        target.push(pushed())


def test_a_renamed_repository_is_explained(target: GitHubTarget, github: GitHubEmulator) -> None:
    github.fail_next(
        301, {"message": "Moved Permanently"}, {"Location": "https://api.github.com/repositories/1"}
    )
    with pytest.raises(DeliveryFailed, match=r"renamed or moved\? Set repository"):
        target.push(pushed())


def test_a_refused_webhook_keeps_no_token_in_its_answer(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    github.fail_next(500, f"Authorization: Bearer {TOKEN}\n" + "x" * 9000)
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(3, "k-3", {"xRequest": "5"}))
    assert failed.value.status == 500 and TOKEN not in failed.value.answer
    assert failed.value.answer.startswith("Authorization: Bearer [hidden]")


# -- webhooks --------------------------------------------------------------------------------

WEBHOOK = Webhook(
    7,
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    {
        "xRequest": "12500",
        "sTitle": "Refund please",
        "note_content": "<p>Refund &amp; close</p>",
        "request_history": {"item": {"900": {"tNote": "<p>First</p>", "fNoteIsHTML": "1"}}},
    },
)


def test_a_webhook_creates_an_issue_once(target: GitHubTarget, github: GitHubEmulator) -> None:
    target.deliver(WEBHOOK)
    target.deliver(WEBHOOK)
    assert len(github.created) == 1 and github.created[0]["title"] == "Refund please"
    assert github.created[0]["body"].startswith("First\n\nHelpSpot request 12500: ")
    target.deliver(Webhook(8, "other", WEBHOOK.payload))
    assert sorted(github.repo().issues) == [1, 2]


def test_a_webhook_redelivered_by_another_server_is_not_duplicated(
    emulator: tuple[GitHubEmulator, str], store_location: StoreLocation
) -> None:
    one, other = (make_target(emulator[1], store_location) for _ in range(2))
    try:
        one.deliver(WEBHOOK)
        other.deliver(WEBHOOK)
    finally:
        one.close()
        other.close()
    assert len(emulator[0].created) == 1


# -- check -----------------------------------------------------------------------------------


def test_check_proves_the_repository_and_creates_nothing(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    assert target.check() == []
    assert [(m, p) for m, p, _ in github.seen] == [("GET", "/repos/example/helpdesk")]


def test_check_of_an_archived_repository(target: GitHubTarget, github: GitHubEmulator) -> None:
    github.repo().archived = True
    with pytest.raises(BackendError, match=r"archived: no issue can be opened"):
        target.check()
    with pytest.raises(DeliveryFailed, match=r"HTTP 403\): Repository was archived"):
        target.push(pushed())


@pytest.mark.parametrize(
    ("private", "scopes", "message"),
    [
        (True, "read:org, public_repo", r"lacks the repo scope"),
        (False, "read:org", r"lacks the public_repo \(or repo\) scope"),
        (True, "", r"lacks the repo scope"),
    ],
)
def test_check_of_a_classic_token_without_the_scope(
    target: GitHubTarget, github: GitHubEmulator, private: bool, scopes: str, message: str
) -> None:
    github.repo().private, github.scopes = private, scopes
    with pytest.raises(BackendError, match=message):
        target.check()


def test_check_of_a_fine_grained_token_and_a_public_repository(
    target: GitHubTarget, github: GitHubEmulator
) -> None:
    github.scopes, github.repo().private = None, False
    assert target.check() == [
        "GitHub does not show what a fine-grained or app token may do: make sure it has "
        "Issues: Read and write on example/helpdesk",
        "example/helpdesk is public: anyone can read its issues, all the templates put in",
    ]


def test_github_enterprise_server(tmp_path: Path) -> None:
    emu = GitHubEmulator(TOKEN, prefix="/api/v3")
    with serve(emu.app()) as running:
        target = make_target(f"{running.base_url}/api/v3", tmp_path / "w.sqlite3")
        assert target.check() == []
        number = target.push(pushed())
        emu.repo().issues[int(number)].comments = [("ada", "2026-03-01T10:00:00Z", "on GHES")]
        assert target.details(number).rows[-1][1] == "on GHES"
    assert {path.split("/repos/")[0] for _, path, _ in emu.seen} == {"/api/v3"}


# -- configuration and the whole way through ------------------------------------------------


def test_the_documented_configuration_is_valid(tmp_path: Path) -> None:
    config = config_from_mapping(
        readme_targets("github"), tmp_path, environ={"GITHUB_TOKEN": TOKEN}
    )
    (name,) = config.targets
    options = config.targets[name].options
    assert isinstance(options, GitHubOptions) and options.body == DEFAULT_BODY
    assert DEFAULT_BODY in README.read_text(encoding="utf-8")  # the documented default


BRIDGE_CONFIG = """
[server]
shared_key = "{KEY}"
outbox = "outbox.sqlite3"
helpspot_url = "https://helpdesk.example.com"

[targets.github]
backend = "github"
repository = "example/helpdesk"
token = "TOKEN"
api_url = "URL"
labels = ["helpspot"]
store = "github-webhooks.sqlite3"
"""


def test_push_and_details_round_trip_through_the_php_bridge(
    emulator: tuple[GitHubEmulator, str], tmp_path: Path
) -> None:
    github, url = emulator
    config = BRIDGE_CONFIG.replace("URL", url).replace("TOKEN", TOKEN)
    with php_bridge.serving(config, tmp_path) as running:
        result = php_bridge.push_through_bridge(running, tmp_path, "github", "12345", "1")
    assert result["id"] == "1" and result["errorMsg"] == ""
    (sent,) = github.created
    assert sent["title"] == 'Printer <on> "fire"' and sent["labels"] == ["helpspot"]
    assert sent["body"] == (
        "It is on fire\n\nStaff: Please check\n\n"
        "HelpSpot request 12345: https://helpdesk.example.com/admin.php?pg=request&reqid=12345"
    )
    details = result["details"]
    assert '<strong>#1 Printer &lt;on&gt; "fire"</strong>' in details
    assert '<th align="left">State</th><td>open</td>' in details
    assert '<a href="https://github.example/example/helpdesk/issues/1"' in details
    assert TOKEN not in details


def test_a_webhook_through_the_server_creates_one_issue(
    emulator: tuple[GitHubEmulator, str], tmp_path: Path
) -> None:
    github, url = emulator
    config = BRIDGE_CONFIG.replace("URL", url).replace("TOKEN", TOKEN)
    with php_bridge.serving(config, tmp_path) as running:
        php_bridge.post_webhook(
            running,
            "github",
            [
                ("xRequest", "12345"),
                ("sTitle", "Printer & <fire>"),
                ("note_content", "<p>@all hot</p>"),
            ],
        )
        php_bridge.delivered(lambda: len(github.repo().issues) == 1, "the issue was created")
    (sent,) = github.created
    assert sent["title"] == "Printer & <fire>"
    assert sent["body"].startswith(f"@{ZWSP}all hot\n\nHelpSpot request 12345")
