"""The behavioural suite every Live Lookup backend must pass.

A backend's test module subclasses :class:`BackendContract`, sets
``backend_name`` and provides the class-scoped ``contract_source`` fixture: the
``[sources.NAME]`` table (as a dict) of a source whose store already holds
:data:`PEOPLE`. The cases below then run through the whole app, the way
HelpSpot calls it, and read every answer the way HelpSpot reads it.
``tests/test_contract_coverage.py`` fails when a registered backend has no run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lookup_server.helpspot.decode import decode_value
from lookup_server.helpspot.view import LiveLookupView
from lookup_server.web.app import create_app
from tests.support.helpspot import (
    address_book_params,
    assert_livelookup,
    automation_params,
    browser_reads,
    insert_data,
    request_page_html,
    request_page_params,
)


@dataclass(frozen=True)
class Person:
    """One customer of the contract data set, in livelookup element names."""

    customer_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    title: str = ""

    def as_fields(self) -> dict[str, str]:
        """The person as element name -> value."""
        return {
            "customer_id": self.customer_id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone": self.phone,
            "title": self.title,
        }


#: Hard cases every store must hold and give back exactly.
PEOPLE: list[Person] = [
    Person("1001", "Ada", "Lovelace", "ada@example.com", "+44 20 7946 0001", "Analyst"),
    Person("1002", "José", "Núñez", "jose.nunez@example.com", "(555) 010-2000", "R&D <Lead>"),
    Person(
        "1003", "Seán", "O'Brien", "sean.obrien@example.com", "555.010.3000", 'Head of "Quotes"'
    ),
    Person("1004", "Star", "Wild*Card", "star@example.com", "555-010-4000", "Ops"),
    Person("1005", "Paren", "Parker (Jr)", "paren@example.com", "555-010-5000", "Ops"),
    Person("1006", "Percent", "100%_Real", "percent@example.com", "555-010-6000", "Ops"),
    Person("1007", "Back", "Slash\\Name", "back@example.com", "555-010-7000", "Ops"),
    Person("1008", "Zoë", "Ünder_Score", "under_score@example.com", "555-010-8000", "Ops"),
    Person("1009", "Brack", "[Bracket]", "bracket@example.com", "555-010-9000", "Ops"),
    *(
        Person(f"20{i:02d}", first, "Smith", f"smith{i}@example.com", f"555-020-00{i:02d}", "Sales")
        for i, first in enumerate(
            ["Mary", "John", "Anna", "Mark", "Lena", "Omar", "Ravi", "Sue"], start=1
        )
    ),
]
PEOPLE[9] = Person("2001", "Mary", "Smith", "Mary.Smith@Example.COM", "555-020-0001", "Sales")
#: Values a customer may set themselves (a directory attribute, a shop's customer name)
#: that HelpSpot's request page would run or mangle as HTML.
MARKUP_PEOPLE = [
    Person(
        "3001",
        "Hacker<img src=x onerror=alert(1)>",
        "Gold & <Platinum>",
        "r&d@example.com",
        "555-030-0001",
        "<script>alert(1)</script>",
    ),
    Person(
        "3002", "&lt;b&gt;", "Gold &amp; Co", "gold.co@example.com", "555-030-0002", "&copy; Gold"
    ),
]
PEOPLE += MARKUP_PEOPLE

MAX_RESULTS = 5
SMITHS = [p for p in PEOPLE if p.last_name == "Smith"]
BY_ID = {p.customer_id: p for p in PEOPLE}

#: Inputs that try to widen a search: each must match nothing a literal
#: comparison would not.
HOSTILE = [
    "*",
    "(",
    ")",
    "\\",
    "\x00",
    "%",
    "_",
    "' OR 1=1 --",
    "]",
    "[",
    "*)(uid=*",
    "Smith*",
    "Sm%",
    "S_ith",
    '" OR ""="',
    "'; DROP TABLE customers; --",
    "a' UNION SELECT",
    "*)(|(mail=*",
    "NOT Smith",
    "last_name:*",
    "(Smith)",
]

Lookup = Callable[..., LiveLookupView]


class BackendContract:
    """Shared Live Lookup behaviour; subclass once per backend."""

    backend_name: ClassVar[str]
    #: True for a run on a mirrored source (``mirror = "<interval>"``): answered from its copy.
    mirrored: ClassVar[bool] = False

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> dict[str, Any]:
        raise NotImplementedError("provide the [sources.people] table for a store of PEOPLE")

    @pytest.fixture(scope="class")
    @classmethod
    def lookup(
        cls, contract_source: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
    ) -> Lookup:
        assert contract_source["backend"] == cls.backend_name
        base = Path(contract_source.pop("_base_dir", tmp_path_factory.mktemp("contract")))
        table = {"max_results": MAX_RESULTS, **contract_source}
        app = create_app({"sources": {"people": table}}, base_dir=base)
        client = app.test_client()

        def lookup(*, call: dict[str, str] | None = None, **params: str) -> LiveLookupView:
            """The request page's call with ``params``, or exactly ``call``."""
            query = call if call is not None else request_page_params(**params)
            response = client.get("/livelookup/people", query_string=query)
            assert response.status_code == 200, response.data
            return assert_livelookup(response.data)

        return lookup

    # -- each strategy ----------------------------------------------------------

    def test_customer_id_finds_exactly_one(self, lookup: Lookup) -> None:
        view = lookup(customer_id="1002")
        assert [c["customer_id"] for c in view.customers] == ["1002"]

    def test_customer_id_is_exact_not_prefix(self, lookup: Lookup) -> None:
        assert lookup(customer_id="100").customers == []
        assert lookup(customer_id="1002 ").customers[0]["customer_id"] == "1002"

    def test_email_ignores_case(self, lookup: Lookup) -> None:
        view = lookup(email="mary.smith@example.com")
        assert [c["customer_id"] for c in view.customers] == ["2001"]
        assert view.customers[0]["email"] == "Mary.Smith@Example.COM"

    def test_email_is_exact_not_substring(self, lookup: Lookup) -> None:
        assert lookup(email="smith1@example.co").customers == []
        assert lookup(email="ith1@example.com").customers == []

    def test_phone_matches_by_digits_whatever_the_format(self, lookup: Lookup) -> None:
        assert _ids(lookup(phone="555 010 2000")) == ["1002"]
        assert _ids(lookup(phone="+1-555-010-3000")) == ["1003"]

    def test_name_is_case_insensitive_prefix_of_last_name(self, lookup: Lookup) -> None:
        assert _ids(lookup(last_name="lovel")) == ["1001"]
        assert _ids(lookup(last_name="NÚÑ")) == ["1002"]
        assert _ids(lookup(last_name="o'b")) == ["1003"]

    def test_first_name_narrows_a_name_search(self, lookup: Lookup) -> None:
        assert _ids(lookup(last_name="smith", first_name="ma")) == ["2001", "2004"]

    def test_name_search_needs_two_letters(self, lookup: Lookup) -> None:
        assert lookup(last_name="S").customers == []

    # -- order and fall-through ------------------------------------------------

    def test_stale_customer_id_falls_back_to_email(self, lookup: Lookup) -> None:
        assert _ids(lookup(customer_id="99999", email="ada@example.com")) == ["1001"]

    def test_first_strategy_that_finds_wins(self, lookup: Lookup) -> None:
        view = lookup(customer_id="1001", email="star@example.com", last_name="Smith")
        assert _ids(view) == ["1001"]

    def test_helpspot_request_page_names_are_understood(self, lookup: Lookup) -> None:
        # the request page sends sEmail double-encoded and customer_id empty
        view = lookup(customer_id="", sEmail="jose.nunez%40example.com", source_id="0")
        assert _ids(view) == ["1002"]

    def test_no_input_finds_nobody(self, lookup: Lookup) -> None:
        assert lookup().customers == []
        assert lookup(customer_id="", email="", phone="", last_name="").customers == []
        assert lookup(email="null", sUserId="null").customers == []

    def test_results_are_capped_at_max_results(self, lookup: Lookup) -> None:
        view = lookup(last_name="Smith")
        assert len(view.customers) == MAX_RESULTS
        assert all(c["last_name"] == "Smith" for c in view.customers)

    # -- values ------------------------------------------------------------------

    @pytest.mark.parametrize("person", PEOPLE[:9], ids=lambda p: p.customer_id)
    def test_insertable_values_round_trip_exactly(self, lookup: Lookup, person: Person) -> None:
        (found,) = lookup(customer_id=person.customer_id).customers
        for key in ("customer_id", "first_name", "last_name", "email", "phone"):
            assert found[key] == getattr(person, key)

    def test_display_values_are_html_escaped_for_staff(self, lookup: Lookup) -> None:
        (found,) = lookup(customer_id="1002").customers
        # HelpSpot shows the value as raw HTML: this is what reaches the browser
        assert found["title"] == "R&amp;D &lt;Lead&gt;"

    def test_markup_in_values_never_runs_in_staff_browsers(
        self, lookup: Lookup, contract_source: dict[str, Any]
    ) -> None:
        deliberate = frozenset(contract_source.get("html_fields", ()))  # the admin's own HTML
        single = lookup(customer_id="3001")
        several = lookup(last_name="Gold")
        assert _ids(several) == ["3001", "3002"]
        for view in (single, several):
            for piece in request_page_html(view, deliberate):
                assert browser_reads(piece)[1] == [], piece
        for customer in single.customers + several.customers:
            stored = BY_ID[customer["customer_id"]].as_fields()
            for name in stored.keys() & customer.keys():
                assert browser_reads(customer[name])[0] == stored[name], name

    def test_values_without_markup_insert_exactly_as_stored(self, lookup: Lookup) -> None:
        for person in (PEOPLE[1], PEOPLE[2], MARKUP_PEOPLE[1]):
            (inserted,) = insert_data(lookup(customer_id=person.customer_id))
            stored = person.as_fields()
            for name, value in inserted.items():
                if "<" not in stored[name] and "&" not in stored[name]:
                    assert value == stored[name]

    def test_automation_rules_apply_values_exactly(self, lookup: Lookup) -> None:
        (applied,) = insert_data(lookup(call=automation_params(sUserId="3001")))
        assert applied == {k: v for k, v in MARKUP_PEOPLE[0].as_fields().items() if k != "title"}

    def test_address_book_gets_values_it_escapes_itself(self, lookup: Lookup) -> None:
        view = lookup(call=address_book_params("", "Gold"))
        assert sorted((c["last_name"], c["title"]) for c in view.customers) == [
            ("Gold & <Platinum>", "<script>alert(1)</script>"),
            ("Gold &amp; Co", "&copy; Gold"),
        ]

    # -- hostile input -------------------------------------------------------------

    @pytest.mark.parametrize("text", HOSTILE)
    def test_hostile_input_matches_only_literally(self, lookup: Lookup, text: str) -> None:
        for params in (
            {"customer_id": text},
            {"email": text + "@example.com"},
            {"last_name": text},
            {"last_name": "Smith", "first_name": text},
        ):
            view = lookup(**params)
            for customer in view.customers:
                person = BY_ID[customer["customer_id"]]
                assert _literal_match(person, params), (params, customer)

    @pytest.mark.parametrize(
        "last_name,expected",
        [
            ("Wild*", ["1004"]),
            ("Parker (", ["1005"]),
            ("100%", ["1006"]),
            ("100%_", ["1006"]),
            ("Slash\\", ["1007"]),
            ("Ünder_", ["1008"]),
            ("[Brack", ["1009"]),
            ("100_", []),
            ("Wi*", []),
            ("[B]", []),
        ],
    )
    def test_special_characters_in_names_match_literally(
        self, lookup: Lookup, last_name: str, expected: list[str]
    ) -> None:
        assert _ids(lookup(last_name=last_name)) == expected


def _ids(view: LiveLookupView) -> list[str]:
    return sorted(c["customer_id"] for c in view.customers)


def _literal_match(person: Person, raw: dict[str, str]) -> bool:
    # the core drops NUL and other control characters from every input
    params = {k: decode_value(k, v) for k, v in raw.items()}
    if "customer_id" in params:
        return person.customer_id == params["customer_id"].strip()
    if "email" in params:
        return person.email.casefold() == params["email"].strip().casefold()
    last_ok = person.last_name.casefold().startswith(params["last_name"].strip().casefold())
    first = params.get("first_name", "").strip().casefold()
    return last_ok and person.first_name.casefold().startswith(first)
