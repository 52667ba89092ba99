"""What each HelpSpot page makes of an answer (HELPSPOT.md §3)."""

from __future__ import annotations

from lookup_server.helpspot.staff import (
    address_book,
    automation_applies,
    request_page,
    strip_tags,
)
from lookup_server.helpspot.view import read_livelookup

ONE = (
    b'<?xml version="1.0" encoding="utf-8"?><livelookup><customer>'
    b"<customer_id>7</customer_id><first_name>Ada</first_name><email>ada@x.org</email>"
    b'<Custom3 label="Plan">Gold</Custom3><Custom4></Custom4><job_title>R&amp;D</job_title>'
    b"</customer></livelookup>"
)
TWO = (
    b'<?xml version="1.0" encoding="utf-8"?><livelookup>'
    b"<customer><customer_id>&lt;1&gt;</customer_id><first_name>&lt;b&gt;Bo&lt;/b&gt;</first_name>"
    b"<last_name>Ng</last_name></customer>"
    b"<customer><customer_id>2</customer_id><first_name>Cy</first_name><email>cy@x.org</email>"
    b"<highlight>1</highlight></customer></livelookup>"
)


def test_one_customer_shows_every_field_with_its_label_and_what_insert_puts_where() -> None:
    page = request_page(read_livelookup(ONE))
    labels = [(f.name, f.label, f.html) for f in page.customers[0]]
    assert ("Custom3", "Plan", "Gold") in labels
    assert ("job_title", "Job title", "R&D") in labels  # raw: HelpSpot writes it as HTML
    assert page.rows == []
    assert page.inserts == [
        {
            "sUserId": "7",
            "sFirstName": "Ada",
            "sEmail": "ada@x.org",
            "Custom3": "Gold",
            "Custom4": "",
        }
    ]


def test_several_customers_make_a_table_stripped_without_columns_and_an_escaped_link() -> None:
    page = request_page(read_livelookup(TWO))
    assert page.columns == ["customer_id", "First name", "Last name", "Email"]
    assert page.rows[0] == ["&lt;1&gt;", "Bo", "Ng", ""]
    with_columns = TWO.replace(b"<livelookup>", b'<livelookup columns="first_name">')
    assert request_page(read_livelookup(with_columns)).rows[0] == ["&lt;1&gt;", "<b>Bo</b>"]


def test_no_customers_and_an_unreadable_answer() -> None:
    empty = request_page(read_livelookup(b""))
    assert empty.customers == [] and empty.error is None
    assert request_page(None, "XML error: syntax error").error == "XML error: syntax error"


def test_automation_applies_exactly_one_customer_and_clears_empty_custom_fields() -> None:
    applied, why = automation_applies(read_livelookup(ONE))
    assert applied["sUserId"] == "7" and applied["Custom4"] == ""
    assert "Custom4 empty, so cleared" in why
    assert automation_applies(read_livelookup(TWO))[0] == {}
    assert "nothing is applied" in automation_applies(None)[1]


def test_the_address_book_lists_those_with_an_email_highlighted_first() -> None:
    entries = address_book(read_livelookup(TWO))
    assert [(e.name, e.highlight) for e in entries] == [("Cy", True)]
    assert address_book(None) == []


def test_strip_tags_keeps_a_lone_less_than_sign() -> None:
    assert strip_tags("a < b <i>c</i>") == "a < b c"
