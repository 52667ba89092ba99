"""The survey loop through the whole app: a trigger's webhook sends a survey, the answer
appears in Live Lookup and, once, in the request as a custom field and a private note."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from lookup_plugins.thermostat.source import ThermostatSource
from lookup_plugins.thermostat.sync import WriteBack

from lookup_server.config.settings import config_from_mapping
from lookup_server.web.app import create_app
from lookup_server.web.blueprints.common import EXTENSION, AppState
from tests.plugins.emulators import DOCS, documented_tables, serve
from tests.plugins.emulators.helpspot_api import HelpSpotApiEmulator
from tests.plugins.test_thermostat import SURVEY, TOKEN, account
from tests.support.helpspot import assert_livelookup, request_page_params

KEY = "a-key-of-sixteen-characters"
HS_TOKEN = "helpspot-api-token-0123456789"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (the delivery worker runs on its own thread)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("timed out")


def test_a_trigger_sends_a_survey_and_its_answer_comes_back_once(tmp_path: Path) -> None:
    thermostat, helpspot = account(), HelpSpotApiEmulator(HS_TOKEN)
    helpspot.add(12400, fOpen="0", xStatus="3")  # solved and closed, as the trigger left it
    with serve(thermostat.app()) as tm, serve(helpspot.app()) as hs:
        app = create_app(
            {
                "server": {"shared_key": KEY, "outbox": str(tmp_path / "outbox.sqlite3")},
                "targets": {
                    "survey": {
                        "backend": "thermostat",
                        "url": tm.base_url,
                        "token": TOKEN,
                        "survey": str(SURVEY),
                        "fields": {"sUserId": "customer_id"},
                        "store": str(tmp_path / "sends.sqlite3"),
                    },
                    "helpspot": {
                        "backend": "helpspot",
                        "url": hs.base_url,
                        "token": HS_TOKEN,
                        "score_field": "Custom12",
                    },
                },
                "sources": {
                    "surveys": {
                        "backend": "thermostat",
                        "url": tm.base_url,
                        "token": TOKEN,
                        "surveys": [str(SURVEY)],
                        "index_path": str(tmp_path / "index.sqlite3"),
                        "writeback_target": "helpspot",
                    }
                },
            },
            base_dir=tmp_path,
        )
        client = app.test_client()
        local = {"REMOTE_ADDR": "127.0.0.1"}
        # 1. the trigger's Webhook action (form-encoded, as HelpSpot posts it)
        answer = client.post(
            f"/webhook/survey/{KEY}",
            data={"xRequest": "12400", "sEmail": "ada@example.com", "sUserId": "1001"},
            environ_base=local,
        )
        assert answer.status_code == 202
        wait_until(lambda: len(thermostat.sent) == 1)
        assert thermostat.sent[0][2] == {
            "email": "ada@example.com",
            "xrequest": "12400",
            "customer_id": "1001",
        }
        # 2. Ada answers; the server's sync picks it up (here: at once, not in 5 minutes)
        thermostat.answer("ada@example.com", 10, "Solved in minutes")
        state: AppState = app.extensions[EXTENSION]
        source = state.sources["surveys"].source
        assert isinstance(source, ThermostatSource)
        writeback = WriteBack("helpspot", state.webhooks.submit)
        wait_until(lambda: source.sync_now(writeback))  # the start-up sync may hold the lock
        wait_until(lambda: len(helpspot.notes(12400)) == 1)
        source.sync_now(writeback)  # nothing new: nothing written twice
        # 3. in the request: the score in Custom12, a private note, still closed
        request = helpspot.requests[12400]
        assert request.custom == {"12": "10"} and (request.fOpen, request.xStatus) == ("0", "3")
        (note,) = helpspot.notes(12400)
        assert note["fPublic"] == "0" and "Survey answered: 10 (promoter)" in note["tNote"]
        # 4. and in Live Lookup, as staff see it
        page = client.get(
            "/livelookup/surveys",
            query_string={**request_page_params(customer_id="1001"), "ll_key": KEY},
            environ_base=local,
        )
        (ada,) = assert_livelookup(page.data).customers
        assert (ada["latest_score"], ada["latest_class"]) == ("10", "promoter")
        assert ada["latest_feedback"] == "Solved in minutes"
        assert "less than a minute ago" in ada["data_age"]
        state.webhooks.close()
        source.close()
    assert len(helpspot.notes(12400)) == 1


def test_the_documented_configuration_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("THERMOSTAT_TOKEN", "HELPSPOT_API_TOKEN"):
        monkeypatch.setenv(name, "a-token-of-the-docs-0123")
    tables = documented_tables(DOCS / "thermostat.md")
    config = config_from_mapping(tables, tmp_path, origin="docs/backends/thermostat.md")
    assert set(config.targets) == {"survey", "helpspot"} and set(config.sources) == {"surveys"}
