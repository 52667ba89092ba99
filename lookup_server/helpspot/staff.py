"""What each HelpSpot page makes of a livelookup answer (HELPSPOT.md §3), for the console.

:mod:`.view` reads the XML as HelpSpot's parser does; this module goes one step
further, to what the page built from it holds: the request page's single match
or table (raw HTML, as HelpSpot writes it), the values "Insert" copies into the
request, what an automation rule applies, and the address book's list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

from lookup_server.helpspot.view import LiveLookupView, display_label

#: Answer elements that "Insert" copies into the request, and the request field each fills.
INSERTED_INTO = {
    "customer_id": "sUserId",
    "first_name": "sFirstName",
    "last_name": "sLastName",
    "email": "sEmail",
    "phone": "sPhone",
}
#: The multiple-match table's columns when the answer names none.
DEFAULT_COLUMNS = ("first_name", "last_name", "email")
_CUSTOM = re.compile(r"Custom\d+")
# PHP's strip_tags, as far as the table needs it: "<" before a non-blank opens a tag.
_TAG = re.compile(r"<[^\s>][^>]*>?")


@dataclass(frozen=True)
class ShownField:
    """One field of a customer as the request page shows it: its label and its raw HTML."""

    name: str
    label: str
    html: str


@dataclass(frozen=True)
class RequestPage:
    """The request page's Live Lookup tab after an answer.

    ``error`` is HelpSpot's "An Error Occurred" message; else ``customers``
    holds each customer's fields, and for more than one ``columns`` and
    ``rows`` are the table (each cell raw HTML, as HelpSpot writes it).
    """

    error: str | None = None
    customers: list[list[ShownField]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    #: For each customer, request field -> the text "Insert" puts there.
    inserts: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class AddressBookEntry:
    """One contact in the address book (HelpSpot escapes these itself)."""

    name: str
    email: str
    title: str
    description: str
    highlight: bool


def strip_tags(text: str) -> str:
    """PHP's strip_tags as the table applies it to cells when the answer has no columns."""
    return _TAG.sub("", text)


def request_page(view: LiveLookupView | None, error: str | None = None) -> RequestPage:
    """What the request page shows for a parsed answer, or for a parse ``error``."""
    if view is None:
        return RequestPage(error=error or "the answer could not be read")
    customers = [
        [
            ShownField(name, labels.get(name) or display_label(name), value)
            for name, value in c.items()
        ]
        for c, labels in zip(view.customers, view.labels, strict=True)
    ]
    inserts = [_inserted(c) for c in view.customers]
    if len(view.customers) <= 1:
        return RequestPage(customers=customers, inserts=inserts)
    names = list(view.columns or DEFAULT_COLUMNS)
    labels = view.labels[0]
    header = ["customer_id", *(labels.get(n) or display_label(n) for n in names)]
    rows = [
        [
            escape(c.get("customer_id", "")),  # the link text, htmlspecialchars'd
            *(c.get(n, "") if view.columns else strip_tags(c.get(n, "")) for n in names),
        ]
        for c in view.customers
    ]
    return RequestPage(customers=customers, columns=header, rows=rows, inserts=inserts)


def _inserted(customer: dict[str, str]) -> dict[str, str]:
    inserted = {INSERTED_INTO[k]: v for k, v in customer.items() if k in INSERTED_INTO}
    inserted.update({k: v for k, v in customer.items() if _CUSTOM.fullmatch(k)})
    return inserted


def automation_applies(view: LiveLookupView | None) -> tuple[dict[str, str], str]:
    """What an automation rule sets in the request, and why (an error or a count sets nothing).

    Only exactly one customer is applied; an empty ``CustomN`` clears that field.
    """
    if view is None:
        return {}, "the answer could not be read: automation ignores it, nothing is applied"
    if len(view.customers) != 1:
        return {}, (
            f"{len(view.customers)} customers: automation applies a result only when "
            "exactly one customer comes back, so nothing is applied"
        )
    applied = _inserted(view.customers[0])
    cleared = [name for name, value in applied.items() if _CUSTOM.fullmatch(name) and not value]
    why = "one customer: these request fields are set"
    if cleared:
        why += f"; {', '.join(cleared)} empty, so cleared"
    return applied, why


def address_book(view: LiveLookupView | None) -> list[AddressBookEntry]:
    """The address book's contacts: those with an e-mail address, highlighted ones first."""
    if view is None:
        return []  # the address book ignores an answer it cannot read
    entries = [
        AddressBookEntry(
            name=" ".join(filter(None, (c.get("first_name", ""), c.get("last_name", "")))),
            email=c.get("email", ""),
            title=c.get("title", ""),
            description=c.get("description", ""),
            highlight=c.get("highlight", "") == "1",
        )
        for c in view.customers
        if c.get("email", "")
    ]
    return sorted(entries, key=lambda e: not e.highlight)
