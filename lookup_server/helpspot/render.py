"""Every XML document lookup-server emits, rendered with lxml; the escaping policy.

HelpSpot's request page shows every livelookup value as raw HTML: the single
match, the ``columns`` table and every row's hidden pop-up (HELPSPOT.md §3).
And what staff can insert into the request (``customer_id``, names, email,
phone, ``CustomN``) is that same text: it cannot be both HTML and data. So on
the request page (and the command line, which cannot tell its caller):

* an insertable value that holds no markup (:func:`holds_markup`: a ``<``
  that opens a tag, an ``&`` that starts a character reference) is sent
  exactly as stored, so it shows as stored and inserts as stored (``AT&T``,
  ``R&D``: select fields are set only to an exact match);
* an insertable value that holds markup is HTML-escaped: staff see it
  exactly as stored and it can never run as script or break into an entity;
  Insert then puts the escaped text (``&lt;b&gt;``) into the request, which
  staff see and can mend, instead of markup that would run;
* values listed in a source's ``html_fields`` are deliberate HTML, in CDATA;
* every other value is HTML-escaped, so staff see ``AT&T`` and ``<script>``
  as text.

Automation rules and triggers only apply values, never show them, so there
insertable values go out exactly; the address book HTML-escapes what it shows
itself, so there every value goes out exactly (escaping twice would show
``R&amp;D``). Empty insertable values are left out unless the source sets
``clear_empty``: an automation rule would otherwise wipe what staff had
entered in that custom field. The address book never gets a customer whose
e-mail address would break the ``javascript:`` links it builds from it.

Characters XML 1.0 forbids are dropped everywhere.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from urllib.parse import urlsplit

from lxml import etree

from lookup_server.core.fragments import FragmentSpec, Frame
from lookup_server.core.models import (
    Audience,
    Customer,
    Option,
    PushDetails,
    element_name_problem,
    is_insertable,
)
from lookup_server.core.sources import SourceSettings
from lookup_server.helpspot.view import display_label

log = logging.getLogger(__name__)
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (NUL, most C0 controls...)."""
    if text.isascii() and text.isprintable():
        return text  # the common case, tested in C without the regular expression
    return _ILLEGAL_XML.sub("", text)


def render_livelookup(
    customers: Iterable[Customer],
    source: SourceSettings,
    audience: Audience = Audience.REQUEST_PAGE,
) -> bytes:
    """The ``<livelookup>`` document for these customers: only ``<customer>`` children.

    Assembled from :func:`render_customer` fragments in :func:`livelookup_frame`,
    the same pieces that answers rendered ahead of time are joined from.
    """
    fragments = [render_customer(customer.fields, source, audience) for customer in customers]
    return livelookup_frame(source.columns).document(fragments)


@lru_cache(maxsize=256)
def livelookup_frame(columns: tuple[str, ...]) -> Frame:
    """The document around the ``<customer>`` fragments, for a source's ``columns``."""
    root = etree.Element("livelookup", version="1.0")
    if columns:
        root.set("columns", ",".join(columns))
    empty = XML_DECLARATION + etree.tostring(root, encoding="utf-8", xml_declaration=False)
    # lxml closes an element without children as "<livelookup .../>"
    assert empty.endswith(b"/>"), empty
    return Frame(empty[:-2] + b">", b"</livelookup>", empty)


def render_customer(
    fields: Mapping[str, str],
    source: SourceSettings,
    audience: Audience = Audience.REQUEST_PAGE,
) -> bytes:
    """One customer's ``<customer>`` element; ``b""`` when ``audience`` must not get it."""
    if audience is Audience.ADDRESS_BOOK and not address_book_safe(fields.get("email", "")):
        log.warning(
            "customer %r is left out of the address book: HelpSpot puts the e-mail "
            "address into a javascript: link, which a ' \\ or %% in it would break "
            "or turn into script",
            fields.get("customer_id", ""),
        )
        return b""
    labels, keep_empty = source.labels, source.clear_empty
    node = etree.Element("customer")
    sub_element = etree.SubElement
    for name, kind, insertable, label in _plan(tuple(fields), source.html_fields, audience):
        text = xml_safe(fields.get(name, ""))
        if insertable and not text and not keep_empty:
            continue
        element = sub_element(node, name)
        label = (labels.get(name) if labels else None) or label
        if label:
            element.set("label", _label_text(xml_safe(label), audience))
        element.text = text if kind == _EXACT else _field_text(kind, text)
    return etree.tostring(node, encoding="utf-8", xml_declaration=False)


def fragment_renderer(spec: FragmentSpec) -> tuple[Frame, Callable[[Mapping[str, str]], bytes]]:
    """The frame and the fragment of each customer, as :func:`render_livelookup` makes them.

    For backends that store fragments ahead of time (see lookup_server.core.fragments).
    A spec made by another version of the renderer (a process started before an
    upgrade) is refused: its key would promise bytes this code does not write.
    """
    from lookup_server.helpspot.prerendered import renderer_version

    if spec.renderer != renderer_version():
        raise ValueError(
            f"fragments asked for renderer {spec.renderer}, this is {renderer_version()}"
        )
    source = SourceSettings(
        name="",
        backend="",
        columns=spec.columns,
        labels=dict(spec.labels),
        html_fields=frozenset(spec.html_fields),
        clear_empty=spec.clear_empty,
        fields=dict(spec.fields),
    )
    audience = spec.audience
    return livelookup_frame(spec.columns), lambda fields: render_customer(fields, source, audience)


def address_book_safe(email: str) -> bool:
    r"""True when HelpSpot's address book can put ``email`` into its links' JavaScript.

    It writes ``href="javascript:...value='EMAIL'..."`` escaping only what HTML
    needs: a ``'`` ends the string (``x'-alert(1)-'@x`` would run), a ``\``
    escapes, and ``%27`` is decoded before a javascript: URL runs.
    """
    return not _UNSAFE_IN_JS_LINK.search(email)


_UNSAFE_IN_JS_LINK = re.compile(r"['\\%\s]")


#: How a value is sent: exactly; exactly unless it holds markup; as CDATA; HTML-escaped.
_EXACT, _INSERTABLE, _HTML, _ESCAPED = range(4)


@lru_cache(maxsize=1024)
def _plan(
    names: tuple[str, ...], html_fields: frozenset[str], audience: Audience
) -> tuple[tuple[str, int, bool, str], ...]:
    """Which fields are sent, in order, how, whether each is insertable, and its label.

    HelpSpot labels any field whose name holds "Custom" with a custom field's
    name (``CustomerType`` would read as custom field "erType": empty), so such
    a field that is not ``CustomN`` gets its default label spelled out.

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
        label = display_label(name) if "Custom" in name and not insertable else ""
        plan.append((name, kind, insertable, label))
    return tuple(plan)


def holds_markup(text: str) -> bool:
    """True when ``text``, shown as raw HTML, would not read as itself.

    A ``<`` not followed by a blank opens a tag (for browsers, and for the
    strip_tags HelpSpot runs over a table without ``columns``); an ``&`` that
    starts a character reference (``&amp``, ``&copy2024``, ``&#65``) turns into
    another character. Anything else, ``AT&T``, ``R&D``, ``a < b``, ``O'Brien``,
    reads as written.
    """
    return _TAG_OPEN.search(text) is not None or ("&" in text and html.unescape(text) != text)


_TAG_OPEN = re.compile(r"<(?!\s)")
_XML_SPECIAL = re.compile("[&<>]")


def _field_text(kind: int, text: str) -> str | etree.CDATA:
    if kind == _INSERTABLE:
        return html.escape(text, quote=False) if holds_markup(text) else text
    if kind == _HTML:
        return cdata(text)
    return html.escape(text, quote=True)


def cdata(text: str) -> str | etree.CDATA:
    """``text`` as a CDATA section, or as escaped text where CDATA cannot carry it.

    A CDATA section cannot carry "]]>" (lxml refuses to split one) nor a
    carriage return (parsers normalise it to a line feed). Such a value is sent
    as escaped character data, which every XML parser, HelpSpot's expat
    included, reports as exactly the same text.
    """
    return etree.CDATA(text) if "]]>" not in text and "\r" not in text else text


def _label_text(label: str, audience: Audience) -> str:
    # HelpSpot shows labels as raw HTML too; a label is the admin's text, not markup.
    return label if audience is Audience.ADDRESS_BOOK else html.escape(label, quote=False)


def render_ajaxfield(options: Iterable[Option], ascii_only: bool = False) -> bytes:
    """The ``<ajaxfield>`` document of an AJAX selection field.

    HelpSpot escapes these values itself, so they are only XML-escaped here.
    With ``ascii_only`` descriptions are transliterated ("Zoë" -> "Zoe"),
    because HelpSpot reads the document as ISO-8859-1 and mangles the rest.
    Text holding ``&``, ``<`` or ``>`` goes in CDATA: expat reports the text
    around an entity in pieces, and HelpSpot drops a piece that is exactly
    "0" (``1&gt;0`` would read ``1>``). Only text holding ``]]>``, which CDATA
    cannot carry, still risks that.
    """
    root = etree.Element("ajaxfield")
    for option in options:
        node = etree.SubElement(root, "option")
        description = xml_safe(option.description)
        for name, text in (
            ("value", xml_safe(option.value)),
            ("description", transliterate(description) if ascii_only else description),
        ):
            etree.SubElement(node, name).text = cdata(text) if _XML_SPECIAL.search(text) else text
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
        anchor = etree.SubElement(
            etree.SubElement(root, "p"), "a", href=link, target="_blank", rel="noopener noreferrer"
        )
        anchor.text = "Open"
    return str(etree.tostring(root, method="html", encoding="unicode"))


# -- validation (tests, `lookup-server validate`) ----------------------------------


@cache
def _schema(name: str) -> etree.XMLSchema:
    from importlib import resources  # slows every command-line lookup; only validation needs it

    xsd = resources.files("lookup_schemas") / f"{name}.xsd"
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
