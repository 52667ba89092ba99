"""The fogbugz target (Request Push, details, webhooks) against the FogBugz emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.fogbugz_target import FogBugzOptions, FogBugzTarget, parse_response

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
from tests.plugins.emulators.fogbugz import FogBugzEmulator
from tests.plugins.target_server import post_webhook, push_through_the_bridge, serving
from tests.support.hanging import wait_for
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "fogbugz-token-7a1c0e55b2d94f38"
HELPSPOT = "https://help.example.com"


def make_target(
    url: str, tmp_path: Path, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> FogBugzTarget:
    """A target for the emulated site, recording webhooks under ``tmp_path``."""
    opts = FogBugzOptions(
        url=url, token=Secret(token), store=file_store(tmp_path / "webhooks.sqlite3"), **options
    )
    settings = TargetSettings("bugs", "fogbugz", timeout=timeout, helpspot_url=HELPSPOT)
    return FogBugzTarget(opts, settings)


@pytest.fixture
def site() -> Iterator[tuple[FogBugzEmulator, str]]:
    """A fresh FogBugz site and its URL."""
    emulator = FogBugzEmulator(TOKEN)
    with serve(emulator.app()) as running:
        yield emulator, running.base_url


@pytest.fixture
def target(site: tuple[FogBugzEmulator, str], tmp_path: Path) -> FogBugzTarget:
    """A target for ``site`` that files cases in Support / Customers as Inquiries."""
    return make_target(site[1], tmp_path, project="Support", area="Customers", category="Inquiry")


class TestFogBugzContract(TargetContract):
    """The shared target behaviour, against the emulator."""

    backend_name = "fogbugz"
    invalid_options = (
        (FogBugzOptions(url="example.fogbugz.com", token=Secret(CONTRACT_SECRET)), {"url"}),
        (
            FogBugzOptions(
                url="https://x.fogbugz.com", token=Secret(CONTRACT_SECRET), title="{{ sTitle"
            ),
            {"title"},
        ),
        (
            FogBugzOptions(
                url="https://x.fogbugz.com", token=Secret(CONTRACT_SECRET), body="{% if %}"
            ),
            {"body"},
        ),
        (
            FogBugzOptions(url="https://x.fogbugz.com", token=Secret(CONTRACT_SECRET), area="Misc"),
            {"area"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(FogBugzEmulator(CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> FogBugzTarget:
            return make_target(
                address, tmp_path, CONTRACT_SECRET, timeout, project="Support", area="Customers"
            )

        return make


PUSHED = {
    "xRequest": "12400",
    "sTitle": "Printer <on> fire & smoke",
    "sFirstName": "Zoë",
    "sLastName": "Núñez",
    "sEmail": "zoe@example.com",
    "fullname": "Zoë Núñez",
    "staff_comment": "Please call back today",
    "acting_person_fname": "Ada",
    "acting_person_lname": "Lovelace",
    "request_history": {
        "678": {
            "xRequestHistory": "678",
            "fInitial": "1",
            "fNoteIsHTML": "1",
            "tNote": "<p>It is <b>on fire</b></p><ul><li>really</li></ul>",
        },
        "679": {"xRequestHistory": "679", "fNoteIsHTML": "0", "tNote": "later note"},
    },
}


# -- push ------------------------------------------------------------------------------------


def test_push_makes_a_case_with_the_default_texts(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    number = target.push(PushRequest(PUSHED))
    assert number == "1001"
    case = emulator.cases[number].fields
    assert case["sTitle"] == "Printer <on> fire & smoke"
    assert case["sEvent"] == (
        "Customer: Zoë Núñez <zoe@example.com>\n"
        "Comment from Ada Lovelace: Please call back today\n"
        "HelpSpot request: https://help.example.com/admin.php?pg=request&reqid=12400\n"
        "\n"
        "It is on fire\n"
        "\n"
        "  * really"
    )
    assert (case["sProject"], case["sArea"], case["sCategory"]) == (
        "Support",
        "Customers",
        "Inquiry",
    )
    assert case["sCustomerEmail"] == "zoe@example.com"


def test_the_token_travels_in_the_body_of_a_post(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    target.push(PushRequest(PUSHED))
    assert emulator.methods == ["POST"]
    cmd, params = emulator.seen[-1]
    assert cmd == "new" and "token" not in params  # the emulator took it from the form


def test_templates_shape_title_and_body(site: tuple[FogBugzEmulator, str], tmp_path: Path) -> None:
    emulator, url = site
    target = make_target(
        url,
        tmp_path,
        title="[HS {{ request_id }}] {{ sTitle | upper }}",
        body="{{ customer }} wrote:\n{{ last_note }}\n{{ request_url }}",
    )
    number = target.push(PushRequest(PUSHED))
    case = emulator.cases[number].fields
    assert case["sTitle"] == "[HS 12400] PRINTER <ON> FIRE & SMOKE"
    assert case["sEvent"] == (
        "Zoë Núñez wrote:\nlater note\nhttps://help.example.com/admin.php?pg=request&reqid=12400"
    )


def test_an_empty_title_falls_back_to_the_request_number(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    number = target.push(PushRequest({"xRequest": "77", "sTitle": "  \n "}))
    assert emulator.cases[number].fields["sTitle"] == "HelpSpot request #77"


def test_no_link_back_without_helpspot_url(
    site: tuple[FogBugzEmulator, str], tmp_path: Path
) -> None:
    emulator, url = site
    opts = FogBugzOptions(url=url, token=Secret(TOKEN), store=file_store(tmp_path / "w.sqlite3"))
    number = FogBugzTarget(opts, TargetSettings("bugs", "fogbugz")).push(PushRequest(PUSHED))
    event = emulator.cases[number].fields["sEvent"]
    assert "HelpSpot request #12400" in event and "http" not in event


def test_control_characters_and_long_titles_are_tamed(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    number = target.push(PushRequest({"xRequest": "9", "sTitle": "a\x00b\x0bc " + "t" * 400}))
    title = emulator.cases[number].fields["sTitle"]
    assert title.startswith("ab c t") and len(title) == 255 and title.endswith("…")


# -- details ---------------------------------------------------------------------------------


def test_details_show_title_status_assignee_and_last_update(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, url = site
    number = target.push(PushRequest(PUSHED))
    emulator.cases[number].fields.update(
        sStatus="Resolved (Fixed)",
        sPersonAssignedTo="Grace Hopper",
        dtLastUpdated="2026-03-01T10:05:09Z",
    )
    details = target.details(number)
    assert details.title == "FogBugz case 1001: Printer <on> fire & smoke"
    assert details.rows == (
        ("Status", "Resolved (Fixed)"),
        ("Assigned to", "Grace Hopper"),
        ("Project", "Support / Customers"),
        ("Last update", "2026-03-01 10:05 UTC"),
    )
    assert details.link == f"{url}/default.asp?1001"
    cmd, params = emulator.seen[-1]
    assert (cmd, params["q"]) == ("search", "1001")
    assert set(params["cols"].split(",")) >= {
        "sTitle",
        "sStatus",
        "sPersonAssignedTo",
        "dtLastUpdated",
    }


def test_details_of_a_case_that_is_gone(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    with pytest.raises(NotFound, match=r"no case 4242"):
        target.details("4242")
    with pytest.raises(NotFound, match=r"not a FogBugz case number"):
        target.details("12,13")
    assert [cmd for cmd, _ in emulator.seen] == ["search"]


# -- webhooks --------------------------------------------------------------------------------

WEBHOOK = {
    "xRequest": "555",
    "sTitle": "Refund please",
    "sEmail": "bob@example.com",
    "fullname": "Bob Jones",
    "note_content": "<p>I want my <i>money</i> back</p>",
    "request_history": {"item": {"900": {"tNote": "<p>Order 77 & co</p>", "fNoteIsHTML": "1"}}},
}


def test_a_webhook_makes_a_case_once(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    hook = Webhook(3, "5b3f0e6a-idem", WEBHOOK)
    target.deliver(hook)
    target.deliver(hook)  # redelivered after a crash, say
    (case,) = emulator.cases.values()
    assert case.fields["sTitle"] == "Refund please"
    assert case.fields["sEvent"].endswith("\n\nOrder 77 & co")
    assert case.fields["sCustomerEmail"] == "bob@example.com"
    assert [cmd for cmd, _ in emulator.seen] == ["new"]


def test_the_record_outlives_the_target(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget, tmp_path: Path
) -> None:
    emulator, url = site
    target.deliver(Webhook(3, "key-1", WEBHOOK))
    # another process, or the same after a restart
    make_target(url, tmp_path).deliver(Webhook(3, "key-1", WEBHOOK))
    make_target(url, tmp_path).deliver(Webhook(4, "key-2", WEBHOOK))
    assert len(emulator.cases) == 2
    assert (tmp_path / "webhooks.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_refused_webhook_is_retried_and_then_made(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    emulator.fail_with_error("0", "FogBugz not initialized", cmd="new")
    with pytest.raises(DeliveryFailed, match=r"not initialised") as failed:
        target.deliver(Webhook(3, "key-1", WEBHOOK))
    assert failed.value.status == 200 and 'code="0"' in failed.value.answer
    target.deliver(Webhook(3, "key-1", WEBHOOK))
    assert len(emulator.cases) == 1


def test_an_unopenable_record_makes_nothing(
    site: tuple[FogBugzEmulator, str], tmp_path: Path
) -> None:
    emulator, url = site
    blocker = tmp_path / "file"
    blocker.write_text("")
    opts = FogBugzOptions(url=url, token=Secret(TOKEN), store=file_store(blocker / "w.sqlite3"))
    target = FogBugzTarget(opts, TargetSettings("bugs", "fogbugz"))
    with pytest.raises(BackendError, match=r"cannot open the webhook record"):
        target.deliver(Webhook(3, "key-1", WEBHOOK))
    assert emulator.cases == {}  # nothing made when no redelivery could be recognised
    with pytest.raises(BackendError, match=r"set the target's store"):
        target.check()


def test_a_case_made_but_not_recorded_counts_as_delivered(
    site: tuple[FogBugzEmulator, str],
    target: FogBugzTarget,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def full_disk(
        key: str, values: Mapping[str, object], expect: Mapping[str, object] | None = None
    ) -> bool:
        if values.get("issue"):  # the case exists: recording it is what fails
            raise BackendError("cannot write the record (OperationalError)")
        return real_change(key, values, expect)

    real_change = target.record.records.change
    monkeypatch.setattr(target.record.records, "change", full_disk)
    target.deliver(Webhook(3, "key-1", WEBHOOK))  # failing now would make the case twice
    assert len(site[0].cases) == 1
    assert "webhook 3 created FogBugz case 1001, but it was not recorded" in caplog.text


# -- check -----------------------------------------------------------------------------------


def test_check_finds_project_area_and_category_and_makes_nothing(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    assert target.check() == []
    assert [cmd for cmd, _ in emulator.seen] == ["listProjects", "listAreas", "listCategories"]
    assert emulator.seen[0][1] == {"fWrite": "1"}
    assert emulator.seen[1][1] == {"fWrite": "1", "ixProject": "2"}
    assert emulator.cases == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project": "Nope"}, r"no project 'Nope' that the token's user may write to"),
        ({"project": "Archive"}, r"no project 'Archive' that the token's user may write to"),
        ({"project": "Support", "area": "Nope"}, r"no area 'Nope' there; check area"),
        ({"category": "Nope"}, r"no category 'Nope' there; check category"),
    ],
)
def test_check_names_what_is_not_there(
    site: tuple[FogBugzEmulator, str], tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        make_target(site[1], tmp_path, **options).check()


def test_check_with_a_wrong_token(
    site: tuple[FogBugzEmulator, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        BackendError, match=r"rejected the API token.*error 3: Not logged on"
    ) as err:
        make_target(site[1], tmp_path, token="wrong-" + TOKEN).check()
    assert_not_revealed([TOKEN, "wrong-"], str(err.value), caplog)


def test_check_when_url_is_not_fogbugz(tmp_path: Path) -> None:
    from flask import Flask

    not_fogbugz = r"no FogBugz api.xml at .* \(HTTP 404\); check url"
    with serve(Flask("not-fogbugz")) as running, pytest.raises(BackendError, match=not_fogbugz):
        make_target(running.base_url, tmp_path).check()


def test_check_when_the_user_may_write_nowhere(
    site: tuple[FogBugzEmulator, str], tmp_path: Path
) -> None:
    emulator, url = site
    for project in emulator.projects:
        project.writable = False
    with pytest.raises(BackendError, match=r"may not write to any FogBugz project"):
        make_target(url, tmp_path).check()


def test_check_warns_of_plain_http(tmp_path: Path) -> None:
    emulator = FogBugzEmulator(TOKEN)
    with serve(emulator.app()) as running:
        target = make_target(running.base_url.replace("127.0.0.1", "localhost"), tmp_path)
        assert target.check() == []
    plain = make_target("http://fogbugz.example.com", tmp_path)
    assert plain._plain_http_warning() == [
        "url: the token goes to fogbugz.example.com unencrypted (http://)"
    ]


# -- what staff read when it fails ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "message"),
    [
        ("3", "Not logged on", r"rejected the API token \(not logged on\); check token"),
        ("1", "Log On problem", r"could not log on with the token"),
        ("8", "New case problem", r"may not write to any FogBugz project \(error 8"),
        ("13", "Insufficient Permissions", r"lacks the permission in FogBugz \(error 13"),
        ("4", "Argument is missing from query", r"argument is missing \(error 4"),
        ("99", "Something odd", r"FogBugz refused the request \(error 99: Something odd\)"),
    ],
)
def test_fogbugz_errors_are_named(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget, code: str, text: str, message: str
) -> None:
    site[0].fail_with_error(code, text)
    with pytest.raises(DeliveryFailed, match=message):
        target.push(PushRequest(PUSHED))


def test_an_error_that_echoes_the_token_is_blanked(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    site[0].fail_with_error("4", f"bad token={TOKEN} in query")
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(1, "k", WEBHOOK))
    assert TOKEN not in str(failed.value) and TOKEN not in failed.value.answer
    assert "[hidden]" in str(failed.value)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, r"FogBugz is having problems \(HTTP 500\); try again later"),
        (502, r"FogBugz is having problems \(HTTP 502\)"),
        (401, r"rejected the API token \(HTTP 401\)"),
        (403, r"may not do that \(HTTP 403\)"),
        (404, r"no FogBugz api.asp at .* \(HTTP 404\); check url"),
        (302, r"redirected the request \(HTTP 302\).*http or https"),
        (418, r"FogBugz answered HTTP 418; check url"),
    ],
)
def test_http_failures_are_named(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget, status: int, message: str
) -> None:
    site[0].fail_next(status, "<html>oops</html>", {"Location": "https://x.example/"})
    with pytest.raises(DeliveryFailed, match=message) as failed:
        target.deliver(Webhook(1, "k", WEBHOOK))
    assert failed.value.status == status and failed.value.answer == "<html>oops</html>"


def test_a_rate_limit_is_waited_out_when_it_fits(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    emulator, _ = site
    emulator.fail_next(429, "slow down", {"Retry-After": "0"}, times=2)
    assert target.push(PushRequest(PUSHED)) == "1001"
    assert len(emulator.seen) == 3


def test_a_rate_limit_beyond_the_timeout(site: tuple[FogBugzEmulator, str], tmp_path: Path) -> None:
    emulator, url = site
    emulator.fail_next(429, "slow down", {"Retry-After": "30"})
    with pytest.raises(
        DeliveryFailed, match=r"rate-limiting requests and asks to wait 30 s"
    ) as err:
        make_target(url, tmp_path, timeout=1).deliver(Webhook(1, "k", WEBHOOK))
    assert err.value.status == 429 and len(emulator.seen) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><body>maintenance", r"unreadable answer \(not XML"),
        (b"", r"unreadable answer \(not XML"),
        (b"<?xml version='1.0'?><cases/>", r"<cases> where <response> belongs"),
        (b"<response><case ixBug='x'/></response>", r"without the new case's number"),
        (b"<response/>", r"without the new case's number"),
    ],
)
def test_malformed_answers(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget, body: bytes, message: str
) -> None:
    site[0].fail_next(200, body)
    with pytest.raises(BackendError, match=message):
        target.push(PushRequest(PUSHED))


def test_a_dtd_is_refused_and_nothing_is_expanded(
    site: tuple[FogBugzEmulator, str], target: FogBugzTarget
) -> None:
    for evil in (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<response><case ixBug='1'>&x;</case></response>",
        b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<response>&b;</response>",
        b'<!DOCTYPE response SYSTEM "http://127.0.0.1:9/evil.dtd"><response/>',
    ):
        site[0].fail_next(200, evil)
        with pytest.raises(BackendError, match=r"document type declaration"):
            target.push(PushRequest(PUSHED))
    with pytest.raises(ValueError, match=r"not XML: undefined entity"):
        parse_response(b"<response>&x;</response>")


# -- configuration and HelpSpot ------------------------------------------------------------------


def test_the_documented_configuration_is_valid(tmp_path: Path) -> None:
    raw = readme_tables("FogBugz")
    config = config_from_mapping(raw, tmp_path, environ={"FOGBUGZ_TOKEN": TOKEN})
    options = config.targets["bugs"].options
    assert isinstance(options, FogBugzOptions)
    assert (options.url, options.project, options.token.reveal()) == (
        "https://example.fogbugz.com",
        "Support",
        TOKEN,
    )


def test_push_and_details_round_trip_through_the_php_bridge(
    site: tuple[FogBugzEmulator, str], tmp_path: Path
) -> None:
    emulator, url = site
    table = {"backend": "fogbugz", "url": url, "token": TOKEN, "project": "Support"}
    result = push_through_the_bridge(tmp_path, "bugs", table, details_id="1001")
    assert result["id"] == "1001" and result["errorMsg"] == ""
    case = emulator.cases["1001"].fields
    assert case["sTitle"] == 'Printer <on> "fire"' and "It is on fire" in case["sEvent"]
    details = result["details"]
    assert '<strong>FogBugz case 1001: Printer &lt;on&gt; "fire"</strong>' in details
    assert "<td>Active</td>" in details and f'href="{url}/default.asp?1001"' in details
    assert TOKEN not in details


def test_a_helpspot_webhook_becomes_one_case_through_the_outbox(
    site: tuple[FogBugzEmulator, str], tmp_path: Path
) -> None:
    emulator, url = site
    table = {"backend": "fogbugz", "url": url, "token": TOKEN}
    fields = [
        ("xRequest", "12345"),
        ("sTitle", "Printer & <fire>"),
        ("sEmail", "zoe@example.com"),
        ("fullname", "Zoë Núñez"),
        ("note_content", "<p>Hot</p>"),
        ("request_history[item][678][tNote]", "<p>First <b>note</b></p>"),
        ("request_history[item][678][fNoteIsHTML]", "1"),
        ("request_history[item][678][fInitial]", "1"),
    ]
    with serving(tmp_path, "bugs", table) as running:
        webhook_id = post_webhook(running, "bugs", fields)
        outbox = Outbox(tmp_path / "outbox.sqlite3")
        wait_for(lambda: _state(outbox, webhook_id) == "delivered", "the webhook was delivered")
    (case,) = emulator.cases.values()
    assert case.fields["sTitle"] == "Printer & <fire>"
    assert case.fields["sEvent"] == (
        "Customer: Zoë Núñez <zoe@example.com>\nHelpSpot request #12345\n\nFirst note"
    )


def _state(outbox: Outbox, webhook_id: int) -> str:
    entry = outbox.get(webhook_id)
    return "" if entry is None else entry.state
