"""The Shopify backend against the Admin GraphQL emulator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask, Response
from lookup_plugins.shopify_backend import ShopifyBackend, ShopifyOptions, search_query

from lookup_server.cli import cli
from lookup_server.config.settings import config_from_mapping
from lookup_server.core.models import LookupQuery
from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Secret,
    SourceSettings,
)
from lookup_server.web.app import create_app
from tests.conftest import assert_not_revealed
from tests.plugins.emulators import DOCS, documented_tables, serve
from tests.plugins.emulators.shopify import ShopifyCustomer, ShopifyEmulator, Term, flatten, parse
from tests.support.backend_contract import PEOPLE, BackendContract
from tests.support.hanging import HTTP_HEADERS_DRIP, as_source, dripping, hang_every_slot, wait_for
from tests.support.helpspot import assert_livelookup

TOKEN = "shpat_0123456789abcdef0123456789abcdef"
SHOP = "mystore.myshopify.com"
VERSION = "2026-10"
LAST_ORDER = {
    "legacyResourceId": "450789469",
    "name": "#1001 <b>",
    "createdAt": "2026-11-01T10:00:00Z",
    "displayFinancialStatus": "PAID",
    "displayFulfillmentStatus": "UNFULFILLED",
}
HOSTILE = [
    "email:* OR",
    'a" OR email:*',
    "back\\slash",
    "(x) OR (y)",
    "x\\",
    '"',
    "'",
    "last_name:*",
    "a' OR last_name:'b",
    "NOT Smith",
    "-Smith",
    "*",
]


def contract_customers() -> list[ShopifyCustomer]:
    """PEOPLE as Shopify customers (their title kept in the customer note)."""
    return [
        ShopifyCustomer(p.customer_id, p.first_name, p.last_name, p.email, p.phone, note=p.title)
        for p in PEOPLE
    ]


def store() -> list[ShopifyCustomer]:
    """The contract's people, one with orders, and 30 for paging."""
    customers = contract_customers()
    customers[0] = ShopifyCustomer(
        "1001",
        "Ada",
        "Lovelace",
        "ada@example.com",
        "+44 20 7946 0001",
        note="Analyst",
        tags=["vip", "<b>x</b>"],
        orders=3,
        amount="12.50",
        currency="EUR",
        last_order=LAST_ORDER,
    )
    customers += [
        ShopifyCustomer(str(3000 + i), f"P{i:02d}", "Pager", f"p{i}@example.com", "")
        for i in range(30)
    ]
    return customers


@pytest.fixture
def emulator() -> Iterator[tuple[ShopifyEmulator, str]]:
    """A fresh shop and its base URL."""
    emu = ShopifyEmulator(store(), TOKEN)
    with serve(emu.app()) as running:
        yield emu, running.base_url


def make_backend(
    base_url: str,
    token: str = TOKEN,
    timeout: float = 5.0,
    options: Mapping[str, Any] | None = None,
) -> ShopifyBackend:
    """A backend for the emulated shop; ``options`` replace or add ShopifyOptions keys."""
    opts = {
        "shop": SHOP,
        "access_token": Secret(token),
        "api_version": VERSION,
        "endpoint": base_url,
        **(options or {}),
    }
    return ShopifyBackend(
        ShopifyOptions(**opts), SourceSettings("shop", "shopify", timeout=timeout)
    )


@pytest.fixture
def backend(emulator: tuple[ShopifyEmulator, str]) -> ShopifyBackend:
    """A backend for ``emulator``."""
    return make_backend(emulator[1])


class TestShopifyContract(BackendContract):
    """The shared Live Lookup behaviour, through the app, against the emulator."""

    backend_name = "shopify"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> Iterator[dict[str, Any]]:
        emu = ShopifyEmulator(contract_customers(), TOKEN)
        with serve(emu.app()) as running:
            yield {
                "backend": "shopify",
                "shop": SHOP,
                "access_token": TOKEN,
                "api_version": VERSION,
                "endpoint": running.base_url,
                "fields": {"title": "note"},
                "html_fields": ["admin_link", "last_order_link"],
            }


# -- search syntax: input can never add a term ------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_every_value_is_one_quoted_term(text: str) -> None:
    terms = flatten(parse(search_query(ByName(text, text)) or ""))
    assert terms == [Term("last_name", text, prefix=True), Term("first_name", text, prefix=True)]
    assert flatten(parse(search_query(ByEmail(text)) or "")) == [Term("email", text)]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_reaches_shopify_as_one_term(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend, text: str
) -> None:
    emu, _ = emulator
    assert backend.find(ByName(text), 5) == []
    assert emu.parsed[-1] == [Term("last_name", text, prefix=True)]
    assert backend.find(ByEmail(text), 5) == []
    assert emu.parsed[-1] == [Term("email", text)]


def test_a_non_numeric_id_is_not_sent(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    assert backend.find(ById("1001 OR id:*"), 5) == []
    assert emulator[0].requests_seen == 0


# -- what a customer shows ----------------------------------------------------------------


def test_orders_spend_tags_and_last_order(backend: ShopifyBackend) -> None:
    (ada,) = backend.find(ById("1001"), 5)
    f = ada.fields
    assert (f["orders"], f["amount_spent"], f["tags"]) == ("3", "12.50 EUR", "vip, <b>x</b>")
    assert f["last_order"] == "#1001 <b>"
    assert f["last_order_date"] == "2026-11-01T10:00:00Z"
    assert (f["last_order_financial_status"], f["last_order_fulfillment_status"]) == (
        "PAID",
        "UNFULFILLED",
    )
    assert f["admin_link"] == (
        f'<a href="https://{SHOP}/admin/customers/1001" target="_blank" '
        'rel="noopener noreferrer">Open in Shopify admin</a>'
    )
    # the order's name is text from Shopify: escaped inside the HTML link
    assert f["last_order_link"].endswith(">Order #1001 &lt;b&gt;</a>")
    assert f'href="https://{SHOP}/admin/orders/450789469"' in f["last_order_link"]


def test_links_reach_helpspot_as_html_and_text_escaped(
    emulator: tuple[ShopifyEmulator, str], tmp_path: Any
) -> None:
    table = {
        "backend": "shopify",
        "shop": SHOP,
        "access_token": TOKEN,
        "api_version": VERSION,
        "endpoint": emulator[1],
        "html_fields": ["admin_link", "last_order_link"],
    }
    client = create_app({"sources": {"shop": table}}, base_dir=tmp_path).test_client()
    view = assert_livelookup(client.get("/livelookup/shop?customer_id=1001").data)
    (ada,) = view.customers
    assert ada["admin_link"].startswith('<a href="https://mystore.myshopify.com/admin/')
    assert ada["last_order_link"].endswith("Order #1001 &lt;b&gt;</a>")
    assert ada["tags"] == "vip, &lt;b&gt;x&lt;/b&gt;"


def test_phone_is_matched_by_digits(backend: ShopifyBackend) -> None:
    assert [c.customer_id for c in backend.find(ByPhone("442079460001"), 5)] == ["1001"]


def test_results_are_read_page_by_page(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    found = backend.find(ByName("Pager"), 28)
    assert len(found) == 28
    assert len(emulator[0].queries) == 2  # 25 + 3, the second page asked with a cursor


def test_cache_ttl_spares_the_api(emulator: tuple[ShopifyEmulator, str], tmp_path: Any) -> None:
    table = {
        "backend": "shopify",
        "shop": SHOP,
        "access_token": TOKEN,
        "api_version": VERSION,
        "endpoint": emulator[1],
        "cache_ttl": 60,
    }
    client = create_app({"sources": {"shop": table}}, base_dir=tmp_path).test_client()
    for _ in range(3):
        assert_livelookup(client.get("/livelookup/shop?email=ada@example.com").data)
    assert len(emulator[0].queries) == 1


# -- rate limits ---------------------------------------------------------------------------


def test_throttled_query_is_retried_when_the_bucket_refills_in_time(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    emulator[0].throttle_next(requested=50, available=50, restore_rate=100)
    assert [c.customer_id for c in backend.find(ById("1001"), 5)] == ["1001"]
    assert emulator[0].requests_seen == 2


def test_throttling_beyond_the_timeout_fails_at_once(
    emulator: tuple[ShopifyEmulator, str], caplog: pytest.LogCaptureFixture
) -> None:
    emulator[0].throttle_next(requested=1000, available=0, restore_rate=50)  # 20 s away
    with pytest.raises(BackendError, match=r"rate-limiting.*20 s") as err:
        make_backend(emulator[1], timeout=2).find(ById("1001"), 5)
    assert emulator[0].requests_seen == 1
    assert_not_revealed([TOKEN], str(err.value), caplog)


def test_http_429_waits_for_retry_after(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    emulator[0].fail_next(
        429, {"errors": "Exceeded 2 calls per second for api client."}, {"Retry-After": "0"}
    )
    assert len(backend.find(ById("1001"), 5)) == 1
    assert emulator[0].requests_seen == 2


def test_http_429_beyond_the_timeout(emulator: tuple[ShopifyEmulator, str]) -> None:
    emulator[0].fail_next(429, {"errors": "Throttled"}, {"Retry-After": "30"})
    with pytest.raises(BackendError, match=r"rate-limiting"):
        make_backend(emulator[1], timeout=1).find(ById("1001"), 5)


# -- failures ------------------------------------------------------------------------------


def test_bad_token(emulator: tuple[ShopifyEmulator, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "shpat_wrong_" + TOKEN
    with pytest.raises(BackendError, match=r"rejected the access token") as err:
        make_backend(emulator[1], token=wrong).find(ByEmail("ada@example.com"), 5)
    assert wrong not in str(err.value)
    assert all(wrong not in r.getMessage() for r in caplog.records)


def test_unknown_shop(emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend) -> None:
    emulator[0].shop_exists = False
    with pytest.raises(BackendError, match=r"does not know the shop mystore"):
        backend.find(ById("1001"), 5)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_outage(
    emulator: tuple[ShopifyEmulator, str],
    backend: ShopifyBackend,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator[0].fail_next(status, "<html>Oops</html>")
    with pytest.raises(BackendError, match=rf"having problems \(HTTP {status}\)") as err:
        backend.find(ById("1001"), 5)
    assert_not_revealed([TOKEN], str(err.value), caplog)


@pytest.mark.parametrize(
    "body,message",
    [
        ("<html>not json</html>", "unreadable answer"),
        ({"data": {"customers": None}}, "without a customers list"),
        ({"data": {"customers": {"nodes": "x"}}}, "malformed customers list"),
        ({"extensions": {}}, "without data"),
    ],
)
def test_malformed_answers(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend, body: Any, message: str
) -> None:
    emulator[0].fail_next(200, body)
    with pytest.raises(BackendError, match=message):
        backend.find(ById("1001"), 5)


def test_missing_scope_is_explained(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    emulator[0].fail_next(
        200,
        {
            "errors": [
                {
                    "message": "Access denied for customers field. "
                    "Required access: `read_customers` access scope.",
                    "extensions": {"code": "ACCESS_DENIED"},
                }
            ]
        },
    )
    with pytest.raises(BackendError, match=r"read_customers and read_orders"):
        backend.find(ById("1001"), 5)


def test_a_hanging_shop_times_out_within_the_source_timeout(tmp_path: Any) -> None:
    release = threading.Event()
    app = Flask("hanging")

    @app.post("/admin/api/<version>/graphql.json")
    def hang(version: str) -> Response:
        release.wait(30)
        return Response("{}", content_type="application/json")

    with serve(app) as running:
        try:
            with pytest.raises(BackendTimeout, match=r"did not answer within 0.5 s"):
                make_backend(running.base_url, timeout=0.5).find(ById("1001"), 5)
        finally:
            release.set()


def test_a_dripping_shop_gets_its_threads_and_connections_back(
    emulator: tuple[ShopifyEmulator, str],
) -> None:
    port = int(emulator[1].rsplit(":", 1)[1])
    with dripping(HTTP_HEADERS_DRIP, upstream=("127.0.0.1", port)) as server:
        source = as_source(make_backend(f"http://127.0.0.1:{server.port}", timeout=2))
        ada = LookupQuery(customer_id="1001")
        hang_every_slot(source, lambda: source.lookup(ada))
        wait_for(lambda: server.open_connections == 0, "every connection was closed")
        server.dripping = False
        assert [c.customer_id for c in source.lookup(ada)] == ["1001"]  # not "busy"


# -- configuration and check ------------------------------------------------------------------


def test_check_reads_shop_and_scopes(backend: ShopifyBackend) -> None:
    assert backend.check() == []


def test_check_reports_missing_scopes(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    emulator[0].scopes = ["read_customers"]
    with pytest.raises(BackendError, match=r"lacks the access scopes read_orders"):
        backend.check()


def test_check_warns_when_shopify_serves_another_version(
    emulator: tuple[ShopifyEmulator, str], backend: ShopifyBackend
) -> None:
    emulator[0].served_version = "2026-01"
    (warning,) = backend.check()
    assert "2026-01, not 2026-10" in warning


@pytest.mark.parametrize(
    "options,message",
    [
        ({"shop": "evil.example.com"}, "not a myshopify.com domain"),
        ({"api_version": "2024-10"}, "2025-01 or newer"),
        ({"api_version": "latest"}, "must be a release"),
    ],
)
def test_bad_settings_are_reported_by_key(
    emulator: tuple[ShopifyEmulator, str], options: dict[str, str], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        make_backend(emulator[1], options=options).prepare()


def test_search_query_shapes() -> None:
    build: Callable[..., str | None] = search_query
    assert build(ById("42")) == 'id:"42"'
    assert build(ByEmail('a"b@x.com')) == 'email:"a\\"b@x.com"'
    assert build(ByPhone("5550102000")) == 'phone:"5550102000"'
    assert build(ByName("O'Brien", "Se")) == 'last_name:"O\'Brien*" first_name:"Se*"'
    assert build(ByName("a:(b)\\")) == 'last_name:"a\\:\\(b\\)\\\\*"'


def test_the_documented_source_is_valid(tmp_path: Any) -> None:
    raw = documented_tables(DOCS / "shopify.md")
    config = config_from_mapping(raw, tmp_path, environ={"SHOPIFY_TOKEN": TOKEN})
    source = config.sources["shop"]
    assert source.settings.html_fields == {"admin_link", "last_order_link"}
    source.create_backend().prepare()


def test_lookup_server_check(
    emulator: tuple[ShopifyEmulator, str], tmp_path: Path, runner: CliRunner
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[sources.shop]
backend = "shopify"
shop = "{SHOP}"
access_token = {{ env = "SHOPIFY_TOKEN" }}
api_version = "{VERSION}"
endpoint = "{emulator[1]}"
""",
        encoding="utf-8",
    )
    good = runner.invoke(cli, ["check", "--config", str(config)], env={"SHOPIFY_TOKEN": TOKEN})
    assert good.exit_code == 0, good.output
    assert "ok   sources.shop (shopify: livelookup)" in good.output
    bad = runner.invoke(cli, ["check", "--config", str(config)], env={"SHOPIFY_TOKEN": "nope"})
    assert bad.exit_code == 1
    assert "FAIL sources.shop (shopify: livelookup): Shopify rejected the access token" in (
        bad.output
    )
