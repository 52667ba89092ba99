"""Highrise people: Live Lookup and Request Push target (``backend = "highrise"``).

Talks Highrise's XML API with HTTP Basic ``token:X``. Lookup searches
``/people/search.xml`` by e-mail (``criteria[email]``) and name (``term``),
25 people a page, and re-checks each person literally. A push creates the
customer as a Highrise person unless one with that e-mail exists; its id is
the person id. The XML is parsed here with lxml, in the small functions at the
end (the one backend allowed to: Highrise speaks nothing but XML).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from lxml import etree

from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    ByName,
    Customer,
    NotFound,
    PushDetails,
    PushRequest,
    SearchTerm,
    Secret,
    SourceBackend,
    TargetBackend,
    matches_literally,
    with_field_map,
)

from . import http_client
from .http_client import Deadline

log = logging.getLogger(__name__)
VENDOR = "Highrise"
#: Highrise pages search results and notes in groups of 25 (``?n=25`` for the next).
PAGE_SIZE = 25
#: Pages read before giving up on more literal matches (200 people).
MAX_PAGES = 8


@dataclass(frozen=True)
class HighriseOptions:
    """The keys of a Highrise ``[sources.NAME]`` or ``[targets.NAME]`` table."""

    #: The account's address, e.g. https://example.highrisehq.com (tests: the emulator).
    url: str
    token: Secret
    #: HelpSpot request field holding the company name for a push, e.g. "Custom3".
    company_field: str = ""
    #: How many of a person's latest notes the push details show.
    notes_shown: int = 5
    #: Highrise asks integrations to identify themselves with a contact.
    user_agent: str = "lookup-server (HelpSpot integration)"


@dataclass(frozen=True)
class Person:
    """What lookup and details need from one ``<person>``."""

    id: str
    first_name: str
    last_name: str
    title: str
    background: str
    company: str
    emails: tuple[str, ...]
    phones: tuple[str, ...]


class _Highrise:
    """What the Highrise source and target share: the account's API and its people."""

    Options = HighriseOptions
    options: HighriseOptions
    _http: requests.Session | None = None

    def _deadline(self) -> Deadline:
        raise NotImplementedError

    def _search(
        self, params: dict[str, str], term: SearchTerm, limit: int, deadline: Deadline
    ) -> list[Person]:
        found: list[Person] = []
        for page in range(MAX_PAGES):
            body = self._get("/people/search.xml", deadline, {**params, "n": str(page * PAGE_SIZE)})
            people = parse_people(body)
            found += [p for p in people if matches_literally(term, self._fields(p, term))]
            if len(found) >= limit or len(people) < PAGE_SIZE:
                break
        return found

    def _fields(self, p: Person, term: SearchTerm) -> dict[str, str]:
        email = p.emails[0] if p.emails else ""
        if isinstance(term, ByEmail):
            # show the address that was searched for, not merely the first one
            email = next((e for e in p.emails if e.casefold() == term.folded), email)
        fields = {
            "customer_id": p.id,
            "first_name": p.first_name,
            "last_name": p.last_name,
            "email": email,
            "phone": p.phones[0] if p.phones else "",
        }
        extras = {
            "title": p.title,
            "company": p.company,
            "background": p.background,
            "highrise_link": self._link(p),
        }
        return fields | {k: v for k, v in extras.items() if v}

    def _link(self, p: Person) -> str:
        """The person's page as HTML; parts escaped, since the core sends it as CDATA."""
        url = self._person_url(p.id)
        name = f"{p.first_name} {p.last_name}".strip() or p.id
        return (
            f'<a href="{html.escape(url, quote=True)}" target="_blank" '
            f'rel="noopener noreferrer">{html.escape(name)} in Highrise</a>'
        )

    # -- life cycle ---------------------------------------------------------------------

    def check(self) -> list[str]:
        """Read /account.xml (read-only) to prove the url and token work."""
        self._get("/account.xml", self._deadline(), {})
        return []

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            self._http.close()

    # -- HTTP ---------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        if self._http is None:
            self._http = http_client.AbortableSession()
            self._http.auth = (self.options.token.reveal(), "X")
            self._http.headers["User-Agent"] = self.options.user_agent
        return self._http

    def _person_url(self, person_id: str) -> str:
        return f"{self.options.url.rstrip('/')}/people/{quote(person_id, safe='')}"

    def _send(self, method: str, path: str, deadline: Deadline, **kwargs: Any) -> requests.Response:
        response = http_client.send(
            self._session(),
            method,
            self.options.url.rstrip("/") + path,
            deadline,
            vendor=VENDOR,
            **kwargs,
        )
        _raise_for_status(response, self.options.url)
        return response

    def _get(self, path: str, deadline: Deadline, params: dict[str, str]) -> bytes:
        response = self._send("GET", path, deadline, params=params)
        if response.status_code == 404:
            raise BackendError(
                f"Highrise has no account at {self.options.url} (HTTP 404); check url"
            )
        return response.content

    def _person(self, person_id: str, deadline: Deadline) -> Person | None:
        response = self._send("GET", f"/people/{person_id}.xml", deadline)
        if response.status_code == 404:
            return None
        person = parse_person(response.content)
        if person is None:
            raise BackendError("Highrise sent an unreadable person; try again later")
        return person


class HighriseBackend(_Highrise, SourceBackend[HighriseOptions]):
    """Highrise people for Live Lookup."""

    def _deadline(self) -> Deadline:
        return Deadline(self.source.timeout)

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """People matching ``term``; phone numbers cannot be searched in Highrise."""
        deadline = self._deadline()
        if isinstance(term, ById):
            found = self._person(term.customer_id, deadline) if term.customer_id.isdigit() else None
            people = [found] if found is not None else []
        elif isinstance(term, ByEmail):
            people = self._search({"criteria[email]": term.address}, term, limit, deadline)
        elif isinstance(term, ByName):
            people = self._search({"term": term.last}, term, limit, deadline)
        else:
            # Highrise documents no search by phone digits (criteria[phone] compares
            # the stored text), so the core falls through to the next strategy.
            return []
        return [Customer(with_field_map(self._fields(p, term), self.source)) for p in people][
            :limit
        ]


class HighriseTarget(_Highrise, TargetBackend[HighriseOptions]):
    """A Request Push target that creates (or finds) the request's customer as a person."""

    def _deadline(self) -> Deadline:
        return Deadline(self.target.timeout)

    # -- Request Push -------------------------------------------------------------------

    def push(self, request: PushRequest) -> str:
        """Create the request's customer as a person, or find the one with that e-mail."""
        deadline = self._deadline()
        email = request.text("sEmail").strip()
        if email:
            existing = self._search({"criteria[email]": email}, ByEmail(email), 1, deadline)
            if existing:
                return existing[0].id
        first, last = request.text("sFirstName").strip(), request.text("sLastName").strip()
        if not (first or last):
            first, _, last = request.text("fullname").strip().partition(" ")
        if not (first or last or email):
            raise BackendError(
                "the request has no customer name or e-mail to create a Highrise person from"
            )
        company = request.text(self.options.company_field) if self.options.company_field else ""
        body = person_xml(
            first or email,
            last,
            email,
            request.text("sPhone").strip(),
            company.strip(),
            request.text("staff_comment").strip(),
        )
        response = self._send(
            "POST", "/people.xml", deadline, data=body, headers={"Content-Type": "application/xml"}
        )
        person = parse_person(response.content) if response.status_code == 201 else None
        if person is None:
            raise _push_error(response)
        return person.id

    def details(self, push_id: str) -> PushDetails:
        """The person's name, link, company, contact data and latest notes."""
        deadline = self._deadline()
        person = self._person(push_id, deadline) if push_id.isdigit() else None
        if person is None:
            raise NotFound(f"Highrise person {push_id} no longer exists")
        rows = [
            (label, value)
            for label, value in (
                ("Company", person.company),
                ("Title", person.title),
                ("Email", ", ".join(person.emails)),
                ("Phone", ", ".join(person.phones)),
            )
            if value
        ]
        body = self._get(f"/people/{push_id}/notes.xml", deadline, {})
        notes = sorted(parse_notes(body), reverse=True)[: self.options.notes_shown]
        rows += [(f"Note, {created[:10]}", text) for created, text in notes]
        name = f"{person.first_name} {person.last_name}".strip() or f"Person {push_id}"
        return PushDetails(title=name, rows=tuple(rows), link=self._person_url(push_id))


def _raise_for_status(response: requests.Response, url: str) -> None:
    status = response.status_code
    if status in (200, 201, 404, 422, 507):
        return  # callers decide what these mean
    if status == 401:
        raise BackendError(
            "Highrise rejected the API token (HTTP 401); check token "
            "(My Info > API token in Highrise)"
        )
    if status == 403:
        raise BackendError("the Highrise user of this token may not do that (HTTP 403)")
    if status in (301, 302):
        raise BackendError(
            f"Highrise redirected the request (HTTP {status}): set url to "
            f"the account's exact address (http or https?) instead of {url}"
        )
    if status >= 500:
        raise http_client.outage_error(VENDOR, status)
    raise BackendError(f"Highrise answered HTTP {status}; check the settings")


def _push_error(response: requests.Response) -> BackendError:
    if response.status_code == 507:
        return BackendError("the Highrise account cannot hold more people (HTTP 507: plan limit)")
    if response.status_code == 422:
        errors = parse_errors(response.content)
        return BackendError("Highrise refused the new person: " + ("; ".join(errors) or "invalid"))
    return BackendError(f"Highrise did not create the person (HTTP {response.status_code})")


# -- XML (lxml, no network, no entities) -----------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
#: Characters XML 1.0 cannot carry at all (lxml refuses them).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _root(body: bytes, tag: str) -> Any:
    """The document element, or a BackendError when the body is not that XML."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        raise BackendError(
            "Highrise sent an unreadable answer (not XML); try again later"
        ) from None
    if root is None or root.tag != tag:
        raise BackendError(f"Highrise sent unexpected XML (expected <{tag}>); try again later")
    return root


def parse_people(body: bytes) -> list[Person]:
    """Every ``<person>`` of a ``<people>`` document."""
    return [_person_of(p) for p in _root(body, "people").iterfind("person")]


def parse_person(body: bytes) -> Person | None:
    """The ``<person>`` document, or None when it has no id."""
    person = _person_of(_root(body, "person"))
    return person if person.id else None


def _person_of(el: Any) -> Person:
    def text(path: str) -> str:
        return (el.findtext(path) or "").strip()

    return Person(
        id=text("id"),
        first_name=text("first-name"),
        last_name=text("last-name"),
        title=text("title"),
        background=text("background"),
        company=text("company-name"),
        emails=tuple(
            a
            for a in (
                x.strip()
                for x in el.xpath("contact-data/email-addresses/email-address/address/text()")
            )
            if a
        ),
        phones=tuple(
            n
            for n in (
                x.strip() for x in el.xpath("contact-data/phone-numbers/phone-number/number/text()")
            )
            if n
        ),
    )


def parse_notes(body: bytes) -> list[tuple[str, str]]:
    """``(created-at, body)`` of every ``<note>`` in a ``<notes>`` document."""
    return [
        ((n.findtext("created-at") or ""), (n.findtext("body") or "").strip())
        for n in _root(body, "notes").iterfind("note")
    ]


def parse_errors(body: bytes) -> list[str]:
    """The messages of a Rails ``<errors><error>…</error></errors>`` body."""
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return []
    return [e.text.strip() for e in root.iterfind("error") if e.text] if root is not None else []


def person_xml(
    first: str, last: str, email: str, phone: str, company: str, background: str
) -> bytes:
    """The ``<person>`` document that POST /people.xml creates."""
    person = etree.Element("person")
    for tag, value in (
        ("first-name", first),
        ("last-name", last),
        ("company-name", company),
        ("background", background),
    ):
        if value:
            etree.SubElement(person, tag).text = _NOT_XML.sub("", value)
    contact = etree.SubElement(person, "contact-data")
    if email:
        address = etree.SubElement(etree.SubElement(contact, "email-addresses"), "email-address")
        etree.SubElement(address, "address").text = _NOT_XML.sub("", email)
        etree.SubElement(address, "location").text = "Work"
    if phone:
        number = etree.SubElement(etree.SubElement(contact, "phone-numbers"), "phone-number")
        etree.SubElement(number, "number").text = _NOT_XML.sub("", phone)
        etree.SubElement(number, "location").text = "Work"
    return bytes(etree.tostring(person, xml_declaration=True, encoding="UTF-8"))
