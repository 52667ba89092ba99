"""A FogBugz XML API stand-in: ``api.xml`` and the ``api.asp`` commands the target uses.

Shapes, from FogBugz's documentation:

* ``GET /api.xml`` answers ``<response><version>…</version><minversion>…</minversion>
  <url>api.asp?</url></response>`` (XML API version 8, "Checking the API Version
  and location", help.fogcreek.com/8202/xml-api).
* ``api.asp`` takes name/value pairs by GET or POST, UTF-8, each with ``cmd`` and,
  but for ``logon``, ``token``; the answer is XML with a ``<response>`` root whose
  first child is ``<error code="N">`` when something went wrong, code 3 ("Not
  logged on") for a missing or unknown token ("FogBugz XML API: General Rules for
  API Requests", support.fogbugz.com). Errors come with HTTP 200. The codes and
  their texts (0 not initialised, 1 log on problem, 3 not logged on, 4 argument
  missing, 8 cannot write to any project, ...) are the API's published list.
* ``cmd=new`` takes the case's fields by name or number (``sProject`` or
  ``ixProject``, ``sArea``, ``sCategory``, ``sTitle``, ``sEvent``, ...) and answers
  ``<case ixBug="N" operations="…"/>``; a project the user may not modify means
  the first one they may ("FogBugz XML API: Editing Cases"). An unknown project
  name is treated the same here (the documentation does not say).
* ``cmd=search`` with ``q`` (a case number) and ``cols`` answers
  ``<cases count="N"><case ixBug="N" operations="…"><sTitle>…</sTitle>…`` with
  text in CDATA ("FogBugz XML API: Sample XML Payloads"; API v5 and later wrap
  element text in CDATA).
* ``cmd=listProjects`` (``fWrite=1``: writable only), ``cmd=listAreas``
  (``ixProject``), ``cmd=listCategories`` answer ``<projects><project>``,
  ``<areas><area>``, ``<categories><category>`` with the fields of the
  documentation's lists (``ixProject``, ``sProject``, ``ixPersonOwner``, ``fInbox``,
  ``fDeleted``; ``ixArea``, ``sArea``, ``ixProject``, ``nType``, ``cDoc``; ...).

FogBugz documents no rate limit; :meth:`FogBugzEmulator.fail_next` serves one
(a 429 or 503 with ``Retry-After``) as any server in front of it could, and any
other refusal a test needs (an HTTP error, an ``<error>``, junk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import Flask, Response, request
from lxml import etree

from tests.plugins.emulators import Scripted

OPERATIONS = "edit,assign,resolve,email,remind"


@dataclass
class FogBugzProject:
    """One project, and whether the token's user may write to it."""

    ix: str
    name: str
    writable: bool = True
    inbox: bool = False
    areas: dict[str, str] = field(default_factory=dict)  # ixArea -> sArea


@dataclass
class FogBugzCase:
    """One stored case."""

    number: str
    fields: dict[str, str]


def default_projects() -> list[FogBugzProject]:
    """An inbox, a support project with two areas, and one the user may only read."""
    return [
        FogBugzProject("1", "Inbox", inbox=True, areas={"10": "Not Spam"}),
        FogBugzProject("2", "Support", areas={"20": "Customers", "21": "Billing & <Refunds>"}),
        FogBugzProject("3", "Archive", writable=False, areas={"30": "Old"}),
    ]


CATEGORIES = {"1": "Bug", "2": "Feature", "3": "Inquiry", "4": "Schedule Item"}


@dataclass
class FogBugzEmulator:
    """One FogBugz site."""

    token: str
    projects: list[FogBugzProject] = field(default_factory=default_projects)
    cases: dict[str, FogBugzCase] = field(default_factory=dict)
    next_number: int = 1000
    owner: str = "Ada Admin"
    script: list[Scripted] = field(default_factory=list)
    #: (cmd, every parameter but the token) of every api.asp request, and its method
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        times: int = 1,
        cmd: str = "",
    ) -> None:
        """Answer the next requests (for ``cmd`` only, when given) with this instead."""
        self.script.extend(Scripted(status, body, headers or {}, cmd) for _ in range(times))

    def fail_with_error(self, code: str, text: str, cmd: str = "") -> None:
        """Answer the next request with ``<error code=…>`` (HTTP 200, as FogBugz does)."""
        self.fail_next(200, _error_xml(code, text), cmd=cmd)

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("fogbugz-emulator")
        app.add_url_rule("/api.xml", "version", self._version)
        app.add_url_rule("/api.asp", "api", self._api, methods=["GET", "POST"])
        return app

    def _version(self) -> Response:
        return _xml(_element("response", version="8", minversion="1", url="api.asp?"))

    def _api(self) -> Response:
        values = request.values.to_dict()
        cmd = values.pop("cmd", "")
        token = values.pop("token", "")
        self.seen.append((cmd, values))
        self.methods.append(request.method)
        for i, scripted in enumerate(self.script):
            if scripted.path_contains in ("", cmd):
                del self.script[i]
                return Response(
                    scripted.body, scripted.status, scripted.headers, content_type="text/xml"
                )
        if token != self.token:
            return Response(_error_xml("3", "Not logged on"), 200, content_type="text/xml")
        handler = {
            "new": self._new,
            "search": self._search,
            "listProjects": self._list_projects,
            "listAreas": self._list_areas,
            "listCategories": self._list_categories,
        }.get(cmd)
        if handler is None:
            return Response(f"cmd={cmd} is not emulated", 400)
        return _xml(handler(values))

    # -- commands -----------------------------------------------------------------------

    def _writable(self) -> list[FogBugzProject]:
        return [p for p in self.projects if p.writable]

    def _new(self, values: dict[str, str]) -> etree._Element:
        writable = self._writable()
        if not writable:
            return _error(8, "New case problem - you can't write to any project")
        wanted = values.get("sProject", "")
        project = next((p for p in writable if p.name == wanted), writable[0])
        area = values.get("sArea", "")
        if area not in project.areas.values():
            area = next(iter(project.areas.values()), "")
        self.next_number += 1
        number = str(self.next_number)
        self.cases[number] = FogBugzCase(
            number,
            {
                "sTitle": values.get("sTitle", ""),
                "sEvent": values.get("sEvent", ""),
                "sCustomerEmail": values.get("sCustomerEmail", ""),
                "sProject": project.name,
                "sArea": area,
                "sCategory": values.get("sCategory") or "Bug",
                "sStatus": "Active",
                "sPersonAssignedTo": self.owner,
                "fOpen": "true",
                "dtLastUpdated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        response = etree.Element("response")
        etree.SubElement(response, "case", ixBug=number, operations=OPERATIONS)
        return response

    def _search(self, values: dict[str, str]) -> etree._Element:
        numbers = [n for n in values.get("q", "").split(",") if n in self.cases]
        columns = [c for c in values.get("cols", "").split(",") if c]
        response = etree.Element("response")
        cases = etree.SubElement(response, "cases", count=str(len(numbers)))
        for number in numbers:
            case = etree.SubElement(cases, "case", ixBug=number, operations=OPERATIONS)
            for column in columns:
                _text(case, column, self.cases[number].fields.get(column, ""))
        return response

    def _list_projects(self, values: dict[str, str]) -> etree._Element:
        listed = self._writable() if values.get("fWrite") == "1" else self.projects
        response = etree.Element("response")
        projects = etree.SubElement(response, "projects")
        for p in listed:
            project = etree.SubElement(projects, "project")
            for name, value in (
                ("ixProject", p.ix),
                ("sProject", p.name),
                ("ixPersonOwner", "2"),
                ("sPersonOwner", self.owner),
                ("sEmail", "ada@example.com"),
                ("sPhone", ""),
                ("fInbox", "true" if p.inbox else "false"),
                ("ixWorkflow", "1"),
                ("fDeleted", "false"),
            ):
                _text(project, name, value)
        return response

    def _list_areas(self, values: dict[str, str]) -> etree._Element:
        wanted = values.get("ixProject", "")
        listed = self._writable() if values.get("fWrite") == "1" else self.projects
        response = etree.Element("response")
        areas = etree.SubElement(response, "areas")
        for p in listed:
            if wanted and p.ix != wanted:
                continue
            for ix, name in p.areas.items():
                area = etree.SubElement(areas, "area")
                for tag, value in (
                    ("ixArea", ix),
                    ("sArea", name),
                    ("ixProject", p.ix),
                    ("sProject", p.name),
                    ("ixPersonOwner", "2"),
                    ("sPersonOwner", self.owner),
                    ("nType", "0"),
                    ("cDoc", "0"),
                ):
                    _text(area, tag, value)
        return response

    def _list_categories(self, values: dict[str, str]) -> etree._Element:
        response = etree.Element("response")
        categories = etree.SubElement(response, "categories")
        for ix, name in CATEGORIES.items():
            category = etree.SubElement(categories, "category")
            for tag, value in (
                ("ixCategory", ix),
                ("sCategory", name),
                ("sPlural", name + "s"),
                ("ixStatusDefault", "1"),
                ("fIsScheduleItem", "true" if ix == "4" else "false"),
            ):
                _text(category, tag, value)
        return response


def _text(parent: etree._Element, tag: str, value: str) -> None:
    """A child whose text is in CDATA, as FogBugz writes it (plain when CDATA cannot hold it)."""
    child = etree.SubElement(parent, tag)
    if value:
        child.text = etree.CDATA(value) if "]]>" not in value else value


def _element(tag: str, **children: str) -> etree._Element:
    root = etree.Element(tag)
    for name, value in children.items():
        etree.SubElement(root, name).text = value
    return root


def _error(code: int, text: str) -> etree._Element:
    response = etree.Element("response")
    etree.SubElement(response, "error", code=str(code)).text = etree.CDATA(text)
    return response


def _error_xml(code: str, text: str) -> bytes:
    return bytes(etree.tostring(_error(int(code), text), xml_declaration=True, encoding="UTF-8"))


def _xml(root: etree._Element) -> Response:
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return Response(body, 200, content_type="text/xml; charset=utf-8")
