"""A Highrise XML API stand-in (github.com/basecamp/highrise-api).

HTTP Basic with the API token as user name; ``GET /people/search.xml`` with
``term`` or ``criteria[email]`` and ``n`` offsets, 25 a page; ``GET
/people/#{id}.xml``; ``POST /people.xml`` (201, ``Location``, the new person);
``GET /people/#{id}/notes.xml``; ``GET /account.xml``. Rate limiting is a 503
with ``Retry-After``, as the API's README describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, Response, request
from lxml import etree

from tests.plugins.emulators import Scripted

PAGE = 25


@dataclass
class HighrisePerson:
    """One stored person."""

    id: str
    first_name: str
    last_name: str
    emails: list[str]
    phones: list[str]
    title: str = ""
    background: str = ""
    company: str = ""
    company_id: str = ""
    #: (created-at, body), oldest first
    notes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class HighriseEmulator:
    """One Highrise account."""

    people: list[HighrisePerson]
    token: str
    next_id: int = 9000
    script: list[Scripted] = field(default_factory=list)
    #: (method, path, args) of every request
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    created: list[bytes] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next matching requests with this instead."""
        self.script.extend(
            Scripted(status, body, headers or {}, path_contains) for _ in range(times)
        )

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("highrise-emulator")
        app.before_request(self._gate)
        app.add_url_rule("/account.xml", "account", self._account)
        app.add_url_rule("/people/search.xml", "search", self._search)
        app.add_url_rule("/people/<int:person_id>.xml", "person", self._person)
        app.add_url_rule("/people/<int:person_id>/notes.xml", "notes", self._notes)
        app.add_url_rule("/people.xml", "create", self._create, methods=["POST"])
        return app

    def _gate(self) -> Response | None:
        self.seen.append((request.method, request.path, dict(request.args)))
        self.user_agents.append(request.headers.get("User-Agent", ""))
        auth = request.authorization
        if auth is None or auth.username != self.token:
            return Response(
                "HTTP Basic: Access denied.\n",
                401,
                {"WWW-Authenticate": 'Basic realm="Application"'},
            )
        for i, s in enumerate(self.script):
            if s.path_contains in request.path:
                del self.script[i]
                return Response(s.body, s.status, s.headers, content_type="application/xml")
        return None

    def _account(self) -> Response:
        account = etree.Element("account")
        for tag, value, kind in (
            ("id", "1", "integer"),
            ("name", "Emulated Co", None),
            ("subdomain", "example", None),
            ("plan", "premium", None),
            ("people-count", str(len(self.people)), "integer"),
        ):
            el = etree.SubElement(account, tag)
            el.text = value
            if kind:
                el.set("type", kind)
        return _xml(account)

    def _search(self) -> Response:
        offset = int(request.args.get("n", "0"))
        if "criteria[email]" in request.args:
            wanted = request.args["criteria[email]"].casefold()
            hits = [p for p in self.people if any(wanted in e.casefold() for e in p.emails)]
        else:
            wanted = request.args.get("term", "").casefold()
            hits = [
                p
                for p in self.people
                if wanted and wanted in f"{p.first_name} {p.last_name}".casefold()
            ]
        people = etree.Element("people")
        for p in hits[offset : offset + PAGE]:
            people.append(_person(p))
        return _xml(people)

    def _person(self, person_id: int) -> Response:
        for p in self.people:
            if p.id == str(person_id):
                return _xml(_person(p))
        return Response("", 404)

    def _notes(self, person_id: int) -> Response:
        person = next((p for p in self.people if p.id == str(person_id)), None)
        if person is None:
            return Response("", 404)
        offset = int(request.args.get("n", "0"))
        notes = etree.Element("notes")
        for i, (created, body) in enumerate(person.notes[offset : offset + PAGE], start=offset + 1):
            note = etree.SubElement(notes, "note")
            for tag, value in (
                ("id", str(i)),
                ("body", body),
                ("subject-id", person.id),
                ("subject-type", "Party"),
                ("created-at", created),
            ):
                etree.SubElement(note, tag).text = value
        return _xml(notes)

    def _create(self) -> Response:
        body = request.get_data()
        self.created.append(body)
        if request.content_type != "application/xml":
            return Response("", 415)
        el = etree.fromstring(body)
        self.next_id += 1
        person = HighrisePerson(
            str(self.next_id),
            el.findtext("first-name") or "",
            el.findtext("last-name") or "",
            _texts(el, "contact-data/email-addresses/email-address/address"),
            _texts(el, "contact-data/phone-numbers/phone-number/number"),
            title=el.findtext("title") or "",
            background=el.findtext("background") or "",
            company=el.findtext("company-name") or "",
        )
        self.people.append(person)
        response = _xml(_person(person), 201)
        response.headers["Location"] = f"{request.host_url}people/{person.id}.xml"
        return response


def _texts(el: etree._Element, path: str) -> list[str]:
    """The text of every element at ``path`` that has any, in document order."""
    return [found.text for found in el.iterfind(path) if found.text]


def _person(p: HighrisePerson) -> etree._Element:
    person = etree.Element("person")
    rows: list[tuple[str, str, str | None]] = [
        ("id", p.id, "integer"),
        ("first-name", p.first_name, None),
        ("last-name", p.last_name, None),
        ("title", p.title, None),
        ("background", p.background, None),
        ("company-id", p.company_id, "integer"),
        ("company-name", p.company, None),
        ("created-at", "2007-02-27T03:11:52Z", "datetime"),
        ("updated-at", "2007-03-10T15:11:52Z", "datetime"),
        ("visible-to", "Everyone", None),
        ("author-id", "2", "integer"),
    ]
    for tag, value, kind in rows:
        el = etree.SubElement(person, tag)
        el.text = value or None
        if kind:
            el.set("type", kind)
    contact = etree.SubElement(person, "contact-data")
    emails = etree.SubElement(contact, "email-addresses")
    for i, address in enumerate(p.emails):
        item = etree.SubElement(emails, "email-address")
        for tag, value in (("id", str(i + 1)), ("address", address), ("location", "Work")):
            etree.SubElement(item, tag).text = value
    phones = etree.SubElement(contact, "phone-numbers")
    for i, number in enumerate(p.phones):
        item = etree.SubElement(phones, "phone-number")
        for tag, value in (("id", str(i + 100)), ("number", number), ("location", "Work")):
            etree.SubElement(item, tag).text = value
    return person


def _xml(root: etree._Element, status: int = 200) -> Response:
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return Response(body, status, content_type="application/xml; charset=utf-8")
