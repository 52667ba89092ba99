"""The Microsoft Graph backend against the Entra sign-in + Graph emulator (TLS)."""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.msgraph_backend import MsGraphBackend, MsGraphOptions

from lookup_server.config.settings import config_from_mapping
from lookup_server.core.models import LookupQuery
from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Secret,
    SourceSettings,
)
from tests.conftest import assert_not_revealed
from tests.plugins.emulators import DOCS, documented_tables, serve
from tests.plugins.emulators.msgraph import (
    GraphEmulator,
    GraphUser,
    make_tls,
    parse_filter,
    parse_search,
)
from tests.support.backend_contract import PEOPLE, BackendContract, Lookup
from tests.support.hanging import DrippingApp, as_source, hang_every_slot, wait_for

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
SECRET = "qWg8Q~sEcReT.value-that-must-never-show"
BOSS = "b0b0b0b0-0000-4000-8000-000000000001"


def object_id(customer_id: str) -> str:
    """A stable object id (GUID) for a contract person."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"user/{customer_id}"))


def contract_users() -> list[GraphUser]:
    """PEOPLE as directory users, the customer id in employeeId."""
    return [
        GraphUser(
            object_id(p.customer_id),
            p.first_name,
            p.last_name,
            p.email,
            [p.phone],
            p.title,
            employee_id=p.customer_id,
        )
        for p in PEOPLE
    ]


def directory() -> list[GraphUser]:
    """The contract's users, a manager, and 30 for paging."""
    users = contract_users()
    users[0].manager_id = BOSS
    users[0].department = "R&D"
    users.append(GraphUser(BOSS, "Grace", "Hopper", "grace@example.com", [], "Director"))
    users += [
        GraphUser(
            str(uuid.uuid4()),
            f"P{i:02d}",
            "Pager",
            f"p{i}@example.com",
            [],
            employee_id=str(3000 + i),
        )
        for i in range(30)
    ]
    return users


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """The emulator's TLS context and the CA file that trusts it."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def emulator(tls: tuple[ssl.SSLContext, Path]) -> Iterator[GraphEmulator]:
    """A fresh tenant, served over TLS."""
    emu = GraphEmulator(directory(), TENANT, CLIENT_ID, SECRET)
    with serve(emu.app(), tls[0]) as running:
        emu.base_url = running.base_url
        yield emu


def make_backend(
    emu: GraphEmulator, ca: Path, timeout: float = 5.0, **options: Any
) -> MsGraphBackend:
    """A backend for the emulated tenant."""
    opts: dict[str, Any] = {
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": Secret(SECRET),
        "id_property": "employeeId",
        "authority_host": emu.base_url,
        "graph_endpoint": emu.base_url,
        "ca_bundle": ca,
        **options,
    }
    return MsGraphBackend(MsGraphOptions(**opts), SourceSettings("ad", "msgraph", timeout=timeout))


@pytest.fixture
def backend(emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path]) -> MsGraphBackend:
    """A backend for ``emulator``."""
    return make_backend(emulator, tls[1])


def assert_no_secret(text: str, caplog: pytest.LogCaptureFixture, emulator: GraphEmulator) -> None:
    """Neither the secret nor any issued token is in ``text`` or a log record."""
    assert_not_revealed([SECRET, *emulator.issued], text, caplog)


class TestMsGraphContract(BackendContract):
    """The shared Live Lookup behaviour, through the app, against the emulator."""

    backend_name = "msgraph"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
        context, ca = make_tls(tmp_path_factory.mktemp("contract-tls"))
        emu = GraphEmulator(contract_users(), TENANT, CLIENT_ID, SECRET)
        with serve(emu.app(), context) as running:
            emu.base_url = running.base_url
            yield {
                "backend": "msgraph",
                "tenant": TENANT,
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "id_property": "employeeId",
                "authority_host": running.base_url,
                "graph_endpoint": running.base_url,
                "ca_bundle": str(ca),
            }

    def test_phone_matches_by_digits_whatever_the_format(self, lookup: Lookup) -> None:
        # Overridden: Graph's $filter on businessPhones/mobilePhone compares the whole
        # stored string and $search does not index them, so digits cannot find a user;
        # the phone strategy finds nobody and the core moves on to the name.
        assert lookup(phone="555 010 2000").customers == []
        view = lookup(phone="555 010 2000", last_name="Núñez")
        assert [c["customer_id"] for c in view.customers] == ["1002"]


# -- queries ---------------------------------------------------------------------------------


def test_filter_doubles_single_quotes(backend: MsGraphBackend, emulator: GraphEmulator) -> None:
    hostile = "o'brien' or mail eq 'ada@example.com"
    assert backend.find(ByEmail(hostile), 5) == []
    args, consistency = emulator.user_queries[-1]
    assert args["$filter"] == "mail eq 'o''brien'' or mail eq ''ada@example.com'"
    assert parse_filter(args["$filter"]) == [[("mail", hostile)]]
    assert args["$expand"] == "manager($select=displayName)"
    assert consistency == ""


@pytest.mark.parametrize("text", ['a" OR "givenName:x', "back\\", '\\"', 'O"Brien'])
def test_search_escapes_double_quotes(
    backend: MsGraphBackend, emulator: GraphEmulator, text: str
) -> None:
    assert backend.find(ByName(text, text), 5) == []
    args, consistency = emulator.user_queries[-1]
    assert consistency == "eventual" and args["$count"] == "true"
    assert parse_search(args["$search"]) == [[("surname", text), ("givenName", text)]]


def test_name_search_with_manager(backend: MsGraphBackend) -> None:
    (ada,) = backend.find(ByName("lovel", "a"), 5)
    assert ada.fields == {
        "customer_id": "1001",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0001",
        "title": "Analyst",
        "department": "R&D",
        "user_principal_name": "ada@contoso.onmicrosoft.com",
        "manager": "Grace Hopper",
    }


def test_exact_lookups_expand_the_manager(backend: MsGraphBackend) -> None:
    (ada,) = backend.find(ById("1001"), 5)
    assert ada.fields["manager"] == "Grace Hopper"
    (also,) = backend.find(ByEmail("ADA@EXAMPLE.COM"), 5)
    assert also.fields["customer_id"] == "1001"


def test_object_ids_are_checked_before_asking(
    emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path]
) -> None:
    backend = make_backend(emulator, tls[1], id_property="id")
    assert backend.find(ById("1001"), 5) == []
    assert emulator.user_queries == []
    (ada,) = backend.find(ById(object_id("1001")), 5)
    assert ada.fields["first_name"] == "Ada"


def test_phone_is_never_sent(backend: MsGraphBackend, emulator: GraphEmulator) -> None:
    assert backend.find(ByPhone("5550102000"), 5) == []
    assert emulator.token_requests == 0


def test_paging_follows_next_link(backend: MsGraphBackend, emulator: GraphEmulator) -> None:
    assert len(backend.find(ByName("Pager"), 28)) == 28
    assert [a.get("$skiptoken") for a, _ in emulator.user_queries] == [None, "25"]


def test_next_link_to_another_host_is_not_followed(
    backend: MsGraphBackend, emulator: GraphEmulator
) -> None:
    emulator.fail_next(200, {"value": [], "@odata.nextLink": "https://evil.example/v1.0/users"})
    assert backend.find(ByName("Pager"), 5) == []


def test_token_is_cached_until_it_expires(backend: MsGraphBackend, emulator: GraphEmulator) -> None:
    for _ in range(3):
        backend.find(ById("1001"), 5)
    assert backend.check() == []
    assert emulator.token_requests == 1


# -- failures ---------------------------------------------------------------------------------


def test_wrong_secret(
    emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make_backend(emulator, tls[1], client_secret=Secret("wrong-" + SECRET))
    with pytest.raises(BackendError, match=r"rejected the app's credentials.*AADSTS7000215") as e:
        backend.find(ByName("Lovelace"), 5)
    assert "wrong-" not in str(e.value)
    assert all("wrong-" not in r.getMessage() for r in caplog.records)
    assert_no_secret(str(e.value), caplog, emulator)


def test_unknown_tenant(
    emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make_backend(emulator, tls[1], tenant="nosuch.onmicrosoft.com")
    with pytest.raises(BackendError, match=r"does not know the tenant 'nosuch") as err:
        backend.check()
    assert_no_secret(str(err.value), caplog, emulator)


def test_unknown_app(emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path]) -> None:
    backend = make_backend(emulator, tls[1], client_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(BackendError, match=r"unauthorized_client, AADSTS700016"):
        backend.check()


def test_successful_lookups_log_no_secret(
    backend: MsGraphBackend, emulator: GraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend.find(ByName("Lovelace"), 5)
    backend.find(ById("1001"), 5)
    assert emulator.issued
    assert_no_secret("", caplog, emulator)


def test_a_rejected_token_is_replaced_once(
    backend: MsGraphBackend, emulator: GraphEmulator
) -> None:
    backend.find(ById("1001"), 5)
    emulator.fail_next(
        401,
        {
            "error": {
                "code": "InvalidAuthenticationToken",
                "message": "Access token has expired or is not yet valid.",
            }
        },
    )
    assert len(backend.find(ById("1001"), 5)) == 1
    assert emulator.token_requests == 2


def test_a_token_rejected_twice_is_reported(
    backend: MsGraphBackend, emulator: GraphEmulator
) -> None:
    emulator.fail_next(
        401,
        {
            "error": {
                "code": "InvalidAuthenticationToken",
                "message": "Access token validation failure.",
            }
        },
        times=2,
    )
    with pytest.raises(BackendError, match="rejected the access token"):
        backend.find(ById("1001"), 5)


def test_missing_permission(backend: MsGraphBackend, emulator: GraphEmulator) -> None:
    emulator.fail_next(
        403,
        {
            "error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
            }
        },
    )
    with pytest.raises(BackendError, match=r"User.Read.All"):
        backend.check()


def test_throttling_is_retried_after_retry_after(
    backend: MsGraphBackend, emulator: GraphEmulator
) -> None:
    emulator.fail_next(
        429,
        {"error": {"code": "TooManyRequests", "message": "Too many"}},
        {"Retry-After": "0"},
        times=2,
    )
    assert len(backend.find(ById("1001"), 5)) == 1
    assert emulator.script == []  # both 429s were served, then the real answer


def test_throttling_beyond_the_timeout(
    emulator: GraphEmulator, tls: tuple[ssl.SSLContext, Path], caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(emulator, tls[1], timeout=2)
    emulator.fail_next(
        429, {"error": {"code": "TooManyRequests", "message": "Too many"}}, {"Retry-After": "120"}
    )
    with pytest.raises(BackendError, match=r"rate-limiting requests and asks to wait 120 s") as e:
        backend.find(ById("1001"), 5)
    assert_no_secret(str(e.value), caplog, emulator)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_outage(backend: MsGraphBackend, emulator: GraphEmulator, status: int) -> None:
    emulator.fail_next(status, {"error": {"code": "UnknownError", "message": ""}})
    with pytest.raises(BackendError, match=rf"having problems \(HTTP {status}\)"):
        backend.find(ById("1001"), 5)


@pytest.mark.parametrize(
    "body,message",
    [
        ("<html>gateway</html>", "unreadable answer"),
        ({"value": "nope"}, "malformed user list"),
        ([1, 2], "unexpected answer"),
    ],
)
def test_malformed_answers(
    backend: MsGraphBackend, emulator: GraphEmulator, body: Any, message: str
) -> None:
    emulator.fail_next(200, body)
    with pytest.raises(BackendError, match=message):
        backend.find(ById("1001"), 5)


def test_bad_request_is_reported_with_graph_code(
    backend: MsGraphBackend, emulator: GraphEmulator
) -> None:
    emulator.fail_next(
        400, {"error": {"code": "Request_UnsupportedQuery", "message": "Unsupported Query."}}
    )
    with pytest.raises(BackendError, match=r"Request_UnsupportedQuery: Unsupported Query."):
        backend.find(ByName("Lovelace"), 5)


def test_untrusted_certificate(emulator: GraphEmulator) -> None:
    backend = make_backend(emulator, Path("/etc/ssl/certs/ca-certificates.crt"))
    with pytest.raises(BackendError, match=r"CERTIFICATE_VERIFY_FAILED|SSLError"):
        backend.check()


def test_the_documented_source_is_valid(tmp_path: Path) -> None:
    raw = documented_tables(DOCS / "msgraph.md")
    config = config_from_mapping(raw, tmp_path, environ={"GRAPH_SECRET": SECRET})
    options = config.sources["staff"].options
    assert (options.id_property, options.authority_host) == (
        "employeeId",
        "https://login.microsoftonline.com",
    )


def test_a_dripping_sign_in_gets_its_threads_and_connections_back(
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    emulator = GraphEmulator(directory(), TENANT, CLIENT_ID, SECRET)
    app = DrippingApp(emulator.app())
    with serve(app, tls[0]) as running:
        try:
            emulator.base_url = running.base_url
            source = as_source(make_backend(emulator, tls[1], timeout=2))
            ada = LookupQuery(customer_id=PEOPLE[0].customer_id)
            hang_every_slot(source, lambda: source.lookup(ada))
            wait_for(lambda: app.open_connections == 0, "every connection was closed")
            app.dripping = False
            assert [c.customer_id for c in source.lookup(ada)] == [PEOPLE[0].customer_id]
        finally:
            app.stop()
