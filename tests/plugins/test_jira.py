"""The jira target (Request Push, details, webhooks) against the Jira Cloud emulator."""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.jira.adf import MAX_DESCRIPTION_JSON, adf_document
from lookup_plugins.jira.target import DEFAULT_DESCRIPTION, JiraOptions, JiraTarget

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
from tests.plugins.emulators.jira import JiraEmulator
from tests.support import php_bridge
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

EMAIL = "helpspot@example.com"
TOKEN = "ATATT3xFfGF0-jira-api-token-5d1e"
HELPSPOT = "https://helpdesk.example.com"
README = Path(__file__).resolve().parents[2] / "README.md"


def make_target(
    url: str,
    store: Path | StoreLocation,
    token: str = TOKEN,
    timeout: float = 5.0,
    helpspot_url: str = HELPSPOT,
    **options: Any,
) -> JiraTarget:
    """A jira target for the emulated site, its webhook record at ``store``."""
    opts = JiraOptions(
        url=url,
        email=EMAIL,
        token=Secret(token),
        project="HS",
        store=store if isinstance(store, StoreLocation) else file_store(store),
        **options,
    )
    return JiraTarget(opts, TargetSettings("jira", "jira", timeout, helpspot_url))


@pytest.fixture
def emulator() -> Iterator[tuple[JiraEmulator, str]]:
    """A fresh site with project HS and its URL."""
    emu = JiraEmulator(EMAIL, TOKEN)
    with serve(emu.app()) as running:
        yield emu, running.base_url


@pytest.fixture
def jira(emulator: tuple[JiraEmulator, str]) -> JiraEmulator:
    """The emulated site."""
    return emulator[0]


@pytest.fixture
def target(emulator: tuple[JiraEmulator, str], tmp_path: Path) -> Iterator[JiraTarget]:
    """A target for ``emulator`` with a label."""
    made = make_target(emulator[1], tmp_path / "webhooks.sqlite3", labels=("helpspot",))
    yield made
    made.close()


class TestJiraTargetContract(TargetContract):
    """The shared target behaviour, against the emulator."""

    backend_name = "jira"
    invalid_options = (
        (
            JiraOptions(
                url="ftp://jira.example.com",
                email="nobody",
                token=Secret(CONTRACT_SECRET),
                project="H S",
                issue_type=" ",
                summary="{% if %}",
                labels=("two words",),
            ),
            {"url", "email", "project", "issue_type", "summary", "labels"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(JiraEmulator(EMAIL, CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> JiraTarget:
            return make_target(address, tmp_path / "webhooks.sqlite3", CONTRACT_SECRET, timeout)

        return make


def pushed(**data: object) -> PushRequest:
    """A pushed request as HelpSpot sends it (the fields the default templates read)."""
    base: dict[str, object] = {
        "xRequest": "12400",
        "sTitle": "Printer on fire",
        "sFirstName": "Grace",
        "sLastName": "Hopper",
        "sEmail": "grace@example.com",
        "sPhone": "555-0100",
        "staff_comment": "Customer is <b>VIP</b>",
        "acting_person_fname": "Ada",
        "acting_person_lname": "Lovelace",
        "request_history": {
            "678": {
                "xRequestHistory": "678",
                "fInitial": "1",
                "fNoteIsHTML": "1",
                "tNote": "<p>The printer is <b>on fire</b>.</p><ul><li>tray 2</li></ul>",
            }
        },
    }
    return PushRequest({**base, **data})


def texts(doc: dict[str, Any]) -> list[str]:
    """The text of each paragraph of an ADF document, hardBreaks as line feeds."""
    return [
        "".join(n["text"] if n["type"] == "text" else "\n" for n in p["content"])
        for p in doc["content"]
    ]


# -- Request Push --------------------------------------------------------------------------


def test_push_creates_the_issue_and_returns_its_key(target: JiraTarget, jira: JiraEmulator) -> None:
    assert target.push(pushed()) == "HS-1"
    (sent,) = jira.created
    fields = sent["fields"]
    assert fields["project"] == {"key": "HS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "Printer on fire" and fields["labels"] == ["helpspot"]
    assert texts(fields["description"]) == [
        "The printer is on fire.",
        "  * tray 2",
        "Ada Lovelace: Customer is <b>VIP</b>",
        "Customer: Grace Hopper (grace@example.com), 555-0100\nHelpSpot request 12400: "
        f"{HELPSPOT}/admin.php?pg=request&reqid=12400",
    ]


def test_the_link_back_is_a_link_mark(target: JiraTarget, jira: JiraEmulator) -> None:
    target.push(pushed())
    last = jira.created[-1]["fields"]["description"]["content"][-1]["content"]
    link = f"{HELPSPOT}/admin.php?pg=request&reqid=12400"
    assert last[-1] == {
        "type": "text",
        "text": link,
        "marks": [{"type": "link", "attrs": {"href": link}}],
    }
    assert {"type": "hardBreak"} in last


def test_without_helpspot_url_there_is_no_link(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    target = make_target(emulator[1], tmp_path / "w.sqlite3", helpspot_url="")
    target.push(pushed())
    description = json.dumps(emulator[0].created[-1]["fields"]["description"])
    assert '"link"' not in description and "HelpSpot request 12400" in description


def test_templates_shape_the_summary_and_description(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    target = make_target(
        emulator[1],
        tmp_path / "w.sqlite3",
        summary="[{{ Custom3 }}]\n{{ sTitle | upper }} for {{ customer }}",
        description="{% for note in notes %}{{ note.text }}\n\n{% endfor %}Link: {{ request_url }}",
        issue_type="10002",
    )
    target.push(pushed(Custom3="Gold"))
    fields = emulator[0].created[-1]["fields"]
    assert fields["summary"] == "[Gold] PRINTER ON FIRE for Grace Hopper"  # one line
    assert fields["issuetype"] == {"id": "10002"}
    assert texts(fields["description"])[-1].startswith("Link: https://helpdesk.example.com/")


def test_a_long_summary_is_cut_to_what_jira_takes(target: JiraTarget, jira: JiraEmulator) -> None:
    target.push(pushed(sTitle="x" * 400))
    summary = jira.created[-1]["fields"]["summary"]
    assert len(summary) == 254 and summary.endswith("…")


def test_an_empty_summary_falls_back_to_the_request_number(
    target: JiraTarget, jira: JiraEmulator
) -> None:
    target.push(pushed(sTitle="  \x0b "))
    assert jira.created[-1]["fields"]["summary"] == "HelpSpot request 12400"


def test_a_huge_request_is_cut_to_jiras_text_limit(target: JiraTarget, jira: JiraEmulator) -> None:
    target.push(pushed(staff_comment="word\n" * 40_000))
    description = jira.created[-1]["fields"]["description"]
    assert len(json.dumps(description, ensure_ascii=False)) <= MAX_DESCRIPTION_JSON
    assert texts(description)[-1].endswith("[…]")


def test_a_template_that_fails_says_which(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    target = make_target(emulator[1], tmp_path / "w.sqlite3", description="{{ 1 / 0 }}")
    with pytest.raises(BackendError, match=r"the description template cannot be used"):
        target.push(pushed())


def test_adf_paragraphs_line_breaks_and_links() -> None:
    link = "https://hs.example/admin.php?pg=request&reqid=7"
    doc = adf_document(f"one\ntwo\n\n \n\nsee {link} or {link}.", link)
    mark = [{"type": "link", "attrs": {"href": link}}]
    assert doc == {
        "version": 1,
        "type": "doc",
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "one"},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "two"},
                ],
            },
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "see "},
                    {"type": "text", "text": link, "marks": mark},
                    {"type": "text", "text": " or "},
                    {"type": "text", "text": link, "marks": mark},
                    {"type": "text", "text": "."},
                ],
            },
        ],
    }
    assert adf_document("") == {"version": 1, "type": "doc", "content": []}
    assert (
        adf_document("<b>{code}*x*</b>")["content"][0]["content"][0]["text"] == "<b>{code}*x*</b>"
    )


# -- details ---------------------------------------------------------------------------------


def test_details_show_status_assignee_resolution_and_update(
    target: JiraTarget, jira: JiraEmulator, emulator: tuple[JiraEmulator, str]
) -> None:
    key = target.push(pushed())
    issue = jira.issues[key]
    issue.status, issue.assignee, issue.resolution = "Done", "Ada Lovelace", "Fixed"
    issue.updated = "2026-03-01T11:30:00.000+0100"
    details = target.details(key)
    assert details.title == "HS-1: Printer on fire"
    assert details.rows == (
        ("Status", "Done"),
        ("Assignee", "Ada Lovelace"),
        ("Resolution", "Fixed"),
        ("Updated", "2026-03-01 10:30 UTC"),
    )
    assert details.link == f"{emulator[1]}/browse/HS-1"
    assert jira.seen[-1][2] == {"fields": "summary,status,assignee,resolution,updated"}


def test_details_of_a_new_issue(target: JiraTarget) -> None:
    rows = dict(target.details(target.push(pushed())).rows)
    assert (rows["Status"], rows["Assignee"], rows["Resolution"]) == (
        "To Do",
        "Unassigned",
        "Unresolved",
    )


def test_details_of_unknown_or_malformed_keys(target: JiraTarget, jira: JiraEmulator) -> None:
    with pytest.raises(NotFound, match=r"Jira has no issue HS-99, or helpspot@example.com"):
        target.details("HS-99")
    asked = len(jira.seen)
    for bad in ("../myself", "HS-1?fields=*all", "12"):
        with pytest.raises(NotFound, match=r"is not a Jira issue key"):
            target.details(bad)
    assert len(jira.seen) == asked  # never sent


# -- errors ----------------------------------------------------------------------------------


def test_a_refusal_names_jiras_reasons(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.projects[0].required = {"10001": ["Component"]}
    with pytest.raises(DeliveryFailed) as failed:
        target.push(pushed())
    assert str(failed.value) == (
        "Jira refused to create the issue (HTTP 400): customfield_10100: Component is required."
    )
    assert failed.value.status == 400 and '"errors"' in failed.value.answer


def test_a_wrong_token(
    emulator: tuple[JiraEmulator, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = make_target(emulator[1], tmp_path / "w.sqlite3", token="wrong-" + TOKEN)
    with pytest.raises(
        DeliveryFailed, match=r"rejected the e-mail address and API token \(HTTP 401\)"
    ) as failed:
        target.push(pushed())
    assert failed.value.status == 401
    assert_not_revealed([TOKEN], str(failed.value) + failed.value.answer, caplog)


def test_a_captcha_is_explained(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(403, "", {"X-Seraph-LoginReason": "AUTHENTICATION_DENIED"})
    with pytest.raises(DeliveryFailed, match=r"CAPTCHA .* log in once in a browser"):
        target.push(pushed())


def test_a_failed_login_behind_a_200_is_a_failure(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(
        200, {"accountId": "anonymous"}, {"X-Seraph-LoginReason": "AUTHENTICATED_FAILED"}
    )
    with pytest.raises(DeliveryFailed, match=r"rejected the e-mail address"):
        target.check()


def test_forbidden(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(
        403,
        {
            "errorMessages": ["You do not have permission to create issues in this project."],
            "errors": {},
        },
    )
    with pytest.raises(
        DeliveryFailed,
        match=r"not let helpspot@example.com create the issue \(HTTP 403\): You do not have",
    ):
        target.push(pushed())


def test_a_rate_limit_is_waited_out_within_the_timeout(
    target: JiraTarget, jira: JiraEmulator
) -> None:
    jira.fail_next(429, "", {"Retry-After": "0"}, times=2)
    assert target.push(pushed()) == "HS-1"
    assert [m for m, path, _ in jira.seen if path == "/rest/api/3/issue"] == ["POST"] * 3


def test_a_rate_limit_beyond_the_timeout_fails_with_its_status(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    emulator[0].fail_next(
        429,
        {"errorMessages": ["Rate limit exceeded."]},
        {"Retry-After": "30", "RateLimit-Reason": "jira-burst-based"},
    )
    target = make_target(emulator[1], tmp_path / "w.sqlite3", timeout=1)
    with pytest.raises(
        DeliveryFailed, match=r"rate-limiting requests \(HTTP 429; wait 30 s\)"
    ) as failed:
        target.deliver(Webhook(1, "k-1", {"xRequest": "5"}))
    assert failed.value.status == 429


@pytest.mark.parametrize("status", [500, 503])
def test_an_outage(target: JiraTarget, jira: JiraEmulator, status: int) -> None:
    jira.fail_next(status, "<html>Service Unavailable</html>")
    with pytest.raises(DeliveryFailed, match=rf"Jira is having problems \(HTTP {status}\)"):
        target.push(pushed())


def test_a_redirect_names_the_fix(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(302, "", {"Location": "https://id.atlassian.com/login"})
    with pytest.raises(DeliveryFailed, match=r"redirected .* https://NAME.atlassian.net"):
        target.push(pushed())


def test_an_answer_that_is_not_jiras(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(201, "<html>proxy</html>")
    with pytest.raises(BackendError, match=r"unreadable answer"):
        target.push(pushed())
    jira.fail_next(201, {"id": "1"})
    with pytest.raises(BackendError, match=r"holds no issue key"):
        target.push(pushed())


def test_a_refused_webhook_keeps_no_credential_in_its_answer(
    target: JiraTarget, jira: JiraEmulator
) -> None:
    import base64

    basic = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    jira.fail_next(500, f"Error: Authorization: Basic {basic}\ntoken={TOKEN}\n" + "x" * 5000)
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(3, "k-3", {"xRequest": "5"}))
    assert failed.value.status == 500 and len(failed.value.answer) <= 1000
    assert basic not in failed.value.answer and TOKEN not in failed.value.answer
    assert "[hidden]" in failed.value.answer


# -- webhooks --------------------------------------------------------------------------------

WEBHOOK = Webhook(
    7,
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    {
        "xRequest": "12500",
        "sTitle": "Refund <please>",
        "sStatus": "Active",
        "fullname": "Grace Hopper",
        "note_content": "<p>Please refund &amp; close</p>",
        "request_history": {
            "item": {
                "900": {"tNote": "<p>First &amp; only</p>", "fNoteIsHTML": "1", "fInitial": "1"}
            }
        },
    },
)


def test_a_webhook_creates_an_issue_once(target: JiraTarget, jira: JiraEmulator) -> None:
    target.deliver(WEBHOOK)
    target.deliver(WEBHOOK)  # redelivered after a crash: same idempotency key
    assert len(jira.created) == 1
    fields = jira.created[0]["fields"]
    assert fields["summary"] == "Refund <please>"
    assert texts(fields["description"])[0] == "First & only"
    target.deliver(Webhook(8, "another-key", WEBHOOK.payload))
    assert sorted(jira.issues) == ["HS-1", "HS-2"]


def test_the_record_survives_a_restart_and_is_private(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    store = tmp_path / "state" / "jira.sqlite3"
    make_target(emulator[1], store).deliver(WEBHOOK)
    make_target(emulator[1], store).deliver(WEBHOOK)  # another process, or after a restart
    assert len(emulator[0].created) == 1
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700


def test_two_servers_on_one_store_make_one_issue_of_a_webhook(
    emulator: tuple[JiraEmulator, str], store_location: StoreLocation
) -> None:
    # a webhook redelivered by another server (after a crash) finds the first one's issue
    one, other = (make_target(emulator[1], store_location) for _ in range(2))
    try:
        one.deliver(WEBHOOK)
        other.deliver(WEBHOOK)
    finally:
        one.close()
        other.close()
    assert len(emulator[0].created) == 1


def test_an_attempt_that_never_finished_is_warned_about(
    target: JiraTarget, jira: JiraEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    # the process died between sending the create and recording its answer
    started = {"issue": "", "request_id": "12500", "started_at": 1.0}
    target.created.records.put(WEBHOOK.idempotency_key, started)
    target.deliver(WEBHOOK)
    assert "never finished" in caplog.text and "a second one" in caplog.text
    assert len(jira.created) == 1
    target.deliver(WEBHOOK)
    assert len(jira.created) == 1


def test_a_refused_webhook_is_retried_without_a_warning(
    target: JiraTarget, jira: JiraEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    jira.fail_next(400, {"errorMessages": [], "errors": {"summary": "bad"}})
    with pytest.raises(DeliveryFailed):
        target.deliver(WEBHOOK)
    target.deliver(WEBHOOK)
    assert "never finished" not in caplog.text and len(jira.issues) == 1


def test_an_unusable_record_delays_the_webhook_but_never_duplicates(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = make_target(emulator[1], blocker / "w.sqlite3")
    with pytest.raises(BackendError, match=r"cannot open the webhook record"):
        target.deliver(WEBHOOK)
    assert emulator[0].created == []
    with pytest.raises(BackendError, match=r"cannot open the webhook record"):
        target.check()


# -- check -----------------------------------------------------------------------------------


def test_check_proves_everything_and_creates_nothing(
    target: JiraTarget, jira: JiraEmulator
) -> None:
    assert target.check() == []
    assert [path for _, path, _ in jira.seen] == [
        "/rest/api/3/myself",
        "/rest/api/3/project/HS",
        "/rest/api/3/issue/createmeta/HS/issuetypes",
        "/rest/api/3/issue/createmeta/HS/issuetypes/10001",
    ]
    assert jira.created == []


def test_check_pages_through_issue_types(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.page_size = 1
    jira.projects[0].issue_types.append({"id": "10009", "name": "Incident", "subtask": False})
    make = JiraTarget(
        JiraOptions(**{**vars(target.options), "issue_type": "Incident"}), target.target
    )
    assert make.check() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"project": "NOPE"}, r"Jira has no project NOPE, or helpspot@example.com may not see it"),
        ({"issue_type": "Story"}, r"project HS has no issue type 'Story' \(Bug, Sub-task, Task\)"),
    ],
)
def test_check_names_a_wrong_project_or_issue_type(
    target: JiraTarget, change: dict[str, str], message: str
) -> None:
    wrong = JiraTarget(JiraOptions(**{**vars(target.options), **change}), target.target)
    with pytest.raises(BackendError, match=message):
        wrong.check()


def test_check_without_the_create_permission(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.may_create = False
    with pytest.raises(
        BackendError, match=r"may not create issues in HS \(Jira's Create issues permission\)"
    ):
        target.check()


def test_check_of_something_that_is_not_jira(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.fail_next(404, "<html>Not Found</html>", path_contains="/myself")
    with pytest.raises(BackendError, match=r"has no Jira Cloud REST API v3; check url"):
        target.check()


def test_check_of_a_deactivated_account(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.active = False
    with pytest.raises(BackendError, match=r"account helpspot@example.com is deactivated"):
        target.check()


def test_check_warns_of_fields_it_cannot_fill(target: JiraTarget, jira: JiraEmulator) -> None:
    jira.projects[0].required = {"10001": ["Component"]}
    jira.projects[0].labels_on_screen = False
    assert target.check() == [
        "issue_type 'Task' requires 'Component', which lookup-server does not fill: "
        "Jira will refuse every issue",
        "labels: the create screen has no Labels field; Jira will refuse them",
    ]


def test_check_with_a_wrong_token_never_shows_it(
    emulator: tuple[JiraEmulator, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(emulator[1], tmp_path / "w.sqlite3", token="bad-" + TOKEN)
    with pytest.raises(BackendError, match=r"HTTP 401") as failed:
        target.check()
    assert_not_revealed([TOKEN, "bad-"], str(failed.value), caplog)


# -- configuration and the whole way through ------------------------------------------------


def readme_targets(backend: str) -> dict[str, Any]:
    """The README's TOML examples holding ``backend = "BACKEND"``, merged."""
    import tomllib

    merged: dict[str, Any] = {}
    for block in re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        if f'backend = "{backend}"' in block:
            for table, entries in tomllib.loads(block).items():
                merged.setdefault(table, {}).update(entries)
    return merged


def test_the_documented_configuration_is_valid(tmp_path: Path) -> None:
    raw = readme_targets("jira")
    config = config_from_mapping(raw, tmp_path, environ={"JIRA_TOKEN": TOKEN})
    (name,) = config.targets
    options = config.targets[name].options
    assert isinstance(options, JiraOptions) and options.description == DEFAULT_DESCRIPTION
    assert DEFAULT_DESCRIPTION in README.read_text(encoding="utf-8")  # the documented default


BRIDGE_CONFIG = """
[server]
shared_key = "{KEY}"
outbox = "outbox.sqlite3"
helpspot_url = "https://helpdesk.example.com"

[targets.jira]
backend = "jira"
url = "URL"
email = "helpspot@example.com"
token = "TOKEN"
project = "HS"
store = "jira-webhooks.sqlite3"
"""


def test_push_and_details_round_trip_through_the_php_bridge(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    jira, url = emulator
    config = BRIDGE_CONFIG.replace("URL", url).replace("TOKEN", TOKEN)
    with php_bridge.serving(config, tmp_path) as running:
        result = php_bridge.push_through_bridge(running, tmp_path, "jira", "12345", "HS-1")
    assert result["id"] == "HS-1" and result["errorMsg"] == ""
    fields = jira.created[0]["fields"]
    assert fields["summary"] == 'Printer <on> "fire"'
    assert texts(fields["description"])[0] == "It is on fire"
    details = result["details"]
    assert '<strong>HS-1: Printer &lt;on&gt; "fire"</strong>' in details
    assert '<th align="left">Status</th><td>To Do</td>' in details
    assert f'<a href="{url}/browse/HS-1"' in details and TOKEN not in details


def test_a_webhook_through_the_server_creates_one_issue(
    emulator: tuple[JiraEmulator, str], tmp_path: Path
) -> None:
    jira, url = emulator
    config = BRIDGE_CONFIG.replace("URL", url).replace("TOKEN", TOKEN)
    with php_bridge.serving(config, tmp_path) as running:
        php_bridge.post_webhook(
            running,
            "jira",
            [
                ("xRequest", "12345"),
                ("sTitle", "Printer & <fire>"),
                ("request_history[item][678][tNote]", "<p>Hot &amp; smoky</p>"),
                ("request_history[item][678][fNoteIsHTML]", "1"),
            ],
        )
        php_bridge.delivered(lambda: len(jira.issues) == 1, "the issue was created")
    (sent,) = jira.created
    assert sent["fields"]["summary"] == "Printer & <fire>"
    assert texts(sent["fields"]["description"])[0] == "Hot & smoky"
