"""Thermostat: the target that sends surveys and the source that shows them (emulated)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.thermostat import sends
from lookup_plugins.thermostat.source import ThermostatSource, ThermostatSourceOptions
from lookup_plugins.thermostat.sync import JOB_KIND, WriteBack
from lookup_plugins.thermostat.target import ThermostatTarget, ThermostatTargetOptions

from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    DeliveryFailed,
    PushRequest,
    Secret,
    SourceSettings,
    TargetSettings,
    Webhook,
)
from tests.plugins.emulators import serve
from tests.plugins.emulators.thermostat import ThermostatEmulator, survey, throttled
from tests.support import target_contract
from tests.support.backend_contract import PEOPLE, BackendContract
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "thermostat-token-0123456789abcdef"
SURVEY = 1234
CSAT = 77


def account(token: str = TOKEN) -> ThermostatEmulator:
    """An account with an NPS survey (a campaign too) and a CSAT survey."""
    return ThermostatEmulator(
        token, [survey(SURVEY, "Support NPS", campaign=True), survey(CSAT, "Support CSAT", "csat")]
    )


def make_target(
    url: str, store: Path, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> ThermostatTarget:
    """A thermostat target for the emulated account."""
    opts = ThermostatTargetOptions(
        token=Secret(token), survey=str(SURVEY), url=url, store=store, **options
    )
    return ThermostatTarget(opts, TargetSettings("survey", "thermostat", timeout=timeout))


def make_source(url: str, index: Path, writeback: str = "", **core: Any) -> ThermostatSource:
    """A thermostat source over both surveys."""
    opts = ThermostatSourceOptions(
        token=Secret(TOKEN),
        surveys=[str(SURVEY), str(CSAT)],
        url=url,
        index_path=index,
        writeback_target=writeback,
    )
    return ThermostatSource(opts, SourceSettings("surveys", "thermostat", **core))


def request_row(**fields: str) -> dict[str, str]:
    """A trigger's webhook payload (the request row HelpSpot posts)."""
    return {
        "xRequest": "12400",
        "sEmail": "ada@example.com",
        "sUserId": "1001",
        "sFirstName": "Ada",
        **fields,
    }


@pytest.fixture
def emulator() -> Iterator[tuple[ThermostatEmulator, str]]:
    emu = account()
    with serve(emu.app()) as running:
        yield emu, running.base_url


@pytest.fixture
def target(emulator: tuple[ThermostatEmulator, str], tmp_path: Path) -> ThermostatTarget:
    return make_target(
        emulator[1],
        tmp_path / "sends.sqlite3",
        fields={"sUserId": "customer_id", "sFirstName": "first_name"},
    )


# -- the contracts --------------------------------------------------------------------------


class TestThermostatSourceContract(BackendContract):
    """Live Lookup from the local index, synced from the emulator's responses of PEOPLE."""

    backend_name = "thermostat"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
        emu = account()
        for person in PEOPLE:
            fields = {k: v for k, v in person.as_fields().items() if k != "email"}
            emu.add_response(SURVEY, person.email, 9, "Great", {**fields, "xrequest": "1"})
        index = tmp_path_factory.mktemp("thermostat") / "index.sqlite3"
        with serve(emu.app()) as running:
            assert make_source(running.base_url, index).sync_now(None)
            yield {
                "backend": "thermostat",
                "url": running.base_url,
                "token": TOKEN,
                "surveys": [str(SURVEY), str(CSAT)],
                "index_path": str(index),
            }


class TestThermostatTargetContract(TargetContract):
    """The shared target behaviour (push, details, webhooks), against the emulator."""

    backend_name = "thermostat"
    invalid_options = (
        (
            ThermostatTargetOptions(token=Secret(CONTRACT_SECRET), survey="abc", url="ftp://x"),
            {"survey", "url"},
        ),
    )

    @pytest.fixture(autouse=True)
    def _webhook_with_an_address(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The contract's webhook, with the customer's address.

        Issue 18's rule: a request without an address is recorded as skipped and
        never reaches Thermostat (test_a_request_without_a_usable_address_...), so
        without one no failure of the peer could show. Every other case is as given.
        """
        webhook = target_contract.WEBHOOK
        payload = {**webhook.payload, "sEmail": "zoe.nunez@example.com"}
        monkeypatch.setattr(
            target_contract, "WEBHOOK", Webhook(webhook.id, webhook.idempotency_key, payload)
        )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(account(CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> ThermostatTarget:
            return make_target(address, tmp_path / "sends.sqlite3", CONTRACT_SECRET, timeout)

        return make


# -- sending ------------------------------------------------------------------------------------


def test_a_webhook_sends_the_survey_with_xrequest_and_the_mapped_fields(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    target.deliver(Webhook(1, "k1", request_row()))
    ((survey_id, action, form),) = emulator[0].sent
    assert (survey_id, action) == (str(SURVEY), "sendnow")
    assert form == {
        "email": "ada@example.com",
        "xrequest": "12400",
        "customer_id": "1001",
        "first_name": "Ada",
    }


def test_campaign_mode_adds_the_address_to_the_surveys_list(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    target = make_target(emulator[1], tmp_path / "s.sqlite3", mode="campaign")
    target.deliver(Webhook(1, "k1", request_row()))
    assert [(s, a) for s, a, _ in emulator[0].sent] == [(str(SURVEY), "email")]
    assert target.check() == []


def test_ping_is_asked_first_and_cached_per_person_and_survey(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    emu = emulator[0]
    emu.locked_out.add((str(SURVEY), "ada@example.com"))
    for n in range(3):
        target.deliver(Webhook(n, f"k{n}", request_row()))
    pings = [p for _, p, _ in emu.seen if p == "/api/ping"]
    assert len(pings) == 1  # max-age=3600: asked once
    assert emu.sent == []
    target.deliver(Webhook(9, "k9", request_row(sEmail="grace@example.com")))
    assert len([p for _, p, _ in emu.seen if p == "/api/ping"]) == 2
    assert [f["email"] for _, _, f in emu.sent] == ["grace@example.com"]


def test_surveyed_too_recently_is_an_outcome_recorded_not_retried(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    emulator[0].fail_next(422, ["This person was surveyed too recently."], path_contains="sendnow")
    target.deliver(Webhook(1, "k1", request_row()))  # ping says yes, the send says 422
    # nothing was sent, and deliver did not raise: nothing to retry
    assert emulator[0].sent == []
    entry = target.log.get(f"{SURVEY}.1")
    assert entry is not None and entry.outcome == sends.TOO_RECENT


def test_a_request_without_a_usable_address_is_recorded_as_skipped(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    for number, email in enumerate(["", "null", "not an address", "a@b"], start=1):
        target.deliver(Webhook(number, f"k{number}", request_row(sEmail=email)))
        entry = target.log.get(f"{SURVEY}.{number}")
        assert entry is not None and entry.outcome == sends.SKIPPED
    assert emulator[0].seen == []


def test_the_monthly_limit_is_final_and_shows_in_check(
    target: ThermostatTarget,
    emulator: tuple[ThermostatEmulator, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator[0].plan_use = emulator[0].plan_limit
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(1, "k1", request_row()))
    assert failed.value.final and failed.value.status == 402
    assert "monthly plan limit" in caplog.text
    with pytest.raises(BackendError, match="monthly plan limit is reached"):
        target.check()


def test_throttling_is_retried_no_sooner_than_the_api_asks(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    emulator[0].fail_next(429, ["Too Many Attempts."], throttled(42), path_contains="sendnow")
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(1, "k1", request_row()))
    assert failed.value.status == 429 and not failed.value.final
    assert failed.value.retry_after is not None and 41 <= failed.value.retry_after <= 42
    # until then, nothing is even sent
    with pytest.raises(DeliveryFailed):
        target.deliver(Webhook(1, "k1", request_row()))
    assert emulator[0].sent == []


def test_a_short_rate_limit_is_waited_out(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    emulator[0].fail_next(429, ["Too Many Attempts."], throttled(0), path_contains="sendnow")
    target.deliver(Webhook(1, "k1", request_row()))
    assert len(emulator[0].sent) == 1


def test_an_outage_is_retried(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    emulator[0].fail_next(503, "<html>down</html>", path_contains="sendnow")
    with pytest.raises(DeliveryFailed) as failed:
        target.deliver(Webhook(1, "k1", request_row()))
    assert failed.value.status == 503 and not failed.value.final
    target.deliver(Webhook(1, "k1", request_row()))
    assert len(emulator[0].sent) == 1


def test_push_returns_an_id_whose_details_show_the_answer(
    target: ThermostatTarget, emulator: tuple[ThermostatEmulator, str]
) -> None:
    push_id = target.push(PushRequest(request_row()))
    assert target.details(push_id).title == "Survey sent, not answered yet"
    emulator[0].answer("ada@example.com", 6, "Slow reply", at="2099-01-01 10:00:00")
    details = target.details(push_id)
    assert details.title == "Survey answered: 6 (detractor)"
    assert ("Feedback", "Slow reply") in details.rows


def test_a_push_that_sends_nothing_tells_staff_why(target: ThermostatTarget) -> None:
    with pytest.raises(BackendError, match="no usable e-mail"):
        target.push(PushRequest(request_row(sEmail="")))


# -- the index and the sync ---------------------------------------------------------------------


def submitter() -> tuple[list[tuple[str, dict[str, Any]]], WriteBack]:
    jobs: list[tuple[str, dict[str, Any]]] = []

    def submit(target: str, payload: Any) -> int:
        jobs.append((target, dict(payload)))
        return len(jobs)

    return jobs, WriteBack("helpspot", submit)


def test_lookups_show_scores_classes_and_how_old_the_data_is(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    emu, url = emulator
    emu.add_response(
        SURVEY, "Ada@Example.com", 10, "Lovely", {"customer_id": "1001", "xrequest": "7"}
    )
    emu.add_response(SURVEY, "ada@example.com", 7, "OK", {"customer_id": "1001", "xrequest": "8"})
    emu.add_response(CSAT, "ada@example.com", 4, "Quick", {"customer_id": "1001"})
    source = make_source(url, tmp_path / "i.sqlite3")
    with pytest.raises(BackendError, match="first sync"):
        source.find(ByEmail("ada@example.com"), 5)
    assert source.sync_now(None)
    (ada,) = source.find(ById("1001"), 5)
    assert ada.fields["latest_score"] == "4" and ada.fields["latest_class"] == "Good"
    assert ada.fields["latest_survey"] == "Support CSAT"
    assert (
        ada.fields["surveys"]
        == "Support CSAT: 1 answer, average 4.0; Support NPS: 2 answers, average 8.5"
    )
    assert ada.fields["data_age"].endswith("(less than a minute ago)")
    assert source.find(ByEmail("ADA@example.com"), 5)[0].fields["customer_id"] == "1001"


def test_nps_classes() -> None:
    from lookup_plugins.thermostat.client import Survey, score_class

    nps = Survey("1", "n", "nps")
    assert [score_class(s, nps) for s in (0, 6, 7, 8, 9, 10)] == [
        "detractor",
        "detractor",
        "passive",
        "passive",
        "promoter",
        "promoter",
    ]


def test_the_sync_reads_pages_of_500_and_stops_where_the_last_one_ended(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    emu, url = emulator
    for n in range(1203):
        emu.add_response(SURVEY, f"p{n}@example.com", n % 11, "", {"xrequest": str(100 + n)})
    source = make_source(url, tmp_path / "i.sqlite3")
    jobs, writeback = submitter()
    assert source.sync_now(writeback)
    assert emu.pages_read() == ["1", "2", "3", "1"]  # NPS: three pages; CSAT: one, empty
    assert len(jobs) == 1203 and all(job["kind"] == JOB_KIND for _, job in jobs)
    emu.seen.clear()
    emu.add_response(SURVEY, "new@example.com", 9, "Nice", {"xrequest": "99"})
    assert source.sync_now(writeback)
    assert emu.pages_read() == ["1", "1"]
    assert [job["xRequest"] for _, job in jobs[1203:]] == ["99"]
    assert source.find(ByEmail("new@example.com"), 1)[0].fields["latest_feedback"] == "Nice"


def test_a_job_the_outbox_could_not_take_is_handed_over_at_the_next_sync(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    emu, url = emulator
    emu.add_response(SURVEY, "ada@example.com", 9, "", {"xrequest": "5"})
    source = make_source(url, tmp_path / "i.sqlite3")
    jobs, working = submitter()

    def broken(target: str, payload: Any) -> int:
        raise BackendError("the webhook outbox is unusable: disk full")

    assert source.sync_now(WriteBack("helpspot", broken))
    assert source.find(ByEmail("ada@example.com"), 1)  # the answer is indexed all the same
    assert source.sync_now(working)
    assert source.sync_now(working)
    assert [job["xRequest"] for _, job in jobs] == ["5"]  # once


def test_a_crash_before_the_index_is_replaced_hands_the_job_over_again(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    emu, url = emulator
    emu.add_response(SURVEY, "ada@example.com", 9, "", {"xrequest": "5"})
    source = make_source(url, tmp_path / "i.sqlite3")
    jobs, writeback = submitter()
    real_replace = os.replace

    def crash(*args: Any) -> None:
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    assert not source.sync_now(writeback)
    monkeypatch.setattr(os, "replace", real_replace)
    assert source.sync_now(writeback)
    # handed over twice: the helpspot target's own mark makes it write once
    assert [job["response_id"] for _, job in jobs] == [jobs[0][1]["response_id"]] * 2


def test_only_one_process_syncs_at_a_time(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    from lookup_plugins.index_files import lock_unless_held

    path = tmp_path / "i.sqlite3"
    source = make_source(emulator[1], path)
    with lock_unless_held(path.with_name(path.name + ".lock")) as held:
        assert held
        assert not source.sync_now(None)  # another worker syncs: this one skips
    assert emulator[0].seen == [] or all(p == "/api/surveys" for _, p, _ in emulator[0].seen)
    assert source.sync_now(None)


def test_lookups_go_on_while_thermostat_is_down(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    emu, url = emulator
    emu.add_response(SURVEY, "ada@example.com", 9, "", {})
    source = make_source(url, tmp_path / "i.sqlite3")
    assert source.sync_now(None)
    emu.fail_next(503, "down", times=5)
    assert not source.sync_now(None)
    assert source.find(ByEmail("ada@example.com"), 1)[0].fields["latest_score"] == "9"


def test_check_proves_the_token_without_syncing(
    emulator: tuple[ThermostatEmulator, str], tmp_path: Path
) -> None:
    source = make_source(emulator[1], tmp_path / "i.sqlite3")
    assert source.check() == ["no answers indexed yet: the server syncs them when it starts"]
    assert not (tmp_path / "i.sqlite3").exists()
    bad = make_source(emulator[1], tmp_path / "j.sqlite3")
    bad.api._token = "wrong"
    with pytest.raises(BackendError, match="rejected the API token"):
        bad.check()
