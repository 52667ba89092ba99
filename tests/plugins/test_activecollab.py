"""The activecollab target (Request Push, details, webhooks) against the ActiveCollab emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.activecollab_target import (
    ActiveCollabOptions,
    ActiveCollabTarget,
    body_html,
)

from lookup_server.config.settings import config_from_mapping
from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    NotFound,
    PushRequest,
    Secret,
    TargetSettings,
    Webhook,
)
from lookup_server.webhooks import Outbox
from tests.conftest import assert_not_revealed
from tests.plugins.conftest import file_store
from tests.plugins.emulators import readme_tables, serve
from tests.plugins.emulators.activecollab import ActiveCollabEmulator
from tests.plugins.target_server import post_webhook, push_through_the_bridge, serving
from tests.support.hanging import wait_for
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "1-activecollab-token-0c9d5e2f7b"
HELPSPOT = "https://help.example.com"


def make_target(
    url: str, tmp_path: Path, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> ActiveCollabTarget:
    """A target for project 7 of the emulated account, recording webhooks under ``tmp_path``."""
    options.setdefault("project_id", 7)
    opts = ActiveCollabOptions(
        url=url, token=Secret(token), store=file_store(tmp_path / "webhooks.sqlite3"), **options
    )
    settings = TargetSettings("tasks", "activecollab", timeout=timeout, helpspot_url=HELPSPOT)
    return ActiveCollabTarget(opts, settings)


@pytest.fixture
def account() -> Iterator[tuple[ActiveCollabEmulator, str]]:
    """A fresh account and its URL."""
    emulator = ActiveCollabEmulator(TOKEN)
    with serve(emulator.app()) as running:
        yield emulator, running.base_url


@pytest.fixture
def target(account: tuple[ActiveCollabEmulator, str], tmp_path: Path) -> ActiveCollabTarget:
    """A target for ``account``'s project 7."""
    return make_target(account[1], tmp_path)


class TestActiveCollabContract(TargetContract):
    """The shared target behaviour, against the emulator."""

    backend_name = "activecollab"
    invalid_options = (
        (
            ActiveCollabOptions(
                url="app.activecollab.com/1", token=Secret(CONTRACT_SECRET), project_id=7
            ),
            {"url"},
        ),
        (
            ActiveCollabOptions(
                url="https://ac.example", token=Secret(CONTRACT_SECRET), project_id=0
            ),
            {"project_id"},
        ),
        (
            ActiveCollabOptions(
                url="https://ac.example", token=Secret(CONTRACT_SECRET), project_id=7, body="{{"
            ),
            {"body"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(ActiveCollabEmulator(CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> ActiveCollabTarget:
            return make_target(address, tmp_path, CONTRACT_SECRET, timeout)

        return make


PUSHED = {
    "xRequest": "12400",
    "sTitle": "Printer <on> fire & smoke",
    "sFirstName": "Zoë",
    "sLastName": "Núñez",
    "sEmail": "zoe@example.com",
    "staff_comment": "Please call back today",
    "acting_person_fname": "Ada",
    "request_history": {
        "678": {
            "xRequestHistory": "678",
            "fInitial": "1",
            "fNoteIsHTML": "1",
            "tNote": "<p>It is <b>on fire</b> &amp; <script>alert(1)</script>smoking</p>",
        }
    },
}


# -- push ------------------------------------------------------------------------------------


def test_push_makes_a_task_in_the_project(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, _ = account
    task_id = target.push(PushRequest(PUSHED))
    assert task_id == "501"
    task = emulator.tasks[501]
    assert (task.project_id, task.name) == (7, "Printer <on> fire & smoke")
    assert task.body == (
        "<p>Customer: Zoë Núñez &lt;zoe@example.com&gt;<br>"
        "Comment from Ada: Please call back today<br>"
        "HelpSpot request: https://help.example.com/admin.php?pg=request&amp;reqid=12400</p>"
        "<p>It is on fire &amp; smoking</p>"
    )
    method, path, body = emulator.seen[-1]
    assert (method, path, set(body)) == ("POST", "/api/v1/projects/7/tasks", {"name", "body"})


def test_templates_shape_name_and_body(
    account: tuple[ActiveCollabEmulator, str], tmp_path: Path
) -> None:
    emulator, url = account
    target = make_target(
        url, tmp_path, title="HS-{{ request_id }}: {{ customer }}", body="{{ request_url }}"
    )
    task = emulator.tasks[int(target.push(PushRequest(PUSHED)))]
    assert task.name == "HS-12400: Zoë Núñez"
    assert task.body == "<p>https://help.example.com/admin.php?pg=request&amp;reqid=12400</p>"


def test_body_html_escapes_and_keeps_lines() -> None:
    assert body_html("a <b> & c\nnext\n\n\nnew paragraph") == (
        "<p>a &lt;b&gt; &amp; c<br>next</p><p>new paragraph</p>"
    )
    assert body_html("") == ""


# -- details ---------------------------------------------------------------------------------


def test_details_show_name_state_assignee_and_last_update(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, url = account
    task_id = target.push(PushRequest(PUSHED))
    task = emulator.tasks[int(task_id)]
    task.assignee_id, task.is_completed, task.updated_on = 2, True, 1772359500
    details = target.details(task_id)
    assert details.title == "ActiveCollab task 501: Printer <on> fire & smoke"
    assert details.rows == (
        ("State", "completed"),
        ("Assignee", "Grace Hopper"),
        ("Last update", "2026-03-01 10:05 UTC"),
    )
    assert details.link == f"{url}/projects/7/tasks/501"


def test_details_of_an_open_unassigned_task(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    task_id = target.push(PushRequest(PUSHED))
    rows = dict(target.details(task_id).rows)
    assert (rows["State"], rows["Assignee"]) == ("open", "nobody")
    assert [path for _, path, _ in account[0].seen].count("/api/v1/users/0") == 0


def test_an_assignee_who_is_gone_shows_as_a_number(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, _ = account
    task_id = target.push(PushRequest(PUSHED))
    emulator.tasks[int(task_id)].assignee_id = 99
    assert dict(target.details(task_id).rows)["Assignee"] == "user 99"
    emulator.tasks[int(task_id)].assignee_id = 2
    emulator.fail_next(403, {"message": "no"}, path_contains="/users/")
    assert dict(target.details(task_id).rows)["Assignee"] == "user 2"


def test_details_of_a_task_that_is_gone_or_elsewhere(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match=r"no task 4242 in project 7"):
        target.details("4242")
    task_id = target.push(PushRequest(PUSHED))
    account[0].tasks[int(task_id)].project_id = 9  # moved to another project
    with pytest.raises(NotFound, match=r"moved to another project"):
        target.details(task_id)
    with pytest.raises(NotFound, match=r"not an ActiveCollab task id"):
        target.details("7/tasks/1")


# -- webhooks --------------------------------------------------------------------------------

WEBHOOK = {
    "xRequest": "555",
    "sTitle": "Refund please",
    "fullname": "Bob Jones",
    "note_content": "<p>I want my money back</p>",
}


def test_a_webhook_makes_a_task_once(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget, tmp_path: Path
) -> None:
    emulator, url = account
    hook = Webhook(3, "0d6b-idem", WEBHOOK)
    target.deliver(hook)
    target.deliver(hook)
    make_target(url, tmp_path).deliver(hook)  # another process
    (task,) = emulator.tasks.values()
    assert task.name == "Refund please"
    assert task.body.endswith("<p>I want my money back</p>")
    assert [m for m, _, _ in emulator.seen] == ["POST"]


def test_a_failed_webhook_is_retried_and_then_made(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, _ = account
    emulator.fail_next(502, {"message": "maintenance"})
    with pytest.raises(DeliveryFailed, match=r"having problems \(HTTP 502\)") as failed:
        target.deliver(Webhook(3, "k", WEBHOOK))
    assert failed.value.status == 502 and "maintenance" in failed.value.answer
    target.deliver(Webhook(3, "k", WEBHOOK))
    assert len(emulator.tasks) == 1


# -- check -----------------------------------------------------------------------------------


def test_check_reads_the_project_and_makes_nothing(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, _ = account
    assert target.check() == []
    assert emulator.seen == [("GET", "/api/v1/projects/7", None)]
    assert emulator.tasks == {}


def test_check_warns_of_a_completed_project(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    account[0].projects[0].is_completed = True
    assert target.check() == ["project_id: project 7 is completed"]


@pytest.mark.parametrize(
    ("project_id", "token", "message"),
    [
        (42, TOKEN, r"no project 42 that the token's user can see \(HTTP 404\); check project_id"),
        (8, TOKEN, r"HTTP 403.*make the user a member of it"),
        (7, "wrong-" + TOKEN, r"rejected the API token \(HTTP 401\); check token"),
    ],
)
def test_check_names_the_problem(
    account: tuple[ActiveCollabEmulator, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    project_id: int,
    token: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendError, match=message) as err:
        make_target(account[1], tmp_path, token, project_id=project_id).check()
    assert_not_revealed([TOKEN], str(err.value), caplog)


def test_check_of_an_unreachable_account(tmp_path: Path) -> None:
    with pytest.raises(
        BackendError, match=r"cannot connect to ActiveCollab \(Connection refused\)"
    ):
        make_target("http://127.0.0.1:9", tmp_path).check()


# -- what staff read when it fails ----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_task_names_the_fields(
    account: tuple[ActiveCollabEmulator, str], tmp_path: Path, status: int
) -> None:
    emulator, url = account
    target = make_target(url, tmp_path)
    answer = {
        "type": "ValidationErrors",
        "message": "Validation failed",
        "field_errors": {"name": ["Task name is required"], "due_on": ["Bad date", 7]},
    }
    emulator.fail_next(status, answer, path_contains="/tasks")
    with pytest.raises(DeliveryFailed) as failed:
        target.push(PushRequest(PUSHED))
    assert str(failed.value) == (
        f"ActiveCollab refused the new task (HTTP {status}): Validation failed; "
        "name: Task name is required; due_on: Bad date"
    )
    assert failed.value.status == status


def test_a_refusal_without_reasons(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    account[0].fail_next(400, "<html>bad</html>")
    with pytest.raises(DeliveryFailed, match=r"refused the new task \(HTTP 400\): no reason given"):
        target.push(PushRequest(PUSHED))


@pytest.mark.parametrize("status", [400, 422])
def test_a_task_without_a_name_is_refused_by_activecollab(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget, status: int
) -> None:
    # the emulator's own refusal of a nameless task (the target's texts never leave it empty)
    emulator, _ = account
    emulator.validation_status = status
    with pytest.raises(DeliveryFailed, match=rf"\(HTTP {status}\): .*name: Task name is required"):
        target._create("", "body", {})
    assert emulator.tasks == {}


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, r"ActiveCollab is having problems \(HTTP 500\); try again later"),
        (401, r"rejected the API token \(HTTP 401\); check token"),
        (403, r"may not do that in project 7; make the user a member of it"),
        (404, r"no project 7 that the token's user can see \(HTTP 404\); check project_id"),
        (301, r"redirected the request \(HTTP 301\).*http or https"),
    ],
)
def test_http_failures_are_named(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget, status: int, message: str
) -> None:
    account[0].fail_next(status, {"message": f"echo {TOKEN}"}, {"Location": "https://x.example/"})
    with pytest.raises(DeliveryFailed, match=message) as failed:
        target.deliver(Webhook(1, "k", WEBHOOK))
    assert failed.value.status == status
    assert TOKEN not in failed.value.answer and TOKEN not in str(failed.value)


def test_a_rate_limit_is_waited_out_when_it_fits(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget
) -> None:
    emulator, _ = account
    emulator.fail_next(429, {"message": "slow"}, {"Retry-After": "0"})
    assert target.push(PushRequest(PUSHED)) == "501"


def test_a_rate_limit_beyond_the_timeout(
    account: tuple[ActiveCollabEmulator, str], tmp_path: Path
) -> None:
    emulator, url = account
    emulator.fail_next(429, {"message": "slow"}, {"Retry-After": "60"})
    with pytest.raises(
        DeliveryFailed, match=r"rate-limiting requests and asks to wait 60 s"
    ) as err:
        make_target(url, tmp_path, timeout=1).push(PushRequest(PUSHED))
    assert err.value.status == 429


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"single": None},
        {"single": {"id": "501"}},
        {"single": {"id": True}},
        {"tasks": []},
    ],
)
def test_malformed_answers(
    account: tuple[ActiveCollabEmulator, str], target: ActiveCollabTarget, body: Any
) -> None:
    account[0].fail_next(200, body)
    with pytest.raises(DeliveryFailed, match=r"unreadable answer|without the new task's id"):
        target.push(PushRequest(PUSHED))


# -- configuration and HelpSpot ------------------------------------------------------------------


def test_the_documented_configuration_is_valid(tmp_path: Path) -> None:
    raw = readme_tables("ActiveCollab")
    config = config_from_mapping(raw, tmp_path, environ={"ACTIVECOLLAB_TOKEN": TOKEN})
    options = config.targets["tasks"].options
    assert isinstance(options, ActiveCollabOptions)
    assert (options.url, options.project_id) == ("https://app.activecollab.com/123456", 7)


def test_push_and_details_round_trip_through_the_php_bridge(
    account: tuple[ActiveCollabEmulator, str], tmp_path: Path
) -> None:
    emulator, url = account
    table = {"backend": "activecollab", "url": url, "token": TOKEN, "project_id": 7}
    result = push_through_the_bridge(tmp_path, "tasks", table, details_id="501")
    assert result["id"] == "501" and result["errorMsg"] == ""
    assert emulator.tasks[501].name == 'Printer <on> "fire"'
    details = result["details"]
    assert '<strong>ActiveCollab task 501: Printer &lt;on&gt; "fire"</strong>' in details
    assert "<td>open</td>" in details and f'href="{url}/projects/7/tasks/501"' in details
    assert TOKEN not in details


def test_a_helpspot_webhook_becomes_one_task_through_the_outbox(
    account: tuple[ActiveCollabEmulator, str], tmp_path: Path
) -> None:
    emulator, url = account
    table = {"backend": "activecollab", "url": url, "token": TOKEN, "project_id": 7}
    fields = [
        ("xRequest", "12345"),
        ("sTitle", "Printer & <fire>"),
        ("fullname", "Zoë Núñez"),
        ("request_history[item][678][tNote]", "First <b>note</b>"),
        ("request_history[item][678][fNoteIsHTML]", "1"),
    ]
    with serving(tmp_path, "tasks", table) as running:
        webhook_id = post_webhook(running, "tasks", fields)
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        wait_for(lambda: _state(outbox, webhook_id) == "delivered", "the webhook was delivered")
    (task,) = emulator.tasks.values()
    assert (task.project_id, task.name) == (7, "Printer & <fire>")
    assert task.body == "<p>Customer: Zoë Núñez<br>HelpSpot request #12345</p><p>First note</p>"


def _state(outbox: Outbox, webhook_id: int) -> str:
    entry = outbox.get(webhook_id)
    return "" if entry is None else entry.state
