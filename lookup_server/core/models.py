"""Plain data passed between HelpSpot input parsing, backends and the renderer.

Backends receive these and return these; none of them knows about Flask or lxml.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Elements HelpSpot can insert into a request; their values must round-trip
#: byte for byte, so the renderer never HTML-escapes them.
INSERTABLE_FIELDS = frozenset({"customer_id", "first_name", "last_name", "email", "phone"})


#: XML element names lookup-server emits: ASCII, no namespace prefix.
_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: Names of the livelookup document's own structure, which no field may take:
#: HelpSpot starts a new customer at every ``<customer>``, and the XSD declares
#: ``<livelookup>`` as the root, so a field of that name fails validation.
RESERVED_ELEMENTS = frozenset({"customer", "livelookup"})


def element_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a field element of our answers; None when it can."""
    # fullmatch: a trailing line break, which "$" would let through, cannot
    if _ELEMENT_NAME.fullmatch(name) is None:
        return "is not a valid XML element name"
    if name in RESERVED_ELEMENTS:
        return (
            f"is reserved: <{name}> is part of the livelookup document's own structure, "
            "so a field cannot have that name"
        )
    return None


def is_insertable(element: str) -> bool:
    """True when HelpSpot may copy this element's value into a request field."""
    return element in INSERTABLE_FIELDS or (
        element.startswith("Custom") and element[6:].isdigit() and element[6:] != ""
    )


class Audience(enum.Enum):
    """Which of HelpSpot's pages reads a Live Lookup answer, and so how it shows values."""

    #: The request page (and the command line): every value is shown as raw HTML.
    REQUEST_PAGE = "request page"
    #: The address book: HelpSpot HTML-escapes names, e-mail, title and description itself.
    ADDRESS_BOOK = "address book"
    #: Automation rules and triggers: values are applied to the request, never shown.
    AUTOMATION = "automation rule"


@dataclass(frozen=True)
class LookupQuery:
    """What HelpSpot told us about the customer, decoded once, quirks removed."""

    customer_id: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    #: Every other parameter HelpSpot sent (``CustomN``, ``xCategory``,
    #: ``acting_person_*``, ...), decoded, with ``null`` turned into "".
    fields: Mapping[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when nothing searchable arrived."""
        return not any((self.customer_id, self.first_name, self.last_name, self.email, self.phone))


# -- search terms: what one search strategy asks a backend to find ---------------


@dataclass(frozen=True)
class ById:
    """Exact, case-sensitive customer id."""

    customer_id: str


@dataclass(frozen=True)
class ByEmail:
    """E-mail address, compared ignoring case."""

    address: str

    @property
    def folded(self) -> str:
        """The address in the case-folded form backends index and compare."""
        return self.address.casefold()


@dataclass(frozen=True)
class ByPhone:
    """Phone number by its digits only; see :func:`lookup_server.core.search.phone_matches`."""

    digits: str


@dataclass(frozen=True)
class ByName:
    """Case-insensitive prefix of the last name, and of the first name when given."""

    last: str
    first: str = ""

    @property
    def last_folded(self) -> str:
        """Last-name prefix, case-folded."""
        return self.last.casefold()

    @property
    def first_folded(self) -> str:
        """First-name prefix, case-folded ("" when not given)."""
        return self.first.casefold()


SearchTerm = ById | ByEmail | ByPhone | ByName


@dataclass(frozen=True)
class Customer:
    """One customer: element name -> text, in the order to display.

    ``customer_id`` must be present; the renderer emits it first.
    """

    fields: Mapping[str, str]

    @property
    def customer_id(self) -> str:
        """The value HelpSpot inserts as ``sUserId``."""
        return self.fields.get("customer_id", "")


@dataclass(frozen=True)
class Option:
    """One entry of an AJAX selection field's drop-down."""

    value: str
    description: str


@dataclass(frozen=True)
class OptionsQuery:
    """An AJAX selection field asking for its drop-down (HELPSPOT.md §4)."""

    #: ``callingField``: the text typed into the field, used as a search term.
    search: str = ""
    #: Every other parameter (``sUserId``, ``xCategory``, ``CustomN``, ...), decoded.
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PushRequest:
    """A HelpSpot request pushed by staff or a rule (HELPSPOT.md §5)."""

    #: The whole array HelpSpot passed to ``push()``, minus ``documents``.
    data: Mapping[str, object]

    def text(self, key: str) -> str:
        """A top-level value as text ("" when absent)."""
        value = self.data.get(key)
        return "" if value is None else str(value)

    @property
    def request_id(self) -> str:
        """HelpSpot's request number (``xRequest``)."""
        return self.text("xRequest")


@dataclass(frozen=True)
class PushDetails:
    """What ``details($id)`` shows in the request page, as data.

    The core renders it to HTML and escapes every value: a backend never
    builds HTML from another system's text.
    """

    title: str
    rows: tuple[tuple[str, str], ...] = ()
    link: str = ""


@dataclass(frozen=True)
class Webhook:
    """One stored HelpSpot webhook, handed to a target for delivery."""

    id: int
    #: Stable across retries; send it so receivers can de-duplicate.
    idempotency_key: str
    payload: Mapping[str, object]
