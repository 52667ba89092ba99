"""The renderer's escaping policy, checked the way HelpSpot reads the result."""

from __future__ import annotations

import html
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_server.core.models import Audience
from lookup_server.helpspot.render import render_livelookup, schema_errors, xml_safe
from lookup_server.plugin import Customer, SourceSettings
from tests.support.helpspot import assert_livelookup, browser_reads

SOURCE = SourceSettings(
    name="s",
    backend="csv",
    html_fields=frozenset({"profile"}),
    labels={"Custom5": "Contract <level>"},
    columns=("email", "Custom5"),
)


def read_one(
    fields: dict[str, str],
    source: SourceSettings = SOURCE,
    audience: Audience = Audience.REQUEST_PAGE,
) -> dict[str, str]:
    body = render_livelookup([Customer(fields)], source, audience)
    (customer,) = assert_livelookup(body).customers
    return customer


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1), st.text(), st.text())
def test_any_text_round_trips_as_policy_says(
    insertable: str, html_value: str, display: str
) -> None:
    fields = {
        "customer_id": insertable,
        "Custom12": insertable,
        "profile": html_value,
        "organization": display,
    }
    text = xml_safe(insertable)
    seen = read_one(fields)
    # the request page shows it as HTML: staff read it exactly, markup never runs
    for name in ("customer_id", "Custom12"):
        if text:
            assert browser_reads(seen[name]) == (text, [])
            assert seen[name] == text or ("<" in text or "&" in text)
        else:
            assert name not in seen
    assert seen["profile"] == xml_safe(html_value)
    assert seen["organization"] == html.escape(xml_safe(display))
    for audience in (Audience.AUTOMATION, Audience.ADDRESS_BOOK):  # never shown as HTML there
        seen = read_one(fields, audience=audience)
        assert seen.get("customer_id", "") == seen.get("Custom12", "") == text


def test_display_values_reach_the_browser_as_text() -> None:
    seen = read_one({"customer_id": "1", "organization": "AT&T <script>alert(1)</script>"})
    assert seen["organization"] == "AT&amp;T &lt;script&gt;alert(1)&lt;/script&gt;"


def test_insertable_values_are_exact_unless_they_hold_markup() -> None:
    # AT&T is no markup: a select field set to it on Insert must match exactly
    exact = {
        "customer_id": "a&b",
        "last_name": 'O\'Neil "Jr" >',
        "email": "x&y@z.com",
        "phone": "1 & 2",
        "Custom3": "level1#-#level2",
        "Custom4": "AT&T",
        "Custom5": "a < b",
    }
    markup = {
        "first_name": "<O'Neil>",
        "Custom6": "Tom &amp Jerry",
        "Custom7": "&copy2024",
        "Custom8": "x<3",
        "Custom9": "&#65;",
    }
    seen = read_one({**exact, **markup})
    assert {k: seen[k] for k in exact} == exact
    for name, value in markup.items():
        assert seen[name] != value and browser_reads(seen[name]) == (value, [])
    assert read_one({**exact, **markup}, audience=Audience.AUTOMATION) == {**exact, **markup}


def test_empty_insertable_values_are_left_out_unless_the_source_clears() -> None:
    fields = {"customer_id": "", "first_name": "Ada", "email": "", "Custom4": "", "title": ""}
    assert read_one(fields) == {"first_name": "Ada", "title": ""}
    clearing = SourceSettings(name="s", backend="csv", clear_empty=True)
    assert read_one(fields, clearing) == fields


def test_html_fields_go_in_cdata_and_cdata_end_is_handled() -> None:
    body = render_livelookup([Customer({"customer_id": "1", "profile": "<b>x</b>"})], SOURCE)
    assert b"<profile><![CDATA[<b>x</b>]]></profile>" in body
    tricky = "<i>a]]>b</i>]]>"
    assert read_one({"customer_id": "1", "profile": tricky})["profile"] == tricky


def test_illegal_xml_characters_are_dropped() -> None:
    seen = read_one(
        {"customer_id": "1\x00", "last_name": "A\x01B\x0bC\ufffeD\ud800", "Custom1": "tab\tok"}
    )
    assert seen == {"customer_id": "1", "last_name": "ABCD", "Custom1": "tab\tok"}


def test_customer_id_first_and_only_customer_elements_in_root() -> None:
    body = render_livelookup([Customer({"email": "e", "customer_id": "9"})] * 2, SOURCE)
    assert body.startswith(
        b'<?xml version="1.0" encoding="utf-8"?>\n<livelookup version="1.0" '
        b'columns="email,Custom5"><customer><customer_id>9</customer_id>'
    )
    assert assert_livelookup(body).columns == ["email", "Custom5"]


def test_labels_are_attributes_and_escaped() -> None:
    body = render_livelookup([Customer({"customer_id": "1", "Custom5": "gold"})], SOURCE)
    view = assert_livelookup(body)
    # HelpSpot shows labels as raw HTML too: the admin's text reads as written
    assert view.labels[0] == {"Custom5": "Contract &lt;level&gt;"}
    assert browser_reads(view.labels[0]["Custom5"]) == ("Contract <level>", [])


def test_invalid_element_names_from_a_backend_are_not_emitted() -> None:
    seen = read_one({"customer_id": "1", "first name": "x", "1abc": "y", "ok": "z"})
    assert seen == {"customer_id": "1", "ok": "z"}


def test_empty_result_is_an_empty_root() -> None:
    body = render_livelookup([], SourceSettings(name="s", backend="csv"))
    assert assert_livelookup(body).summary() == "No customers found"


def test_schema_rejects_what_helpspot_cannot_read() -> None:
    assert schema_errors(
        b"<livelookup><customer><customer_id>1</customer_id></customer>"
        b"<error>x</error></livelookup>"
    )
    assert schema_errors(
        b"<livelookup><customer><customer_id>1</customer_id>"
        b"<org><b>x</b></org></customer></livelookup>"
    )
    assert schema_errors(b"<livelookup><customer>") != []


@pytest.mark.parametrize("reserved", ["customer", "livelookup"])
def test_fields_named_like_the_documents_structure_are_not_sent(
    reserved: str, caplog: pytest.LogCaptureFixture
) -> None:
    # any backend's: a field <livelookup> fails our XSD, a field <customer> is read
    # by HelpSpot as the start of another customer
    with caplog.at_level(logging.WARNING, logger="lookup_server.helpspot.render"):
        seen = read_one({"customer_id": "1", reserved: "x", "last_name": "Lovelace"})
    assert seen == {"customer_id": "1", "last_name": "Lovelace"}
    assert f"field {reserved!r} is not sent: it is reserved" in caplog.text
