"""The Highrise backend (lookup and Request Push) against the Highrise emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.highrise_backend import HighriseBackend, HighriseOptions, HighriseTarget
from lxml import etree

from lookup_server.config.settings import config_from_mapping
from lookup_server.core.models import LookupQuery
from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    PushRequest,
    Secret,
    SourceSettings,
    TargetSettings,
)
from tests.conftest import assert_not_revealed
from tests.plugins.emulators import DOCS, documented_tables, serve
from tests.plugins.emulators.highrise import HighriseEmulator, HighrisePerson
from tests.support.backend_contract import PEOPLE, BackendContract, Lookup
from tests.support.hanging import HTTP_BODY_DRIP, as_source, dripping, hang_every_slot, wait_for
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

TOKEN = "605b32dd0123456789abcdef"


def contract_people() -> list[HighrisePerson]:
    """PEOPLE as Highrise people."""
    return [
        HighrisePerson(
            p.customer_id, p.first_name, p.last_name, [p.email], [p.phone], title=p.title
        )
        for p in PEOPLE
    ]


def account() -> list[HighrisePerson]:
    """The contract's people, a richer one, and 30 for paging."""
    people = contract_people()
    people[0] = HighrisePerson(
        "1001",
        "Ada",
        "Lovelace",
        ["ada@home.example", "ada@example.com"],
        ["+44 20 7946 0001"],
        title="Analyst",
        background="Met at <b>the</b> conference",
        company="Analytical & Co",
        company_id="77",
        notes=[
            ("2026-01-01T10:00:00Z", "first <i>note</i>"),
            ("2026-03-01T10:00:00Z", "second note"),
            ("2026-02-01T10:00:00Z", "middle note"),
        ],
    )
    people += [
        HighrisePerson(str(3000 + i), f"P{i:02d}", "Pager", [f"p{i}@example.com"], [])
        for i in range(30)
    ]
    return people


@pytest.fixture
def emulator() -> Iterator[tuple[HighriseEmulator, str]]:
    """A fresh account and its URL."""
    emu = HighriseEmulator(account(), TOKEN)
    with serve(emu.app()) as running:
        yield emu, running.base_url


def make_backend(
    url: str, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> HighriseBackend:
    """A backend for the emulated account."""
    opts = HighriseOptions(url=url, token=Secret(token), **options)
    return HighriseBackend(opts, SourceSettings("crm", "highrise", timeout=timeout))


@pytest.fixture
def backend(emulator: tuple[HighriseEmulator, str]) -> HighriseBackend:
    """A source for ``emulator``."""
    return make_backend(emulator[1])


def make_target(
    url: str, token: str = TOKEN, timeout: float = 5.0, **options: Any
) -> HighriseTarget:
    """A Request Push target for the emulated account."""
    opts = HighriseOptions(url=url, token=Secret(token), **options)
    return HighriseTarget(opts, TargetSettings("crm", "highrise", timeout=timeout))


@pytest.fixture
def target(emulator: tuple[HighriseEmulator, str]) -> HighriseTarget:
    """A target for ``emulator`` whose company comes from Custom3."""
    return make_target(emulator[1], company_field="Custom3", notes_shown=2)


class TestHighriseContract(BackendContract):
    """The shared Live Lookup behaviour, through the app, against the emulator."""

    backend_name = "highrise"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> Iterator[dict[str, Any]]:
        emu = HighriseEmulator(contract_people(), TOKEN)
        with serve(emu.app()) as running:
            yield {
                "backend": "highrise",
                "url": running.base_url,
                "token": TOKEN,
                "html_fields": ["highrise_link"],
            }

    def test_phone_matches_by_digits_whatever_the_format(self, lookup: Lookup) -> None:
        # Overridden: Highrise documents no search by phone digits (criteria[phone]
        # compares the stored text), so a phone finds nobody and the core moves on
        # to the next strategy; a name still finds the person.
        assert lookup(phone="555 010 2000").customers == []
        view = lookup(phone="555 010 2000", last_name="Núñez")
        assert [c["customer_id"] for c in view.customers] == ["1002"]


class TestHighriseTargetContract(TargetContract):
    """The shared target behaviour (Request Push), against the emulator."""

    backend_name = "highrise"

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(HighriseEmulator(account(), CONTRACT_SECRET).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self) -> MakeTarget:
        def make(address: str, timeout: float) -> HighriseTarget:
            return make_target(address, CONTRACT_SECRET, timeout, company_field="Custom3")

        return make


# -- lookup ------------------------------------------------------------------------------------


def test_person_fields_and_link(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    (ada,) = backend.find(ById("1001"), 5)
    assert ada.fields == {
        "customer_id": "1001",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@home.example",
        "phone": "+44 20 7946 0001",
        "title": "Analyst",
        "company": "Analytical & Co",
        "background": "Met at <b>the</b> conference",
        "highrise_link": f'<a href="{emulator[1]}/people/1001" target="_blank" '
        'rel="noopener noreferrer">Ada Lovelace in Highrise</a>',
    }


def test_email_search_shows_the_address_that_matched(backend: HighriseBackend) -> None:
    (ada,) = backend.find(ByEmail("ADA@example.com"), 5)
    assert ada.fields["email"] == "ada@example.com"


def test_email_search_uses_criteria(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    backend.find(ByEmail("ada@example.com"), 5)
    assert emulator[0].seen[-1] == (
        "GET",
        "/people/search.xml",
        {"criteria[email]": "ada@example.com", "n": "0"},
    )


def test_name_search_pages_by_25(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    found = backend.find(ByName("Pager"), 28)
    assert len(found) == 28
    offsets = [args["n"] for _, path, args in emulator[0].seen if path == "/people/search.xml"]
    assert offsets == ["0", "25"]


def test_phone_is_never_sent(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    assert backend.find(ByPhone("5550102000"), 5) == []
    assert emulator[0].seen == []


def test_unknown_and_non_numeric_ids(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    assert backend.find(ById("424242"), 5) == []
    assert backend.find(ById("1001.xml?x=1"), 5) == []
    assert len(emulator[0].seen) == 1


def test_basic_auth_with_token_and_user_agent(
    backend: HighriseBackend, emulator: tuple[HighriseEmulator, str]
) -> None:
    assert backend.check() == []
    assert emulator[0].seen == [("GET", "/account.xml", {})]
    assert emulator[0].user_agents == ["lookup-server (HelpSpot integration)"]


# -- failures ----------------------------------------------------------------------------------


def test_bad_token(
    emulator: tuple[HighriseEmulator, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendError, match=r"rejected the API token") as err:
        make_backend(emulator[1], token="wrong" + TOKEN).check()
    assert "wrong" not in str(err.value)
    assert_not_revealed([TOKEN], str(err.value), caplog)


def test_unknown_account(emulator: tuple[HighriseEmulator, str], backend: HighriseBackend) -> None:
    emulator[0].fail_next(404, "", path_contains="/account.xml")
    with pytest.raises(BackendError, match=r"no account at"):
        backend.check()


def test_rate_limit_503_is_retried_after_retry_after(
    emulator: tuple[HighriseEmulator, str], backend: HighriseBackend
) -> None:
    emulator[0].fail_next(503, "", {"Retry-After": "0"}, times=2)
    assert [c.customer_id for c in backend.find(ByEmail("ada@example.com"), 5)] == ["1001"]
    assert len(emulator[0].seen) == 3


def test_rate_limit_beyond_the_timeout(
    emulator: tuple[HighriseEmulator, str], caplog: pytest.LogCaptureFixture
) -> None:
    emulator[0].fail_next(503, "", {"Retry-After": "10"})
    with pytest.raises(BackendError, match=r"rate-limiting requests and asks to wait 10 s") as err:
        make_backend(emulator[1], timeout=1).find(ByEmail("ada@example.com"), 5)
    assert len(emulator[0].seen) == 1
    assert_not_revealed([TOKEN], str(err.value), caplog)


@pytest.mark.parametrize("status", [500, 502])
def test_outage(
    emulator: tuple[HighriseEmulator, str], backend: HighriseBackend, status: int
) -> None:
    emulator[0].fail_next(status, "<html>down</html>")
    with pytest.raises(BackendError, match=rf"having problems \(HTTP {status}\)"):
        backend.find(ByName("Lovelace"), 5)


@pytest.mark.parametrize(
    "body,message",
    [
        ("<html><body>maintenance", "unreadable answer"),
        ("<?xml version='1.0'?><person><id>1</id></person>", "expected <people>"),
        ("", "unreadable answer"),
    ],
)
def test_malformed_answers(
    emulator: tuple[HighriseEmulator, str], backend: HighriseBackend, body: str, message: str
) -> None:
    emulator[0].fail_next(200, body)
    with pytest.raises(BackendError, match=message):
        backend.find(ByName("Lovelace"), 5)


def test_entities_are_not_expanded(
    emulator: tuple[HighriseEmulator, str], backend: HighriseBackend
) -> None:
    evil = (
        '<?xml version="1.0"?><!DOCTYPE people [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<people><person><id>1</id><first-name>&x;</first-name>"
        "<last-name>Lovelace</last-name></person></people>"
    )
    emulator[0].fail_next(200, evil)
    (found,) = backend.find(ByName("Lovelace"), 5)
    assert "root" not in found.fields["first_name"]


def test_ssl_redirect_is_explained(
    emulator: tuple[HighriseEmulator, str], backend: HighriseBackend
) -> None:
    emulator[0].fail_next(302, "", {"Location": "https://example.highrisehq.com/account.xml"})
    with pytest.raises(BackendError, match=r"redirected.*http or https"):
        backend.check()


# -- Request Push --------------------------------------------------------------------------------


def pushed(**data: object) -> PushRequest:
    """A pushed request as HelpSpot sends it (the fields this target reads)."""
    base: dict[str, object] = {
        "xRequest": "12400",
        "sFirstName": "Grace",
        "sLastName": "Hopper",
        "sEmail": "grace@example.com",
        "sPhone": "555-010-1111",
        "Custom3": "Navy & <Co>",
        "staff_comment": "VIP <b>caller</b>",
        "fullname": "Grace Hopper",
    }
    return PushRequest({**base, **data})


def test_push_creates_a_person(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    person_id = target.push(pushed())
    created = emulator[0].people[-1]
    assert person_id == created.id
    assert (created.first_name, created.last_name) == ("Grace", "Hopper")
    assert (created.emails, created.phones) == (["grace@example.com"], ["555-010-1111"])
    assert (created.company, created.background) == ("Navy & <Co>", "VIP <b>caller</b>")
    sent = etree.fromstring(emulator[0].created[-1])
    assert sent.findtext("contact-data/email-addresses/email-address/location") == "Work"


def test_push_finds_the_person_with_that_email(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    assert target.push(pushed(sEmail="ADA@example.com")) == "1001"
    assert emulator[0].created == []


def test_push_survives_control_characters(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    target.push(pushed(sEmail="", sFirstName="Nul\x00l", staff_comment="a\x0bb"))
    assert (emulator[0].people[-1].first_name, emulator[0].people[-1].background) == ("Null", "ab")


def test_push_without_name_or_email(target: HighriseTarget) -> None:
    with pytest.raises(BackendError, match=r"no customer name or e-mail"):
        target.push(pushed(sEmail="", sFirstName="", sLastName="", fullname=""))


def test_push_into_a_full_account(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    emulator[0].fail_next(507, "", path_contains="/people.xml")
    with pytest.raises(BackendError, match=r"cannot hold more people"):
        target.push(pushed())


def test_push_refused_with_errors(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    emulator[0].fail_next(
        422,
        "<errors><error>First name can't be blank</error></errors>",
        path_contains="/people.xml",
    )
    with pytest.raises(BackendError, match=r"refused the new person: First name can't be blank"):
        target.push(pushed())


def test_details_show_name_link_and_latest_notes(
    emulator: tuple[HighriseEmulator, str], target: HighriseTarget
) -> None:
    details = target.details("1001")
    assert details.title == "Ada Lovelace"
    assert details.link == f"{emulator[1]}/people/1001"
    assert details.rows == (
        ("Company", "Analytical & Co"),
        ("Title", "Analyst"),
        ("Email", "ada@home.example, ada@example.com"),
        ("Phone", "+44 20 7946 0001"),
        ("Note, 2026-03-01", "second note"),
        ("Note, 2026-02-01", "middle note"),
    )


def test_details_of_a_deleted_person(target: HighriseTarget) -> None:
    with pytest.raises(BackendError, match=r"no longer exists"):
        target.details("424242")
    with pytest.raises(BackendError, match=r"no longer exists"):
        target.details("../account")


def test_the_documented_source_is_valid(tmp_path: Any) -> None:
    raw = documented_tables(DOCS / "highrise.md")
    # [targets.*] belongs to the push configuration; the lookup source is checked here
    sources = {"sources": raw["sources"]}
    config = config_from_mapping(sources, tmp_path, environ={"HIGHRISE_TOKEN": TOKEN})
    assert config.sources["crm"].options.url == "https://example.highrisehq.com"
    assert raw["targets"]["highrise"]["company_field"] == "Custom3"


def test_push_and_details_through_the_push_route(
    emulator: tuple[HighriseEmulator, str], tmp_path: Path
) -> None:
    """What the PHP bridge calls: a [targets.NAME] of backend highrise, over HTTP."""
    from lookup_server.web.app import create_app

    app = create_app(
        {
            "server": {"shared_key": "push-key_0123456789abcdef"},
            "targets": {
                "hr": {
                    "backend": "highrise",
                    "url": emulator[1],
                    "token": TOKEN,
                    "company_field": "Custom3",
                }
            },
        },
        base_dir=tmp_path,
    )
    client = app.test_client()
    auth = {"Authorization": "Bearer push-key_0123456789abcdef"}
    answer = client.post("/push/hr", json=dict(pushed().data), headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json is not None
    person_id = answer.json["id"]
    assert person_id == emulator[0].people[-1].id
    details = client.get(f"/push/hr/{person_id}", headers=auth)
    assert details.status_code == 200
    assert "Grace Hopper" in details.text and "Navy &amp; &lt;Co&gt;" in details.text
    assert TOKEN not in details.text


def test_a_dripping_highrise_gets_its_threads_and_connections_back(
    emulator: tuple[HighriseEmulator, str],
) -> None:
    port = int(emulator[1].rsplit(":", 1)[1])
    with dripping(HTTP_BODY_DRIP, upstream=("127.0.0.1", port)) as server:
        source = as_source(make_backend(f"http://127.0.0.1:{server.port}", timeout=2))
        ada = LookupQuery(customer_id="1001")
        hang_every_slot(source, lambda: source.lookup(ada))
        wait_for(lambda: server.open_connections == 0, "every connection was closed")
        server.dripping = False
        assert [c.customer_id for c in source.lookup(ada)] == ["1001"]  # not "busy"
