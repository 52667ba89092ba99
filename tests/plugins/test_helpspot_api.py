"""The helpspot target (writing survey results back) and its API client, against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from lookup_plugins.helpspot_api.client import parse_errors
from lookup_plugins.helpspot_api.target import HelpSpotTarget, HelpSpotTargetOptions

from lookup_server.plugin import BackendError, DeliveryFailed, Secret, TargetSettings, Webhook
from tests.plugins.emulators import serve
from tests.plugins.emulators.helpspot_api import HelpSpotApiEmulator
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "helpspot-api-token-0123456789"


def installation(token: str = TOKEN) -> HelpSpotApiEmulator:
    """Requests 12400 (open), 12401 (closed, status 3), 12402 merged into 12400, and the
    contract's request ids."""
    emu = HelpSpotApiEmulator(token)
    emu.add(12400)
    emu.add(12401, fOpen="0", xStatus="3")
    emu.merged[12402] = 12400
    for n in (8, 9, 10, 11):
        emu.add(n)
    return emu


def make_target(
    url: str, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> HelpSpotTarget:
    """A helpspot target writing the score into Custom12."""
    opts = HelpSpotTargetOptions(
        url=url, token=Secret(token), **{"score_field": "Custom12", **options}
    )
    return HelpSpotTarget(opts, TargetSettings("helpspot", "helpspot", timeout=timeout))


def job(request_id: str = "12400", response_id: int = 5001, **fields: Any) -> Webhook:
    """A write-back job as the thermostat source hands it to the outbox."""
    payload = {
        "kind": "thermostat-response",
        "xRequest": request_id,
        "response_id": response_id,
        "survey_id": "1234",
        "survey_name": "Support NPS",
        "survey_type": "nps",
        "score": 9,
        "score_class": "promoter",
        "feedback": "Fast & <friendly>",
        "answered_at": "2026-12-03 10:00:00",
        "email": "ada@example.com",
        **fields,
    }
    return Webhook(response_id, f"key-{response_id}", payload)


@pytest.fixture
def emulator() -> Iterator[tuple[HelpSpotApiEmulator, str]]:
    emu = installation()
    with serve(emu.app()) as running:
        yield emu, running.base_url


@pytest.fixture
def target(emulator: tuple[HelpSpotApiEmulator, str]) -> HelpSpotTarget:
    return make_target(emulator[1])


class TestHelpSpotTargetContract(TargetContract):
    """The shared target behaviour (webhooks), against the emulator."""

    backend_name = "helpspot"
    invalid_options = (
        (
            HelpSpotTargetOptions(url="helpdesk", token=Secret(CONTRACT_SECRET), score_field="12"),
            {"url", "score_field"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(installation(CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self) -> MakeTarget:
        def make(address: str, timeout: float) -> HelpSpotTarget:
            return make_target(address, CONTRACT_SECRET, timeout)

        return make


def test_the_score_goes_into_the_custom_field_and_a_private_note(
    target: HelpSpotTarget, emulator: tuple[HelpSpotApiEmulator, str]
) -> None:
    emu = emulator[0]
    target.deliver(job())
    request = emu.requests[12400]
    assert request.custom == {"12": "9"}
    (note,) = emu.notes(12400)
    assert note["fPublic"] == "0" and note["external"] == "0"
    assert "Survey answered: 9 (promoter) in Support NPS" in note["tNote"]
    assert "Fast &amp; &lt;friendly&gt;" in note["tNote"]  # text, as HelpSpot shows it
    assert "[thermostat-response-5001]" in note["tNote"]


def test_the_same_response_is_written_once_however_often_it_comes(
    target: HelpSpotTarget, emulator: tuple[HelpSpotApiEmulator, str]
) -> None:
    target.deliver(job())
    target.deliver(job())  # an outbox retry
    target.deliver(Webhook(77, "another-key", job().payload))  # handed over twice
    assert len(emulator[0].notes(12400)) == 1
    assert len(emulator[0].updates) == 1


def test_a_closed_request_stays_closed_with_its_status(
    target: HelpSpotTarget, emulator: tuple[HelpSpotApiEmulator, str]
) -> None:
    target.deliver(job("12401"))
    request = emulator[0].requests[12401]
    assert (request.fOpen, request.xStatus) == ("0", "3")
    assert request.custom == {"12": "9"}
    (_, form) = emulator[0].updates[0]
    assert (form["fOpen"], form["xStatus"]) == ("0", "3")


def test_the_emulator_reopens_a_closed_request_updated_without_fopen(
    emulator: tuple[HelpSpotApiEmulator, str],
) -> None:
    # what HelpSpot does (5.0.58, private_request_update), and why the target posts fOpen
    import requests

    answer = requests.post(
        f"{emulator[1]}/api/index.php",
        params={"method": "private.request.update", "output": "json"},
        data={"xRequest": "12401", "tNote": "hello"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert answer.json() == {"xRequest": "12401"}
    assert emulator[0].requests[12401].fOpen == "1"


def test_a_merged_request_is_written_where_it_went(
    target: HelpSpotTarget, emulator: tuple[HelpSpotApiEmulator, str]
) -> None:
    target.deliver(job("12402"))
    assert len(emulator[0].notes(12400)) == 1


def test_a_request_that_does_not_exist_fails_for_good(target: HelpSpotTarget) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(job("99999"))
    assert failed.value.final and failed.value.status == 400
    assert "Valid request ID required (error 103)" in str(failed.value)


def test_a_wrong_token_names_the_problem_and_is_retried(
    emulator: tuple[HelpSpotApiEmulator, str],
) -> None:
    target = make_target(emulator[1], token="wrong-token-000000")
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(job())
    assert not failed.value.final
    assert "rejected the API token (User authentication failed (error 2))" in str(failed.value)
    with pytest.raises(BackendError, match="rejected the API token"):
        target.check()


def test_check_proves_the_token_and_the_score_field(
    target: HelpSpotTarget, emulator: tuple[HelpSpotApiEmulator, str]
) -> None:
    assert target.check() == []
    with pytest.raises(BackendError, match="no custom field 13"):
        make_target(emulator[1], score_field="Custom13").check()
    assert emulator[0].updates == []


def test_errors_are_read_as_xml_and_as_json() -> None:
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<errors>\n\t<error>\n\t\t<xRequest>7</xRequest>\n'
        b"\t\t<id>208</id>\n\t\t<description>Request has been merged</description>\n"
        b"\t</error>\n</errors>"
    )
    (error,) = parse_errors(xml)
    assert (error.id, error.description, dict(error.fields)) == (
        208,
        "Request has been merged",
        {"xRequest": "7"},
    )
    (error,) = parse_errors(b'{"error":[{"id":103,"description":"Valid request ID required"}]}')
    assert (error.id, error.description) == (103, "Valid request ID required")
    assert parse_errors(b"<html>proxy</html>") == []
