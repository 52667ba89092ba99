"""A lookup tried as HelpSpot would make it: what each page sends, and the answer read back."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from lookup_server.config.settings import config_from_mapping
from lookup_server.core.models import Audience, ByEmail, ByName
from lookup_server.helpspot.decode import audience, cli_params, decode_params
from lookup_server.helpspot.trial import Ticket, command_line, sent_by, try_ajax, try_lookup
from lookup_server.runtime.service import Sources
from tests.conftest import CUSTOMER_HEADER, write_csv
from tests.support.backend_contract import PEOPLE

TICKET = Ticket(
    last_name="Lovelace", email="ada@example.com", custom={"Custom10": "x y", "Custom2": "Café"}
)


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    people = write_csv(
        tmp_path / "p.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
    )
    options = write_csv(
        tmp_path / "o.csv", ["value", "description"], [["0", "Zero"], ["cafe", "Café"]]
    )
    config = config_from_mapping(
        {
            "sources": {
                "people": {
                    "backend": "csv",
                    "path": str(people),
                    "search": ["customer_id", "email", "name"],
                },
                "options": {"backend": "csv", "path": str(options)},
            }
        },
        tmp_path,
    )
    made = Sources(config)
    made.prepare()
    return made


@pytest.mark.parametrize(
    ("mode", "reader"),
    [
        ("request_page", Audience.REQUEST_PAGE),
        ("address_book", Audience.ADDRESS_BOOK),
        ("automation", Audience.AUTOMATION),
    ],
)
def test_each_mode_sends_what_its_page_sends_and_is_read_as_that_page(
    mode: str, reader: Audience
) -> None:
    params = decode_params(sent_by(mode, TICKET))
    assert audience(params) is reader
    if mode != "address_book":
        assert params["Custom2"] == "Café" and params["sEmail"] == "ada@example.com"
    else:
        assert "email" not in params and params["last_name"] == "Lovelace"


def test_the_request_page_encodes_its_values_twice_and_automation_once() -> None:
    page = dict(sent_by("request_page", TICKET))
    assert page["sEmail"] == "ada%40example.com" and page["email"] == "ada@example.com"
    assert dict(sent_by("automation", TICKET))["sEmail"] == "ada@example.com"


def test_custom_fields_go_in_ascending_field_id() -> None:
    names = [name for name, _ in sent_by("request_page", TICKET) if name.startswith("Custom")]
    assert names == ["Custom2", "Custom10"]
    assert command_line(TICKET)[-2:] == ["--Custom2=Café", "--Custom10=x y"]


def test_the_command_line_sends_bare_names_for_empty_values() -> None:
    args = command_line(TICKET)
    assert args[:2] == ["--customer_id", "--first_name"]
    assert cli_params(args)["email"] == "ada@example.com"


def test_a_tried_lookup_says_which_strategy_matched_and_what_helpspot_reads(
    sources: Sources,
) -> None:
    trial = try_lookup(sources, "people", "request_page", Ticket(last_name="lovelace"), "cmd")
    assert trial.answer.status == 200 and trial.view is not None
    assert [(type(t.term), t.found) for t in trial.tried] == [(ByName, 1)]
    assert trial.view.customers[0]["first_name"] == "Ada"
    assert trial.steps[0][0] == "decode what HelpSpot sent"
    assert "last_name=lovelace" in trial.sent


def test_a_stale_id_falls_back_and_the_trial_shows_both_searches(sources: Sources) -> None:
    ticket = Ticket(customer_id="9999", email="ADA@example.com")
    trial = try_lookup(sources, "people", "automation", ticket, "cmd")
    assert [t.found for t in trial.tried] == [0, 1]
    assert isinstance(trial.tried[1].term, ByEmail)


def test_the_command_line_trial_shows_the_command(sources: Sources) -> None:
    trial = try_lookup(
        sources,
        "people",
        "command_line",
        Ticket(email="ada@example.com"),
        "/x/lookup-server livelookup --source people --",
    )
    assert trial.sent.startswith("/x/lookup-server livelookup --source people -- --customer_id")
    assert trial.view is not None and len(trial.view.customers) == 1


def test_a_failed_lookup_is_read_as_helpspots_error(sources: Sources) -> None:
    trial = try_lookup(sources, "nope", "request_page", Ticket(last_name="x"), "cmd")
    assert trial.answer.status == 404 and trial.view is None
    assert trial.parse_error is not None and "XML error" in trial.parse_error


def test_an_ajax_trial_shows_the_dropdown_after_helpspots_mangling(sources: Sources) -> None:
    trial = try_ajax(sources, "options", "Custom5", "", Ticket())
    assert trial.options == [("", "Zero"), ("cafe", "CafÃ©")]
    assert dict(parse_qsl(trial.sent))["callingField"] == "Custom5"
