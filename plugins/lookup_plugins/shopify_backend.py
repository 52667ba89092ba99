"""Shopify customers through the Admin GraphQL API (``backend = "shopify"``).

Searches with Shopify's search syntax, every value quoted and escaped so that
what a customer typed can never add a search term; re-checks each result
literally (Shopify's search is tokenized and fuzzy). Honours Shopify's rate
limits (HTTP 429 ``Retry-After`` and the GraphQL cost bucket) within the
source's timeout.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
import shopify

from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    ByPhone,
    Customer,
    SearchTerm,
    Secret,
    SourceBackend,
    matches_literally,
    with_field_map,
)

from . import http_client
from .http_client import Deadline, dig, text_of

log = logging.getLogger(__name__)
VENDOR = "Shopify"
#: The oldest Admin API version with Customer.defaultEmailAddress/defaultPhoneNumber.
MIN_API_VERSION = "2025-01"
REQUIRED_SCOPES = ("read_customers", "read_orders")
#: Customers per GraphQL page, and pages read before giving up on more matches.
PAGE_SIZE = 25
MAX_PAGES = 4

_SHOP = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_VERSION = re.compile(r"\d{4}-\d{2}")
#: Shopify's special characters, the quote that delimits our values, and the
#: prefix-query star (escaped so only the star we add means "prefix").
_SPECIAL = re.compile(r'([\\"():*])')

CUSTOMERS_QUERY = """
query LookupCustomers($query: String!, $first: Int!, $after: String) {
  customers(first: $first, after: $after, query: $query) {
    nodes {
      id legacyResourceId firstName lastName note tags numberOfOrders
      defaultEmailAddress { emailAddress }
      defaultPhoneNumber { phoneNumber }
      amountSpent { amount currencyCode }
      lastOrder {
        legacyResourceId name createdAt displayFinancialStatus displayFulfillmentStatus
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CHECK_QUERY = """
query LookupServerCheck {
  shop { name myshopifyDomain }
  currentAppInstallation { accessScopes { handle } }
}
"""


@dataclass(frozen=True)
class ShopifyOptions:
    """The ``[sources.NAME]`` keys of a Shopify source."""

    shop: str
    access_token: Secret
    api_version: str
    #: Base URL replacing https://SHOP (tests, proxies); the API path is kept.
    endpoint: str = ""


def search_value(text: str, prefix: bool = False) -> str:
    """``text`` as one double-quoted Shopify search value, special characters escaped.

    With ``prefix`` a bare ``*`` ends the value: a prefix query of the literal text.
    """
    return '"' + _SPECIAL.sub(r"\\\1", text) + ("*" if prefix else "") + '"'


def search_query(term: SearchTerm) -> str | None:
    """The Shopify search query for ``term``; None when it cannot match anything."""
    if isinstance(term, ById):
        # Shopify ids are numbers: anything else finds nobody, so do not ask.
        return f"id:{search_value(term.customer_id)}" if term.customer_id.isdigit() else None
    if isinstance(term, ByEmail):
        return f"email:{search_value(term.address)}"
    if isinstance(term, ByPhone):
        return f"phone:{search_value(term.digits)}"
    query = f"last_name:{search_value(term.last, prefix=True)}"
    if term.first:
        query += f" first_name:{search_value(term.first, prefix=True)}"
    return query


class ShopifyGraphQL(shopify.GraphQL):  # type: ignore[misc]
    """shopify.GraphQL for one shop, with timeouts and without printing errors.

    The library's ``execute`` reads the process-wide active session, has no
    timeout and prints error bodies to stdout (where the command-line Live
    Lookup writes its XML), so requests are sent here with ``requests``.
    """

    def __init__(self, session: shopify.Session, base_url: str) -> None:
        # Not calling super().__init__: it reads the globally activated session.
        self.endpoint = session.version.api_path(base_url) + "/graphql.json"
        self.headers = {"X-Shopify-Access-Token": session.token}
        self.http = http_client.AbortableSession()

    def execute_within(
        self, query: str, variables: Mapping[str, Any], deadline: Deadline
    ) -> requests.Response:
        """POST one GraphQL document; HTTP 429 is retried while the deadline allows."""
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers
        )
        return http_client.send(
            self.http,
            "POST",
            self.endpoint,
            deadline,
            vendor=VENDOR,
            json={"query": query, "variables": dict(variables)},
            headers=headers,
            retry_statuses=(429,),
        )


class ShopifyBackend(SourceBackend[ShopifyOptions]):
    """Live Lookup of Shopify customers with orders, spend, tags and admin links."""

    Options = ShopifyOptions

    _client: ShopifyGraphQL | None = None

    # -- capabilities -----------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Customers matching ``term``, read page by page until ``limit`` match."""
        query = search_query(term)
        if query is None:
            return []
        deadline = Deadline(self.source.timeout)
        found: list[Customer] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            variables = {"query": query, "first": PAGE_SIZE, "after": after}
            page = dig(self._execute(CUSTOMERS_QUERY, variables, deadline), "customers")
            nodes, has_next, after = _page_parts(page)
            for node in nodes:
                fields = self._fields(node)
                if matches_literally(term, fields):
                    found.append(Customer(with_field_map(fields, self.source)))
            if len(found) >= limit or not has_next:
                break
        return found[:limit]

    def check(self) -> list[str]:
        """Read the shop and the app's scopes; warn about an outdated api_version."""
        deadline = Deadline(self.source.timeout)
        response = self._post(CHECK_QUERY, {}, deadline)
        data = self._data(response, CHECK_QUERY, {}, deadline)
        granted = {
            text_of(dig(s, "handle"))
            for s in _as_list(dig(data, "currentAppInstallation", "accessScopes"))
        }
        missing = [s for s in REQUIRED_SCOPES if s not in granted]
        if missing:
            raise BackendError(
                f"the Shopify app lacks the access scopes {', '.join(missing)}; "
                "add them to the custom app's Admin API configuration"
            )
        served = response.headers.get("X-Shopify-API-Version", self.options.api_version)
        if served != self.options.api_version:
            return [
                f"Shopify answered with API version {served}, not {self.options.api_version}"
                " (no longer supported): update api_version"
            ]
        return []

    def prepare(self) -> None:
        """Validate shop and api_version before the first lookup."""
        self._graphql()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.http.close()

    # -- GraphQL ------------------------------------------------------------------------

    def _graphql(self) -> ShopifyGraphQL:
        if self._client is None:
            shop, version = self.options.shop.strip().lower(), self.options.api_version
            if not _SHOP.fullmatch(shop):
                raise BackendError(
                    f"sources.{self.source.name}.shop: {shop!r} is not a "
                    "myshopify.com domain (like mystore.myshopify.com)"
                )
            if not _VERSION.fullmatch(version) or version < MIN_API_VERSION:
                raise BackendError(
                    f"sources.{self.source.name}.api_version: {version!r} must "
                    f"be a release like 2026-10, {MIN_API_VERSION} or newer"
                )
            session = shopify.Session(shop, version, self.options.access_token.reveal())
            base = self.options.endpoint.rstrip("/") or f"https://{shop}"
            self._client = ShopifyGraphQL(session, base)
        return self._client

    def _post(
        self, query: str, variables: Mapping[str, Any], deadline: Deadline
    ) -> requests.Response:
        response = self._graphql().execute_within(query, variables, deadline)
        _raise_for_status(response, self.options.shop)
        return response

    def _execute(self, query: str, variables: Mapping[str, Any], deadline: Deadline) -> Any:
        return self._data(self._post(query, variables, deadline), query, variables, deadline)

    def _data(
        self,
        response: requests.Response,
        query: str,
        variables: Mapping[str, Any],
        deadline: Deadline,
    ) -> Any:
        """The ``data`` of an answer, waiting out THROTTLED errors while time allows."""
        while True:
            body = http_client.json_body(response, VENDOR)
            errors = _as_list(dig(body, "errors"))
            if not errors:
                data = dig(body, "data")
                if not isinstance(data, dict):
                    raise BackendError("Shopify sent an answer without data; try again later")
                return data
            codes = {text_of(dig(e, "extensions", "code")) for e in errors}
            if "THROTTLED" not in codes:
                raise _graphql_error(errors, codes)
            wait = _throttle_wait(body)
            if not deadline.allows(wait):
                raise http_client.throttled_error(VENDOR, wait, deadline)
            log.info("Shopify query throttled; retrying in %.1f s", wait)
            deadline.wait(wait)
            response = self._post(query, variables, deadline)

    # -- results ------------------------------------------------------------------------

    def _fields(self, node: Any) -> dict[str, str]:
        customer_id = text_of(dig(node, "legacyResourceId"))
        fields = {
            "customer_id": customer_id,
            "first_name": text_of(dig(node, "firstName")),
            "last_name": text_of(dig(node, "lastName")),
            "email": text_of(dig(node, "defaultEmailAddress", "emailAddress")),
            "phone": text_of(dig(node, "defaultPhoneNumber", "phoneNumber")),
        }
        extras = {
            "admin_link": self._link("customers", customer_id, "Open in Shopify admin"),
            "note": text_of(dig(node, "note")),
            "orders": text_of(dig(node, "numberOfOrders")),
            "amount_spent": " ".join(
                filter(
                    None,
                    (
                        text_of(dig(node, "amountSpent", "amount")),
                        text_of(dig(node, "amountSpent", "currencyCode")),
                    ),
                )
            ),
            "tags": ", ".join(text_of(t) for t in _as_list(dig(node, "tags"))),
            **self._last_order(dig(node, "lastOrder")),
        }
        return fields | {k: v for k, v in extras.items() if v}

    def _last_order(self, order: Any) -> dict[str, str]:
        if not isinstance(order, dict):
            return {}
        name = text_of(order.get("name"))
        return {
            "last_order": name,
            "last_order_date": text_of(order.get("createdAt")),
            "last_order_financial_status": text_of(order.get("displayFinancialStatus")),
            "last_order_fulfillment_status": text_of(order.get("displayFulfillmentStatus")),
            "last_order_link": self._link(
                "orders", text_of(order.get("legacyResourceId")), f"Order {name}"
            ),
        }

    def _link(self, kind: str, legacy_id: str, text: str) -> str:
        """An admin link as HTML; every part escaped, since the core sends it as CDATA."""
        if not legacy_id:
            return ""
        shop = self.options.shop.strip().lower()
        url = f"https://{shop}/admin/{kind}/{quote(legacy_id, safe='')}"
        return (
            f'<a href="{html.escape(url, quote=True)}" target="_blank" '
            f'rel="noopener noreferrer">{html.escape(text)}</a>'
        )


def _page_parts(page: Any) -> tuple[list[Any], bool, str | None]:
    """Nodes, whether there is a next page, and its cursor; BackendError if malformed."""
    if not isinstance(page, dict):
        raise BackendError("Shopify sent an answer without a customers list; try again later")
    nodes = page.get("nodes")
    if nodes is None:  # the edges form of the same connection
        nodes = [dig(edge, "node") for edge in _as_list(page.get("edges"))]
    if not isinstance(nodes, list):
        raise BackendError("Shopify sent a malformed customers list; try again later")
    cursor = dig(page, "pageInfo", "endCursor")
    has_next = dig(page, "pageInfo", "hasNextPage") is True and isinstance(cursor, str)
    return nodes, has_next, cursor if isinstance(cursor, str) else None


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _throttle_wait(body: Any) -> float:
    """Seconds until the cost bucket holds the requested cost again."""
    cost = dig(body, "extensions", "cost")
    requested = dig(cost, "requestedQueryCost")
    available = dig(cost, "throttleStatus", "currentlyAvailable")
    rate = dig(cost, "throttleStatus", "restoreRate")
    numbers = [float(n) for n in (requested, available, rate) if isinstance(n, int | float)]
    if len(numbers) != 3 or numbers[2] <= 0:
        return http_client.DEFAULT_RETRY_WAIT
    need, have, per_second = numbers
    return max(0.0, (need - have) / per_second)


def _raise_for_status(response: requests.Response, shop: str) -> None:
    status = response.status_code
    if status == 200:
        return
    if status == 401:
        raise BackendError(
            f"Shopify rejected the access token for {shop} (HTTP 401); check access_token"
        )
    if status == 402:
        raise BackendError(f"the Shopify shop {shop} is frozen (HTTP 402: unpaid)")
    if status == 403:
        raise BackendError(
            f"Shopify refused access to {shop} (HTTP 403); the app needs "
            "the read_customers and read_orders scopes"
        )
    if status == 404:
        raise BackendError(
            f"Shopify does not know the shop {shop} or the API version "
            "(HTTP 404); check shop and api_version"
        )
    if status >= 500:
        raise http_client.outage_error(VENDOR, status)
    raise BackendError(f"Shopify answered HTTP {status}; check the source's settings")


def _graphql_error(errors: list[Any], codes: set[str]) -> BackendError:
    if "ACCESS_DENIED" in codes:
        return BackendError(
            "Shopify denied access to customer data; the app needs the "
            "read_customers and read_orders scopes"
        )
    message = text_of(dig(errors[0], "message"))[:200] or "unknown error"
    return BackendError(f"Shopify rejected the lookup: {message}")
