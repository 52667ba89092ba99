"""Test helpers that imitate HelpSpot as a client (../shared/HELPSPOT.md)."""

from __future__ import annotations

from lookup_server.helpspot.render import schema_errors
from lookup_server.helpspot.view import LiveLookupView, display_label, read_livelookup

DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'


def assert_livelookup(body: bytes) -> LiveLookupView:
    """Assert ``body`` is a valid livelookup document and return what HelpSpot reads."""
    assert body.startswith(DECLARATION), body[:80]
    assert schema_errors(body) == [], schema_errors(body)
    return read_livelookup(body)


def helpspot_error(body: bytes) -> str:
    """Assert HelpSpot would show "An Error Occurred" for ``body``; return its message."""
    from lookup_server.helpspot.view import HelpSpotParseError

    try:
        view = read_livelookup(body)
    except HelpSpotParseError as exc:
        return str(exc)
    raise AssertionError(f"HelpSpot would read {len(view.customers)} customer(s): {body!r}")


def double_encode(value: str) -> str:
    """A value as HelpSpot's request page sends it: URL-encoded once more."""
    from urllib.parse import quote

    return quote(value, safe="")


# -- the calls HelpSpot makes (HELPSPOT.md §1, §4) ------------------------------------


def request_page_params(**overrides: str) -> dict[str, str]:
    """Everything HelpSpot's request page sends, in its order, double encoding included."""
    params = {
        "source_id": "0",
        "customer_id": "",
        "first_name": "",
        "last_name": "",
        "email": "",
        "phone": "",
        "request": "12345",
        "sUserId": "",
        "sFirstName": "",
        "sLastName": "",
        "sEmail": "",
        "sPhone": "",
        "xStatus": "1",
        "xCategory": "2",
        "xPersonAssignedTo": "0",
        "Custom1": double_encode("a b"),
        "Custom2": "null",
        **ACTING_PERSON,
    }
    params.update(overrides)
    return params


def address_book_params(first_name: str, last_name: str) -> dict[str, str]:
    """What the address book sends: the names and who is looking, nothing else."""
    return {"source_id": "0", "first_name": first_name, "last_name": last_name, **ACTING_PERSON}


def automation_params(**row: str) -> dict[str, str]:
    """What automation rules and triggers send: the request row, its s* names copied."""
    params = {"xRequest": "12345", "sTitle": "Printer on fire", "sStatus": "Active", **row}
    for standard, request_name in (
        ("customer_id", "sUserId"),
        ("first_name", "sFirstName"),
        ("last_name", "sLastName"),
        ("email", "sEmail"),
        ("phone", "sPhone"),
    ):
        params[standard] = params.get(request_name, "")
    return {**params, **ACTING_PERSON}


def ajax_params(calling: str, typed: str = "", **fields: str) -> dict[str, str]:
    """What an AJAX field's button sends: every field double-encoded, the field's id."""
    values = {
        "sUserId": "",
        "sFirstName": "",
        "sLastName": "",
        "sEmail": "",
        "sPhone": "",
        "xStatus": "1",
        "xCategory": "",
        "xPersonAssignedTo": "0",
        **fields,
        calling: typed,
    }
    params = {name: double_encode(value) for name, value in values.items()}
    return {**params, "callingField": calling, **ACTING_PERSON}


ACTING_PERSON = {
    "acting_person_xperson": "1",
    "acting_person_fusertype": "1",
    "acting_person_fname": "Ian",
    "acting_person_lname": "Staff",
    "acting_person_email": "ian@helpdesk.example",
}


# -- what the request page shows (HELPSPOT.md §3) ---------------------------------------

INSERTABLE = ("customer_id", "first_name", "last_name", "email", "phone")


def request_page_html(view: LiveLookupView, html_fields: frozenset[str] = frozenset()) -> list[str]:
    """Every piece of the request page HelpSpot writes from the answer, as raw HTML.

    One customer: each label and value, raw. Several: the table (the
    customer_id link text escaped; with ``columns`` the cells raw, without them
    tag-stripped first) and each row's hidden pop-up of every label and value, raw.
    Values of ``html_fields`` (deliberate HTML) are left out.
    """
    from html import escape

    pieces: list[str] = []
    for customer, labels in zip(view.customers, view.labels, strict=True):
        for name, value in customer.items():
            pieces.append(labels.get(name) or display_label(name))
            if name not in html_fields:
                pieces.append(value)
    if len(view.customers) > 1:
        columns = view.columns or ["first_name", "last_name", "email"]
        for customer in view.customers:
            pieces.append(escape(customer.get("customer_id", "")))
            for column in (c for c in columns if c not in html_fields):
                cell = customer.get(column, "")
                pieces.append(cell if view.columns else strip_tags(cell))
    return pieces


def insert_data(view: LiveLookupView) -> list[dict[str, str]]:
    """What "Insert" puts into the request for each customer: the values as sent."""
    return [
        {k: v for k, v in c.items() if k in INSERTABLE or k.startswith("Custom")}
        for c in view.customers
    ]


def strip_tags(text: str) -> str:
    """PHP's strip_tags, as far as the table uses it: a '<' before a non-blank opens a tag."""
    import re

    return re.sub(r"<[^\s>][^>]*>?", "", text)


def browser_reads(fragment: str) -> tuple[str, list[str]]:
    """What a browser makes of raw HTML: the text shown, and the elements created."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.text: list[str] = []
            self.elements: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.elements.append(tag)

        def handle_startendtag(self, tag: str, attrs: object) -> None:
            self.elements.append(tag)

        def handle_comment(self, data: str) -> None:
            self.elements.append("<!--")

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    reader = Reader()
    reader.feed(fragment)
    reader.close()
    return "".join(reader.text), reader.elements
