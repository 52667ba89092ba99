"""The LDAP backend against a real OpenLDAP slapd the tests start themselves.

Active Directory is stood in for by slapd with AD's own attribute definitions
(tests/plugins/data/ldap/ad.schema). slapd implements AD's bitwise matching
rule (integerBitAndMatch, 1.2.840.113556.1.4.803) natively, so disabled
accounts are excluded here by the very filter sent to a real domain controller.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from lookup_plugins.ldap.backend import LdapBackend, LdapOptions

from lookup_server.core.models import LookupQuery
from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Customer,
    Option,
    OptionsQuery,
    SearchTerm,
    Secret,
    SourceSettings,
    phone_digits,
    phone_matches,
)
from tests.plugins.ldap_directory import (
    BOSS_CN,
    BOSS_DISPLAY,
    CONTRACT_AD,
    CONTRACT_OPENLDAP,
    EXTRA,
    STAFF,
    UAC_ENABLED,
    ZOE_GUID,
    ZOE_SID,
    colleagues,
    directory,
)
from tests.plugins.slapd import SERVICE_DN, SERVICE_PASSWORD, Slapd, free_port, slapd_available
from tests.support.backend_contract import PEOPLE, BackendContract
from tests.support.hanging import as_source, dripping, hang_every_slot, wait_for
from tests.support.requirements import need

MakeBackend = Callable[..., LdapBackend]


def _need_slapd() -> None:
    need(slapd_available(), "slapd not installed (apt-get install slapd ldap-utils openssl)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The full test directory, shared by every test that does not stop it."""
    _need_slapd()
    slapd = Slapd(tmp_path_factory.mktemp("slapd"))
    slapd.load(directory())
    slapd.start()
    yield slapd
    slapd.stop()


@pytest.fixture
def spare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Slapd]]:
    """Start extra directories (same data) that a test may stop, restart or freeze."""
    _need_slapd()
    started: list[Slapd] = []

    def start() -> Slapd:
        slapd = Slapd(tmp_path_factory.mktemp("spare"), tls=False)
        slapd.load(directory())
        slapd.start()
        started.append(slapd)
        return slapd

    yield start
    for slapd in started:
        if slapd.process is not None:
            slapd.resume()  # a test may have failed while slapd was frozen
        slapd.stop()


@pytest.fixture
def make() -> Iterator[MakeBackend]:
    """Build LdapBackends like the config layer does; close them afterwards."""
    built: list[LdapBackend] = []

    def make(
        url: str | list[str],
        base_dn: str = STAFF,
        preset: Literal["active_directory", "openldap"] = "active_directory",
        fields: dict[str, str] | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> LdapBackend:
        urls = [url] if isinstance(url, str) else url
        opts = LdapOptions(
            url=urls,
            bind_dn=options.pop("bind_dn", SERVICE_DN),
            password=Secret(options.pop("password", SERVICE_PASSWORD)),
            base_dn=base_dn,
            preset=preset,
            **options,
        )
        source = SourceSettings(name="ad", backend="ldap", timeout=timeout, fields=fields or {})
        backend = LdapBackend(opts, source)
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()


def _source_table(slapd: Slapd, base_dn: str, preset: str) -> dict[str, Any]:
    return {
        "backend": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "password": SERVICE_PASSWORD,
        "base_dn": base_dn,
        "preset": preset,
    }


class TestActiveDirectoryContract(BackendContract):
    backend_name = "ldap"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, server: Slapd) -> dict[str, Any]:
        return _source_table(server, CONTRACT_AD, "active_directory")


class TestOpenLdapContract(BackendContract):
    backend_name = "ldap"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, server: Slapd) -> dict[str, Any]:
        return _source_table(server, CONTRACT_OPENLDAP, "openldap")


def _ids(customers: list[Customer] | Any) -> list[str]:
    return sorted(c.customer_id for c in customers)


# -- values ---------------------------------------------------------------------------------


def test_active_directory_preset_fields(server: Slapd, make: MakeBackend) -> None:
    (zoe,) = make(server.url).find(ById("zoe.lemaitre"), 10)
    assert dict(zoe.fields) == {
        "customer_id": "zoe.lemaitre",
        "first_name": "Zoë",
        "last_name": "Le Maître",
        "email": "zoe@corp.example",
        "phone": "+33 1 42 68 53 00",
        "title": "Directrice « Ventes »",
        "department": "Sales",
        "company": "Example Ltd",
        "manager": BOSS_DISPLAY,
    }


def test_binary_attributes_in_string_forms_and_photos_never(
    server: Slapd, make: MakeBackend
) -> None:
    fields = {
        "Custom1": "objectGUID",
        "Custom2": "objectSid",
        "Custom3": "thumbnailPhoto",
        "photo": "thumbnailPhoto",
    }
    backend = make(server.url, fields=fields)
    (zoe,) = backend.find(ById("zoe.lemaitre"), 10)
    assert zoe.fields["Custom1"] == str(ZOE_GUID)
    assert zoe.fields["Custom2"] == ZOE_SID
    assert zoe.fields["Custom3"] == ""  # an empty CustomN element; the photo never leaves
    assert "photo" not in zoe.fields
    assert any("thumbnailPhoto is a photo" in w for w in backend.check())


def test_member_of_reduces_to_group_cns(server: Slapd, make: MakeBackend) -> None:
    (zoe,) = make(server.url, fields={"groups": "memberOf:cn"}).find(ById("zoe.lemaitre"), 1)
    assert zoe.fields["groups"] == "Sales (EMEA), All Staff"


def test_manager_falls_back_to_the_cn_of_its_dn(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url, fields={"manager": "manager>employeeNumber|manager:cn"})
    (zoe,) = backend.find(ById("zoe.lemaitre"), 1)
    assert zoe.fields["manager"] == BOSS_CN  # "D'Arcy, Dana (CEO)", unescaped from the DN


def test_multi_valued_attributes_join_or_pick_by_index(server: Slapd, make: MakeBackend) -> None:
    fields = {"all_mail": "mail", "second_phone": "telephoneNumber[1]", "notes": "description"}
    backend = make(server.url, base_dn=EXTRA, preset="openldap", fields=fields)
    (multi,) = backend.find(ById("multi"), 10)
    assert multi.fields["email"] == "multi@example.org"  # HelpSpot inserts a single address
    assert multi.fields["all_mail"] == "multi@example.org, multi.alias@example.org"
    assert multi.fields["second_phone"] == "+49 30 901821"
    assert multi.fields["notes"] == "first line, second line"
    assert _ids(backend.find(ByEmail("MULTI.ALIAS@example.org"), 10)) == ["multi"]
    assert _ids(backend.find(ByPhone(phone_digits("30 901821")), 10)) == ["multi"]


# -- strategies on the hard cases ----------------------------------------------------------


def test_email_matches_smtp_proxy_addresses_only(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    (zoe,) = backend.find(ByEmail("ZOE.Alias@corp.example"), 10)
    assert zoe.fields["email"] == "zoe@corp.example"  # the primary address, not the alias
    assert backend.find(ByEmail("zoe.sip@corp.example"), 10) == []  # sip:, not smtp:
    assert backend.find(ByEmail("*@corp.example"), 10) == []


def test_disabled_accounts_are_excluded(server: Slapd, make: MakeBackend) -> None:
    assert _ids(make(server.url).find(ByName("Leaver"), 10)) == ["here3"]
    assert make(server.url).find(ById("gone1"), 10) == []
    everyone = make(server.url, exclude_disabled=False)
    assert _ids(everyone.find(ByName("Leaver"), 10)) == ["gone1", "gone2", "here3"]


def test_user_filter_replaces_the_people_filter(server: Slapd, make: MakeBackend) -> None:
    sales = make(server.url, user_filter="(&(objectClass=user)(department=Sales))")
    sales_mullers = [
        (p.customer_id, uac)
        for i, (p, uac, _) in enumerate(colleagues())
        if i % 3 == 0 and p.last_name.startswith("Müller")
    ]  # department Sales
    expected = [sam for sam, uac in sales_mullers if uac == UAC_ENABLED]
    assert expected and len(expected) < len(sales_mullers)  # the disabled ones stay out
    assert _ids(sales.find(ByName("Müller"), 100)) == sorted(expected)


@pytest.mark.parametrize("last", ["müller", "O'CONNOR", "ñandú", "çelik", "de la pe", "nguyễn"])
def test_accented_names_match_ignoring_case(server: Slapd, make: MakeBackend, last: str) -> None:
    expected = [
        p.customer_id
        for p, uac, _ in colleagues()
        if p.last_name.casefold().startswith(last.casefold()) and uac == UAC_ENABLED
    ]
    assert expected  # the data set really holds such names
    assert _ids(make(server.url).find(ByName(last), 100)) == sorted(expected)


#: The hand-made users of ou=staff besides the generated colleagues (all enabled).
SPECIAL_STAFF = {
    "boss": "D'Arcy",
    "zoe.lemaitre": "Le Maître",
    "star": "Wild*Card",
    "paren": "(Paren) Parker",
    "here3": "Leaver here3",
}


@pytest.mark.parametrize(
    "last",
    [
        "Wild*",
        "Wild*C",
        "Wi*",
        "(Paren)",
        "(P*",
        "*",
        "Back\\Slash",
        "Back\\",
        "\\",
        "\x00",
        "Le Maître",
        "D'Arcy",
        "d'a",
        ")",
    ],
)
def test_filter_characters_in_names_match_literally(
    server: Slapd, make: MakeBackend, last: str
) -> None:
    everyone = {
        **SPECIAL_STAFF,
        **{p.customer_id: p.last_name for p, uac, _ in colleagues() if uac == UAC_ENABLED},
    }
    expected = [i for i, name in everyone.items() if name.casefold().startswith(last.casefold())]
    assert _ids(make(server.url).find(ByName(last), 400)) == sorted(expected)


def test_literal_matching_is_not_vacuous(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    assert _ids(backend.find(ByName("Wild*C"), 10)) == ["star"]
    assert _ids(backend.find(ByName("(Paren)"), 10)) == ["paren"]
    assert len(backend.find(ByName("Back\\"), 100)) > 5


@pytest.mark.parametrize("hostile", ["*", "*)(sAMAccountName=*", "u0001)(|(a=*", "\\2a", "\x00"])
def test_hostile_ids_and_emails_find_nothing(
    server: Slapd, make: MakeBackend, hostile: str
) -> None:
    backend = make(server.url)
    assert backend.find(ById(hostile), 10) == []
    assert backend.find(ByEmail(hostile + "@corp.example"), 10) == []


@pytest.mark.parametrize("typed", ["+44 (161) 496-0042", "161 496 0042", "4960042", "0042"])
def test_phone_matches_like_every_source(server: Slapd, make: MakeBackend, typed: str) -> None:
    digits = phone_digits(typed)
    expected = [
        p.customer_id
        for p, uac, _ in colleagues()
        if phone_matches(p.phone, digits) and uac == UAC_ENABLED
    ]
    assert _ids(make(server.url).find(ByPhone(digits), 100)) == sorted(expected)


def test_customer_id_is_exact(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    assert _ids(backend.find(ById("u0001"), 10)) == ["u0001"]
    assert backend.find(ById("U0001"), 10) == []  # the directory ignores case; ids do not
    assert backend.find(ById("u000"), 10) == []


def test_size_limit_caps_what_one_search_reads(server: Slapd, make: MakeBackend) -> None:
    assert len(make(server.url).find(ByName("Dupont"), 100)) > 3
    assert len(make(server.url, size_limit=3).find(ByName("Dupont"), 100)) == 3


def test_paged_search_reads_every_page_and_abandons_the_rest(
    server: Slapd, make: MakeBackend
) -> None:
    backend = make(server.url, exclude_disabled=False)
    backend.page_size = 2  # phone candidates are checked here, a page at a time
    leavers = ByPhone(phone_digits("555-400-0100"))
    assert _ids(backend.find(leavers, 10)) == ["gone1", "gone2", "here3"]
    assert len(backend.find(leavers, 1)) == 1  # stops after the first page
    # the same pooled connection goes on working after the abandoned paged search
    assert _ids(backend.find(ByPhone(phone_digits("+44 161 496 0298")), 10)) == ["u0298"]
    assert len(backend._pool.idle()) == 1


# -- AJAX options ------------------------------------------------------------------------


def test_options_list_people_matching_what_was_typed(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    assert list(backend.find_options(OptionsQuery(search="zoe.le"), 10)) == [
        Option("zoe.lemaitre", "Zoë Le Maître <zoe@corp.example>")
    ]
    assert [o.value for o in backend.find_options(OptionsQuery(search="le maî"), 10)] == [
        "zoe.lemaitre"
    ]
    assert backend.find_options(OptionsQuery(search="z"), 10) == []
    assert backend.find_options(OptionsQuery(search="*"), 10) == []
    assert len(backend.find_options(OptionsQuery(search="Dupont"), 4)) == 4


# -- check() -----------------------------------------------------------------------------------


def test_check_passes_and_warns_about_cleartext(server: Slapd, make: MakeBackend) -> None:
    assert make(server.ldaps_url, ca_file=server.ca_file).check() == []
    warnings = make(server.url).check()
    assert len(warnings) == 1 and "unencrypted" in warnings[0]


def test_check_reports_bad_credentials_without_the_password(
    server: Slapd, make: MakeBackend
) -> None:
    backend = make(server.url, password="not-the-password")
    with pytest.raises(BackendError, match="invalid credentials") as raised:
        backend.check()
    assert "not-the-password" not in str(raised.value)
    with pytest.raises(BackendError, match="invalid credentials"):
        backend.find(ById("u0001"), 10)


def test_check_reports_a_missing_base_dn(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url, base_dn="ou=nowhere,dc=example,dc=com")
    with pytest.raises(BackendError, match="base_dn 'ou=nowhere,dc=example,dc=com' was not found"):
        backend.check()


def test_check_reports_an_unreachable_server(make: MakeBackend) -> None:
    with pytest.raises(BackendError, match=r"cannot connect to ldap://127\.0\.0\.1:"):
        make(f"ldap://127.0.0.1:{free_port()}").check()


def test_check_reports_a_bad_user_filter(server: Slapd, make: MakeBackend) -> None:
    with pytest.raises(BackendError, match="user_filter is not a valid LDAP filter"):
        make(server.url, user_filter="(objectClass=user").check()


# -- TLS -----------------------------------------------------------------------------------------


def test_ldaps_and_start_tls_verify_against_ca_file(server: Slapd, make: MakeBackend) -> None:
    for backend in (
        make(server.ldaps_url, ca_file=server.ca_file),
        make(server.url, ca_file=server.ca_file, start_tls=True),
    ):
        assert _ids(backend.find(ById("zoe.lemaitre"), 1)) == ["zoe.lemaitre"]


@pytest.mark.parametrize("tls", ["ldaps", "start_tls"])
def test_untrusted_certificate_is_a_tls_failure(server: Slapd, make: MakeBackend, tls: str) -> None:
    url, extra = (server.ldaps_url, {}) if tls == "ldaps" else (server.url, {"start_tls": True})
    backend = make(url, **extra)  # no ca_file: the system store does not know our test CA
    with pytest.raises(BackendError, match="TLS failure"):
        backend.check()


def test_certificate_must_name_the_host_in_url(server: Slapd, make: MakeBackend) -> None:
    # the test certificate names only 127.0.0.1; localhost reaches the same server
    for backend in (
        make(f"ldaps://localhost:{server.tls_port}", ca_file=server.ca_file),
        make(f"ldap://localhost:{server.port}", ca_file=server.ca_file, start_tls=True),
    ):
        with pytest.raises(BackendError, match="the certificate does not name localhost"):
            backend.check()


# -- connections: pooling, failover, restarts --------------------------------------------------


def test_connections_are_pooled_not_bound_per_lookup(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    backend.find(ById("u0001"), 1)
    (pooled,) = backend._pool.idle()
    for _ in range(20):
        backend.find(ById("u0001"), 1)
    assert backend._pool.idle() == [pooled]


def test_old_idle_connections_are_replaced(
    server: Slapd, make: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:

    backend = make(server.url)
    backend.find(ById("u0001"), 1)
    (first,) = backend._pool.idle()
    monkeypatch.setattr(backend._pool, "max_idle", 0.0)  # every idle connection is now too old
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    (second,) = backend._pool.idle()
    assert second is not first and first.closed


def test_prepare_opens_the_first_connection(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    backend.prepare()
    assert len(backend._pool.idle()) == 1
    with pytest.raises(BackendError, match="cannot connect"):
        make(f"ldap://127.0.0.1:{free_port()}").prepare()


def test_threads_share_the_backend_safely(server: Slapd, make: MakeBackend) -> None:
    backend = make(server.url)
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(n, 300, 7):
            want = f"u{i:04d}"
            found = _ids(backend.find(ById(want), 5))
            if found != ([want] if i % 10 != 9 else []):
                wrong.append(f"{want}: {found}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_failover_to_the_next_url(server: Slapd, make: MakeBackend) -> None:
    backend = make([f"ldap://127.0.0.1:{free_port()}", server.url])
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    assert any("failover URL unusable: cannot connect" in w for w in backend.check())


def test_primary_stopping_mid_run_fails_over(spare: Callable[[], Slapd], make: MakeBackend) -> None:
    first, second = spare(), spare()
    backend = make([first.url, second.url])
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    first.stop()
    assert _ids(backend.find(ById("u0002"), 1)) == ["u0002"]


def test_restart_fails_fast_then_recovers_same_backend(
    spare: Callable[[], Slapd], make: MakeBackend
) -> None:
    slapd = spare()
    backend = make(slapd.url)
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    slapd.stop()
    with pytest.raises(BackendError, match="cannot connect"):
        backend.find(ById("u0001"), 1)
    slapd.start()
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    slapd.stop()
    slapd.start()  # this time the pooled connection is stale when the next lookup comes
    assert _ids(backend.find(ById("u0002"), 1)) == ["u0002"]


def test_frozen_server_times_out_then_recovers(
    spare: Callable[[], Slapd], make: MakeBackend
) -> None:
    slapd = spare()
    backend = make(slapd.url, timeout=2.0)
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]
    slapd.pause()
    with pytest.raises(BackendTimeout):
        backend.find(ById("u0001"), 1)
    slapd.resume()
    assert _ids(backend.find(ById("u0001"), 1)) == ["u0001"]


#: An LDAP message announcing 1 MiB, whose bytes then come one at a time.
LDAP_MESSAGE_DRIP = b"\x30\x84\x00\x10\x00\x00"


def test_a_dripping_directory_gets_its_threads_and_connections_back(
    server: Slapd, make: MakeBackend
) -> None:
    # faster than ldap3's receive timeout (whole seconds, at least 1): no read ever times out
    with dripping(
        LDAP_MESSAGE_DRIP, b"\x00", interval=0.25, upstream=("127.0.0.1", server.port)
    ) as proxy:
        proxy.dripping = False
        source = as_source(make(f"ldap://127.0.0.1:{proxy.port}", timeout=1.0))
        query = LookupQuery(customer_id="u0001")
        try:
            assert _ids(source.lookup(query)) == ["u0001"]  # one bound connection pooled
            proxy.dripping = True  # the pooled one hangs mid-search, new ones in their bind
            hang_every_slot(source, lambda: source.lookup(query))
            wait_for(lambda: proxy.open_connections == 0, "every connection was closed")
            proxy.dripping = False
            assert _ids(source.lookup(query)) == ["u0001"]  # not "busy": fresh connections
        finally:
            source.backend.close()


def test_restart_through_http_shows_helpspot_an_error(
    spare: Callable[[], Slapd], tmp_path: Path
) -> None:
    from lookup_server.web.app import create_app
    from tests.support.helpspot import assert_livelookup, helpspot_error

    slapd = spare()
    table = _source_table(slapd, CONTRACT_AD, "active_directory")
    client = create_app({"sources": {"ad": table}}, base_dir=tmp_path).test_client()
    ada = PEOPLE[0]

    def get() -> Any:
        return client.get("/livelookup/ad", query_string={"customer_id": ada.customer_id})

    assert assert_livelookup(get().data).customers[0]["last_name"] == ada.last_name
    slapd.stop()
    down = get()
    assert down.status_code == 502
    assert b"cannot connect to ldap://127.0.0.1" in down.data
    assert helpspot_error(down.data)  # staff see "An Error Occurred", not "No customers"
    slapd.start()
    assert assert_livelookup(get().data).customers[0]["last_name"] == ada.last_name


# -- configuration ---------------------------------------------------------------------------


def test_bad_attribute_specs_are_reported_with_their_key(make: MakeBackend) -> None:
    with pytest.raises(BackendError, match=r"fields\.Custom1"):
        make("ldap://127.0.0.1:1", fields={"Custom1": "memberOf:bogus"})


def test_filters_escape_every_value(make: MakeBackend) -> None:
    backend = make("ldap://127.0.0.1:1")

    def clause(term: SearchTerm) -> str:
        plan = backend._plan(term)
        assert plan is not None, f"{term!r} is searched for"
        return plan.clause

    assert clause(ById("*)(uid=*")) == r"(sAMAccountName=\2a\29\28uid=\2a)"
    assert clause(ByName("a\\b", "(x")) == r"(sn=a\5cb*)(givenName=\28x*)"
    assert clause(ByPhone("5550102000")) == (  # the last 7 digits
        "(|(telephoneNumber=*0*1*0*2*0*0*0*)(mobile=*0*1*0*2*0*0*0*))"
    )


def test_a_port_that_is_not_ldap_is_reported(make: MakeBackend) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_like_a_web_server() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_like_a_web_server, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        with pytest.raises(BackendError, match=f"127.0.0.1:{port}"):
            make(f"ldap://127.0.0.1:{port}").check()
        thread.join(timeout=10)
