"""Every XML document lookup-server emits, rendered with lxml; the escaping policy.

HelpSpot's request page shows every livelookup value as raw HTML: the single
match, the ``columns`` table and every row's hidden pop-up (HELPSPOT.md §3).
And what staff can insert into the request (``customer_id``, names, email,
phone, ``CustomN``) is that same text: it cannot be both HTML and data. So on
the request page (and the command line, which cannot tell its caller):

* an insertable value that holds no ``<`` and no ``&`` is sent exactly as
  stored: no other character makes markup or an entity in HTML text, so it
  shows as stored and inserts as stored;
* an insertable value that holds ``<`` or ``&`` is HTML-escaped: staff see it
  exactly as stored and it can never run as script or break into an entity;
  Insert then puts the escaped text (``AT&amp;T``) into the request, which
  staff see and can mend, instead of markup that would run;
* values listed in a source's ``html_fields`` are deliberate HTML, in CDATA;
* every other value is HTML-escaped, so staff see ``AT&T`` and ``<script>``
  as text.

Automation rules and triggers only apply values, never show them, so there
insertable values go out exactly; the address book HTML-escapes what it shows
itself, so there every value goes out exactly (escaping twice would show
``R&amp;D``). Empty insertable values are left out unless the source sets
``clear_empty``: HelpSpot would otherwise wipe what staff had entered.

Characters XML 1.0 forbids are dropped everywhere.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from functools import cache, lru_cache
from urllib.parse import urlsplit

from lxml import etree

from lookup_server.backend import SourceSettings
from lookup_server.models import (
    Audience,
    Customer,
    Option,
    PushDetails,
    element_name_problem,
    is_insertable,
)

log = logging.getLogger(__name__)
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (NUL, most C0 controls...)."""
    if text.isascii() and text.isprintable():
        return text  # the common case, tested in C without the regular expression
    return _ILLEGAL_XML.sub("", text)


def render_livelookup(customers: Iterable[Customer], source: SourceSettings,
                      audience: Audience = Audience.REQUEST_PAGE) -> bytes:
    """The ``<livelookup>`` document for these customers: only ``<customer>`` children."""
    root = etree.Element("livelookup", version="1.0")
    if source.columns:
        root.set("columns", ",".join(source.columns))
    labels, html_fields, keep_empty = source.labels, source.html_fields, source.clear_empty
    sub_element = etree.SubElement
    for customer in customers:
        node = sub_element(root, "customer")
        fields = customer.fields
        for name, kind, insertable in _plan(tuple(fields), html_fields, audience):
            text = xml_safe(fields.get(name, ""))
            if insertable and not text and not keep_empty:
                continue
            element = sub_element(node, name)
            if labels and labels.get(name):
                element.set("label", _label_text(xml_safe(labels[name]), audience))
            element.text = text if kind == _EXACT else _field_text(kind, text)
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8", xml_declaration=False)


#: How a value is sent: exactly; exactly unless it holds markup; as CDATA; HTML-escaped.
_EXACT, _INSERTABLE, _HTML, _ESCAPED = range(4)


@lru_cache(maxsize=1024)
def _plan(names: tuple[str, ...], html_fields: frozenset[str], audience: Audience
          ) -> tuple[tuple[str, int, bool], ...]:
    """Which fields are sent, in order, how, and whether each is insertable.

    Decided once per set of names: a backend's customers share their field
    names, and lookups are hot.
    """
    plan = []
    for name in ("customer_id", *(n for n in names if n != "customer_id")):
        problem = element_name_problem(name)
        if problem:  # a backend's column that cannot be an element; logged once per plan
            log.warning("field %r is not sent: it %s", name, problem)
            continue
        insertable = is_insertable(name)
        if audience is Audience.ADDRESS_BOOK or (insertable and audience is Audience.AUTOMATION):
            kind = _EXACT
        elif insertable:
            kind = _INSERTABLE
        else:
            kind = _HTML if name in html_fields else _ESCAPED
        plan.append((name, kind, insertable))
    return tuple(plan)


def _field_text(kind: int, text: str) -> str | etree.CDATA:
    if kind == _INSERTABLE:
        return html.escape(text, quote=False) if ("<" in text or "&" in text) else text
    if kind == _HTML:
        # A CDATA section cannot carry "]]>" (lxml refuses to split one) nor a
        # carriage return (parsers normalise it to a line feed). Such a value is
        # sent as escaped character data, which every XML parser, HelpSpot's
        # expat included, reports as exactly the same text.
        cdata_safe = "]]>" not in text and "\r" not in text
        return etree.CDATA(text) if cdata_safe else text
    return html.escape(text, quote=True)


def _label_text(label: str, audience: Audience) -> str:
    # HelpSpot shows labels as raw HTML too; a label is the admin's text, not markup.
    return label if audience is Audience.ADDRESS_BOOK else html.escape(label, quote=False)


def render_ajaxfield(options: Iterable[Option], ascii_only: bool = False) -> bytes:
    """The ``<ajaxfield>`` document of an AJAX selection field.

    HelpSpot escapes these values itself, so they are only XML-escaped here.
    With ``ascii_only`` descriptions are transliterated ("Zoë" -> "Zoe"),
    because HelpSpot reads the document as ISO-8859-1 and mangles the rest.
    """
    root = etree.Element("ajaxfield")
    for option in options:
        node = etree.SubElement(root, "option")
        etree.SubElement(node, "value").text = xml_safe(option.value)
        description = xml_safe(option.description)
        etree.SubElement(node, "description").text = (
            transliterate(description) if ascii_only else description)
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8", xml_declaration=False)


def transliterate(text: str) -> str:
    """``text`` in plain ASCII, letters approximated."""
    from anyascii import anyascii  # only AJAX sources with ascii = true need it

    return str(anyascii(text))


def render_push_details(details: PushDetails) -> str:
    """The HTML HelpSpot inserts raw into the request page for ``details($id)``.

    Every text comes from another system, so all of it is escaped, and a link
    is kept only when it is http(s): never ``javascript:``.
    """
    root = etree.Element("div", {"class": "lookup-server-push"})
    etree.SubElement(etree.SubElement(root, "p"), "strong").text = xml_safe(details.title)
    if details.rows:
        table = etree.SubElement(root, "table")
        for label, value in details.rows:
            row = etree.SubElement(table, "tr")
            etree.SubElement(row, "th", align="left").text = xml_safe(label)
            etree.SubElement(row, "td").text = xml_safe(value)
    link = xml_safe(details.link)
    if urlsplit(link).scheme in ("http", "https"):
        anchor = etree.SubElement(etree.SubElement(root, "p"), "a", href=link, target="_blank",
                                  rel="noopener noreferrer")
        anchor.text = "Open"
    return str(etree.tostring(root, method="html", encoding="unicode"))


# -- validation (tests, `lookup-server validate`) ----------------------------------


@cache
def _schema(name: str) -> etree.XMLSchema:
    from importlib import resources  # costs a command-line lookup 60 ms; only validation needs it

    xsd = resources.files("lookup_server.xml_schemas") / f"{name}.xsd"
    with xsd.open("rb") as handle:
        return etree.XMLSchema(etree.parse(handle))


def schema_errors(body: bytes, schema: str = "livelookup") -> list[str]:
    """Problems of ``body`` against ``xml_schemas/<schema>.xsd`` (empty when valid)."""
    try:
        document = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    if document.tag != schema:
        return [f"the root element is <{document.tag}>, expected <{schema}>"]
    validator = _schema(schema)
    if validator.validate(document):
        return _flatness_errors(document) if schema == "livelookup" else []
    return [f"line {e.line}: {e.message}" for e in validator.error_log]  # type: ignore[attr-defined]


def _flatness_errors(document: etree._Element) -> list[str]:
    # XSD 1.0 cannot type elements of arbitrary names, so this rule is checked here:
    # HelpSpot flattens nested elements, losing the outer field's text.
    return [
        f"line {field.sourceline}: field <{field.tag}> must hold text only, not elements"
        for customer in document
        for field in customer
        if len(field)
    ]
