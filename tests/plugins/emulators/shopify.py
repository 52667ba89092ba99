"""A Shopify Admin GraphQL API stand-in: the ``customers(query:)`` connection.

Shapes follow shopify.dev: ``POST /admin/api/VERSION/graphql.json`` with
``X-Shopify-Access-Token``; answers ``{"data": ..., "extensions": {"cost":
{... "throttleStatus": ...}}}``; a THROTTLED error is HTTP 200 with
``errors[].extensions.code``; a bad token is HTTP 401 with ``{"errors": "[API]
Invalid API key or access token ..."}``. The search query is parsed with the
documented grammar (terms, AND/OR, -/NOT, parentheses, quoted values with
backslash escapes, trailing ``*`` prefix) and every parse is recorded so tests
can see exactly which terms a backend's query produced.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from flask import Flask, Response, request

from lookup_server.plugin import phone_digits, phone_matches
from tests.plugins.emulators import Scripted

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


@dataclass
class ShopifyCustomer:
    """One stored customer."""

    legacy_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    note: str = ""
    tags: list[str] = field(default_factory=list)
    orders: int = 0
    amount: str = "0.0"
    currency: str = "USD"
    last_order: dict[str, str] | None = None

    def node(self) -> dict[str, Any]:
        """The Customer object as the Admin API returns it."""
        order = None
        if self.last_order is not None:
            order = {
                "id": f"gid://shopify/Order/{self.last_order['legacyResourceId']}",
                **self.last_order,
            }
        return {
            "id": f"gid://shopify/Customer/{self.legacy_id}",
            "legacyResourceId": self.legacy_id,
            "firstName": self.first_name or None,
            "lastName": self.last_name or None,
            "note": self.note or None,
            "tags": list(self.tags),
            "numberOfOrders": str(self.orders),  # UnsignedInt64 is serialised as a string
            "defaultEmailAddress": {"emailAddress": self.email} if self.email else None,
            "defaultPhoneNumber": {"phoneNumber": self.phone} if self.phone else None,
            "amountSpent": {"amount": self.amount, "currencyCode": self.currency},
            "lastOrder": order,
        }


# -- the search syntax ------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One parsed search term."""

    field: str  # "" for a bare value
    value: str
    prefix: bool = False
    negated: bool = False


@dataclass(frozen=True)
class Group:
    """A parenthesised sub-query, ``NOT (...)`` or ``-(...)`` when negated."""

    negated: bool
    query: Query


#: A parsed query: OR of AND-groups, each item a term or a parenthesised sub-query.
Query: TypeAlias = "list[list[Term | Group]]"


@dataclass
class _Lexer:
    text: str
    pos: int = 0

    def tokens(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif ch in "()":
                out.append((ch, ch))
                self.pos += 1
            elif ch in "\"'":
                out.append(("value", self._quoted(ch)))
            else:
                out.extend(self._bare())
        return out

    def _quoted(self, quote: str) -> tuple[str, bool]:
        self.pos += 1
        chars: list[str] = []
        prefix = False
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            prefix = ch == "*" and self.text[self.pos + 1 : self.pos + 2] == quote
            if not prefix:
                chars.append(ch)
            self.pos += 1
        self.pos += 1
        return "".join(chars), prefix

    def _bare(self) -> list[tuple[str, Any]]:
        chars: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isspace() or ch in "()":
                break
            if ch == "\\" and self.pos + 1 < len(self.text):
                chars.append("\\" + self.text[self.pos + 1])
                self.pos += 2
                continue
            chars.append(ch)
            self.pos += 1
            if ch == ":":
                name = "".join(chars[:-1])
                if self.pos < len(self.text) and self.text[self.pos] in "\"'":
                    return [("field", name), ("value", self._quoted(self.text[self.pos]))]
                rest = self._bare()
                return [("field", name), *rest]
        word = "".join(c[-1] for c in chars)
        if word in ("AND", "OR", "NOT"):
            return [(word, word)]
        prefix = word.endswith("*") and not "".join(chars).endswith("\\*")
        return [("value", (word[:-1] if prefix else word, prefix))]


def parse(query: str) -> Query:
    """Parse a search query into OR-ed AND-groups of `Term` and nested `Group`."""
    tokens = _Lexer(query).tokens()
    pos = 0

    def parse_query() -> Query:
        nonlocal pos
        groups: Query = [[]]
        while pos < len(tokens) and tokens[pos][0] != ")":
            kind = tokens[pos][0]
            if kind == "OR":
                groups.append([])
                pos += 1
            elif kind == "AND":
                pos += 1
            else:
                groups[-1].append(parse_term())
        return groups

    def parse_term() -> Term | Group:
        nonlocal pos
        negated = False
        if tokens[pos][0] == "NOT":
            negated, pos = True, pos + 1
        if pos < len(tokens) and tokens[pos][0] == "(":
            pos += 1
            inner = parse_query()
            pos += 1
            return Group(negated, inner)
        name = ""
        if pos < len(tokens) and tokens[pos][0] == "field":
            name = tokens[pos][1]
            pos += 1
        if name.startswith("-"):
            negated, name = True, name[1:]
        value, prefix = tokens[pos][1] if pos < len(tokens) else ("", False)
        pos += 1
        return Term(name, value, prefix, negated)

    return parse_query()


def flatten(groups: Query) -> list[Term]:
    """Every term of a parsed query, in order."""
    out: list[Term] = []
    for group in groups:
        for item in group:
            out.extend(flatten(item.query) if isinstance(item, Group) else [item])
    return out


def matches(groups: Query, c: ShopifyCustomer) -> bool:
    """Evaluate a parsed query against one customer."""
    return any(all(_item(item, c) for item in group) for group in groups if group)


def _item(item: Term | Group, c: ShopifyCustomer) -> bool:
    if isinstance(item, Group):
        return matches(item.query, c) != item.negated
    return _term(item, c) != item.negated


def _term(t: Term, c: ShopifyCustomer) -> bool:
    value = t.value.casefold()
    if t.field == "id":
        return c.legacy_id == t.value
    if t.field == "email":
        return _text(c.email, value, t.prefix)
    if t.field == "phone":
        return phone_matches(c.phone, phone_digits(t.value))
    if t.field in ("first_name", "last_name"):
        return _text(getattr(c, t.field), value, t.prefix)
    if t.field == "":
        words = f"{c.first_name} {c.last_name} {c.email} {c.note}".casefold().split()
        return any(_text(w, value, t.prefix) for w in words)
    return False


def _text(stored: str, value: str, prefix: bool) -> bool:
    stored = stored.casefold()
    return stored.startswith(value) if prefix else stored == value


# -- the server -------------------------------------------------------------------------


@dataclass
class ShopifyEmulator:
    """One shop's Admin GraphQL endpoint, with scriptable failures."""

    customers: list[ShopifyCustomer]
    token: str
    scopes: list[str] = field(default_factory=lambda: ["read_customers", "read_orders"])
    served_version: str | None = None
    shop_exists: bool = True
    #: Search queries received, raw and parsed, in order.
    queries: list[str] = field(default_factory=list)
    parsed: list[list[Term]] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    requests_seen: int = 0

    def fail_next(
        self, status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests with this instead."""
        self.script.extend(Scripted(status, body, headers or {}) for _ in range(times))

    def throttle_next(
        self,
        requested: int = 50,
        available: float = 0.0,
        restore_rate: float = 100.0,
        times: int = 1,
    ) -> None:
        """Answer the next requests with Shopify's THROTTLED error (HTTP 200)."""
        body = {
            "errors": [
                {
                    "message": "Throttled",
                    "extensions": {
                        "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits",
                    },
                }
            ],
            "extensions": {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": None,
                    "throttleStatus": {
                        "maximumAvailable": 2000.0,
                        "currentlyAvailable": available,
                        "restoreRate": restore_rate,
                    },
                }
            },
        }
        self.fail_next(200, body, times=times)

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("shopify-emulator")
        app.add_url_rule(
            "/admin/api/<version>/graphql.json", "graphql", self._graphql, methods=["POST"]
        )
        return app

    def _graphql(self, version: str) -> Response:
        self.requests_seen += 1
        if not self.shop_exists:
            return _json({"errors": "Not Found"}, 404)
        if request.headers.get("X-Shopify-Access-Token") != self.token:
            return _json({"errors": INVALID_TOKEN}, 401)
        if self.script:
            s = self.script.pop(0)
            return _json(s.body, s.status, s.headers)
        payload = request.get_json(force=True)
        query, variables = payload["query"], payload.get("variables") or {}
        data = self._check_data() if "shop" in query else self._customers(variables)
        response = _json({"data": _prune(data, query), "extensions": _cost()}, 200)
        response.headers["X-Shopify-API-Version"] = self.served_version or version
        return response

    def _check_data(self) -> dict[str, Any]:
        return {
            "shop": {"name": "Emulated Store", "myshopifyDomain": "mystore.myshopify.com"},
            "currentAppInstallation": {"accessScopes": [{"handle": s} for s in self.scopes]},
        }

    def _customers(self, variables: dict[str, Any]) -> dict[str, Any]:
        text = variables.get("query") or ""
        groups = parse(text)
        self.queries.append(text)
        self.parsed.append(flatten(groups))
        hits = [c for c in self.customers if matches(groups, c)]
        start = int(base64.b64decode(variables["after"]).decode()) if variables.get("after") else 0
        first = int(variables.get("first") or 50)
        page = hits[start : start + first]
        end = start + len(page)
        nodes = [c.node() for c in page]
        return {
            "customers": {
                "nodes": nodes,
                "edges": [
                    {"cursor": _cursor(start + i + 1), "node": n} for i, n in enumerate(nodes)
                ],
                "pageInfo": {
                    "hasNextPage": end < len(hits),
                    "hasPreviousPage": start > 0,
                    "startCursor": _cursor(start) if page else None,
                    "endCursor": _cursor(end) if page else None,
                },
            }
        }


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _cost() -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": 52,
            "actualQueryCost": 12,
            "throttleStatus": {
                "maximumAvailable": 2000.0,
                "currentlyAvailable": 1988.0,
                "restoreRate": 100.0,
            },
        }
    }


def _prune(data: Any, query: str) -> Any:
    """Keep only the fields the query names, as a GraphQL server would."""
    if isinstance(data, list):
        return [_prune(item, query) for item in data]
    if not isinstance(data, dict):
        return data
    return {
        k: _prune(v, query) for k, v in data.items() if re.search(rf"\b{re.escape(k)}\b", query)
    }


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return Response(
        text, status=status, headers=headers or {}, content_type="application/json; charset=utf-8"
    )
