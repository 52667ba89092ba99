"""Answers joined from fragments are byte for byte what the renderer wrote before them."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from lookup_server.core.fragments import FragmentSpec
from lookup_server.core.models import Audience
from lookup_server.helpspot import render
from lookup_server.helpspot.prerendered import renderer_version, spec_for
from lookup_server.helpspot.render import fragment_renderer, render_livelookup
from lookup_server.plugin import Customer, SourceSettings
from tests.support.helpspot import assert_livelookup


def whole_tree_render(
    customers: list[Customer], source: SourceSettings, audience: Audience
) -> bytes:
    """The renderer as it was before fragments: one lxml tree for the whole document."""
    root = etree.Element("livelookup", version="1.0")
    if source.columns:
        root.set("columns", ",".join(source.columns))
    for customer in customers:
        fields = customer.fields
        if audience is Audience.ADDRESS_BOOK and not render.address_book_safe(
            fields.get("email", "")
        ):
            continue
        node = etree.SubElement(root, "customer")
        for name, kind, insertable, label in render._plan(
            tuple(fields), source.html_fields, audience
        ):
            text = render.xml_safe(fields.get(name, ""))
            if insertable and not text and not source.clear_empty:
                continue
            element = etree.SubElement(node, name)
            label = (source.labels.get(name) if source.labels else None) or label
            if label:
                element.set("label", render._label_text(render.xml_safe(label), audience))
            element.text = text if kind == render._EXACT else render._field_text(kind, text)
    return render.XML_DECLARATION + etree.tostring(root, encoding="utf-8", xml_declaration=False)


HOSTILE = [
    "",
    " ",
    "0",
    "AT&T",
    "R&D &amp; &copy2024 &#65; &#x41;",
    "<script>alert(1)</script>",
    "Hacker<img src=x onerror=alert(1)>",
    "a < b > c",
    'O\'Brien "quoted"',
    "]]>",
    "<![CDATA[x]]>",
    "line\r\nbreak\rcr\ttab",
    "\x00\x01\x08\x0b\x0c\x1f\x7f nul and controls",
    "\ufffe\uffff\ud7ff\ue000",
    "Zoë Núñez 李 😀",
    "x'-alert(1)-'@example.com",
    "a%27b@example.com",
    "back\\slash@example.com",
    "ok@example.com",
    "é" * 3000,
    "long " * 2000,
]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=60))
NAMES = ["first_name", "last_name", "email", "phone", "Custom3", "CustomerType", "profile", "notes"]
customer = st.fixed_dictionaries(
    {"customer_id": text}, optional={name: text for name in NAMES}
).map(Customer)
SOURCES = [
    SourceSettings(name="plain", backend="csv"),
    SourceSettings(
        name="dressed",
        backend="csv",
        html_fields=frozenset({"profile", "notes"}),
        labels={"Custom3": 'Contract <level> & "tier"', "email": "E-mail", "notes": "]]>"},
        columns=("email", "Custom3"),
        clear_empty=True,
    ),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(customer, max_size=6),
    st.sampled_from(SOURCES),
    st.sampled_from(list(Audience)),
)
def test_fragments_join_to_the_whole_tree_renderers_bytes(
    customers: list[Customer], source: SourceSettings, audience: Audience
) -> None:
    logging.disable(logging.WARNING)  # the address book's "left out" warnings
    try:
        before = whole_tree_render(customers, source, audience)
        frame, render_one = fragment_renderer(spec_for(source, audience))
        joined = frame.document([render_one(c.fields) for c in customers])
        now = render_livelookup(customers, source, audience)
    finally:
        logging.disable(logging.NOTSET)
    assert now == before
    assert joined == before
    assert_livelookup(joined)  # valid against the XSD, and read as HelpSpot reads it


def test_a_spec_changes_with_every_setting_that_changes_a_fragment() -> None:
    base = SourceSettings(name="s", backend="csv")
    variants = [
        base,
        SourceSettings(name="s", backend="csv", labels={"email": "Mail"}),
        SourceSettings(name="s", backend="csv", html_fields=frozenset({"notes"})),
        SourceSettings(name="s", backend="csv", clear_empty=True),
        SourceSettings(name="s", backend="csv", columns=("email",)),
        SourceSettings(name="s", backend="csv", fields={"email": "mail"}),
    ]
    keys = {spec_for(s, audience).key for s in variants for audience in Audience}
    assert len(keys) == len(variants) * len(Audience)
    # settings that do not change a fragment do not change the key
    same = SourceSettings(name="other", backend="ldap", timeout=1, max_results=3)
    assert spec_for(same, Audience.REQUEST_PAGE).key == spec_for(base, Audience.REQUEST_PAGE).key
    spec = spec_for(variants[1], Audience.AUTOMATION)
    assert FragmentSpec.from_json(spec.to_json()) == spec
    assert FragmentSpec.from_json(spec.to_json()).key == spec.key
    assert spec.renderer == renderer_version()


def test_fragments_of_another_renderer_version_are_refused() -> None:
    spec = spec_for(SourceSettings(name="s", backend="csv"), Audience.REQUEST_PAGE)
    stale = FragmentSpec.from_json(spec.to_json().replace(spec.renderer, "0123456789abcdef"))
    assert stale.key != spec.key
    with pytest.raises(ValueError, match="renderer 0123456789abcdef"):
        fragment_renderer(stale)
