"""FogBugz cases from Request Push and webhooks (``backend = "fogbugz"``).

Speaks FogBugz's XML API (version 8, FogBugz 7 and later): name/value pairs
POSTed to ``api.asp`` with the API token as ``token`` (in the body, never in
a URL a log could keep), answered by a ``<response>`` document, or by
``<response><error code="N">…</error></response>`` with HTTP 200 when
FogBugz refused. A push or a webhook makes a case with ``cmd=new`` (``sTitle``,
``sEvent``, ``sCustomerEmail``, and the configured ``sProject``, ``sArea``,
``sCategory``); its id is the case number (``ixBug``). Details read the case
with ``cmd=search`` (``q`` the number, ``cols`` the fields shown). ``check``
creates nothing: it reads ``api.xml`` and lists projects, areas and
categories to find the configured ones.

FogBugz's answers are untrusted XML. They are read with the standard
library's expat, refusing any document type declaration: FogBugz never sends
one, and without one no entity can be declared, so none is expanded or
fetched (the billion-laughs and external-entity attacks need a DTD). lxml
would do as well (the Highrise backend uses it, and plugins may), but the
project keeps lxml to the renderer, and expat with this guard needs no
dependency and parses the few small documents FogBugz sends.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

import requests

from lookup_server.plugin import (
    BackendError,
    NotFound,
    PushDetails,
    Secret,
    StoreLocation,
    TargetSettings,
)

from .http_client import Deadline
from .tracker_target import DEFAULT_BODY, DEFAULT_TITLE, TrackerTarget

log = logging.getLogger(__name__)

#: The XML API version this target is written for: api.xml's minversion may not pass it.
API_VERSION = 8
#: The case fields details show (cmd=search's cols).
CASE_COLUMNS = "sTitle,sStatus,sPersonAssignedTo,dtLastUpdated,sProject,sArea,fOpen"
#: FogBugz's error codes that mean the token, not the request, is wrong.
TOKEN_ERRORS = frozenset({"1", "3"})
#: What FogBugz's documented error codes mean, and what to do.
FOGBUGZ_ERRORS = {
    "0": "FogBugz is not initialised (its database may be down); try again later",
    "1": "FogBugz could not log on with the token; check token",
    "3": "FogBugz rejected the API token (not logged on); check token",
    "4": "FogBugz says an argument is missing",
    "8": "the token's user may not write to any FogBugz project",
    "13": "the token's user lacks the permission in FogBugz",
}


@dataclass(frozen=True)
class FogBugzOptions:
    """The keys of a ``[targets.NAME]`` table with ``backend = "fogbugz"``."""

    #: The FogBugz site, e.g. https://example.fogbugz.com (api.asp is found under it).
    url: str
    #: An API token (FogBugz: Account & Settings > User Options > Create API Token).
    token: Secret
    #: Where new cases go, by name; FogBugz's default project when empty.
    project: str = ""
    #: An area of that project, by name.
    area: str = ""
    #: The case's category by name (Bug, Feature, Inquiry, ...).
    category: str = ""
    #: The case's title (a template, README "Templates").
    title: str = DEFAULT_TITLE
    #: The case's first event, its text (a template).
    body: str = DEFAULT_BODY
    #: The record of delivered webhooks; default: the user's state folder.
    store: StoreLocation | None = None


@dataclass(frozen=True)
class Case:
    """What details show of one case."""

    number: str
    fields: Mapping[str, str]

    def text(self, name: str) -> str:
        """One field's text ("" when FogBugz sent none)."""
        return self.fields.get(name, "")


class FogBugzTarget(TrackerTarget[FogBugzOptions]):
    """Makes a FogBugz case of each pushed request and each webhook."""

    Options = FogBugzOptions
    VENDOR = "FogBugz"
    ITEM = "case"

    def __init__(self, options: FogBugzOptions, target: TargetSettings) -> None:
        super().__init__(options, target)
        self.site = options.url.rstrip("/")

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """The shared checks; an area needs its project (area names are per project)."""
        problems = super().validate(options, target)
        if options.area and not options.project:
            problems.append(("area", "needs project: FogBugz areas belong to a project"))
        return problems

    # -- capabilities -----------------------------------------------------------------

    def _create(self, title: str, body: str, data: Mapping[str, object]) -> str:
        """``cmd=new``: the new case's number."""
        params = {"sTitle": title, "sEvent": body}
        email = data.get("sEmail")
        if isinstance(email, str) and email.strip():
            params["sCustomerEmail"] = email.strip()
        for key, value in (
            ("sProject", self.options.project),
            ("sArea", self.options.area),
            ("sCategory", self.options.category),
        ):
            if value:
                params[key] = value
        answer, response = self.answer("new", self._deadline(), params)
        case = answer.find("case")
        number = "" if case is None else case.get("ixBug", "").strip()
        if not number.isdigit():
            raise self.refused("FogBugz answered without the new case's number", response)
        return number

    def details(self, push_id: str) -> PushDetails:
        """The case's title, status, assignee, project and last update."""
        if not push_id.isdigit():
            raise NotFound(f"{push_id!r} is not a FogBugz case number")
        answer = self.call("search", self._deadline(), {"q": push_id, "cols": CASE_COLUMNS})
        case = next((c for c in read_cases(answer) if c.number == push_id), None)
        if case is None:
            raise NotFound(f"FogBugz has no case {push_id} that the token's user can see")
        place = " / ".join(p for p in (case.text("sProject"), case.text("sArea")) if p)
        rows = tuple(
            (label, value)
            for label, value in (
                ("Status", case.text("sStatus")),
                ("Assigned to", case.text("sPersonAssignedTo")),
                ("Project", place),
                ("Last update", readable_time(case.text("dtLastUpdated"))),
            )
            if value
        )
        title = case.text("sTitle") or "(no title)"
        return PushDetails(
            title=f"FogBugz case {push_id}: {title}", rows=rows, link=self.case_url(push_id)
        )

    def check(self) -> list[str]:
        """Read api.xml, then find the project, area and category; nothing is created."""
        self.record.count()
        deadline = self._deadline()
        self._check_api(deadline)
        projects = self.call("listProjects", deadline, {"fWrite": "1"})
        names = {
            p.findtext("sProject", "").strip(): p.findtext("ixProject", "")
            for p in projects.iter("project")
        }
        if not names:
            raise BackendError(FOGBUGZ_ERRORS["8"])
        if self.options.project and self.options.project not in names:
            raise BackendError(
                f"FogBugz has no project {self.options.project!r} that the token's user may "
                f"write to (there are {len(names)}); check project"
            )
        if self.options.area:
            listed = {"fWrite": "1", "ixProject": names[self.options.project]}
            self._require("area", self.call("listAreas", deadline, listed), "sArea")
        if self.options.category:
            self._require("category", self.call("listCategories", deadline, {}), "sCategory")
        return self._plain_http_warning()

    def case_url(self, number: str) -> str:
        """The case's page in FogBugz."""
        return f"{self.site}/default.asp?{number}"

    # -- the XML API ------------------------------------------------------------------

    def call(self, cmd: str, deadline: Deadline, params: Mapping[str, str]) -> ET.Element:
        """POST ``cmd`` to api.asp; the ``<response>``, or the error FogBugz answered."""
        return self.answer(cmd, deadline, params)[0]

    def answer(
        self, cmd: str, deadline: Deadline, params: Mapping[str, str]
    ) -> tuple[ET.Element, requests.Response]:
        """:meth:`call`'s ``<response>``, and the HTTP answer it came in."""
        data = {"cmd": cmd, "token": self.options.token.reveal(), **params}
        response = self._send(
            "POST", f"{self.site}/api.asp", deadline, data=data, headers={"Accept": "text/xml"}
        )
        root = self._document(response, "api.asp")
        error = root.find("error")
        if error is not None:
            raise self._error(error, response)
        return root, response

    def _document(self, response: requests.Response, page: str) -> ET.Element:
        problem = self.http_problem(response.status_code)
        if response.status_code == 404:
            problem = f"there is no FogBugz {page} at {self.options.url} (HTTP 404); check url"
        if problem:
            raise self.refused(problem, response)
        try:
            root = parse_response(response.content)
        except ValueError as exc:
            raise self.refused(f"FogBugz sent an unreadable answer ({exc})", response) from None
        return root

    def _error(self, error: ET.Element, response: requests.Response) -> BackendError:
        code = error.get("code", "").strip()
        said = self.quoted(error.text or "")
        meaning = FOGBUGZ_ERRORS.get(code, "FogBugz refused the request")
        if code in TOKEN_ERRORS:
            meaning += " (Account & Settings > User Options > Create API Token)"
        detail = f" (error {code}: {said})" if said else f" (error {code})"
        return self.refused(meaning + detail, response)

    def _check_api(self, deadline: Deadline) -> None:
        response = self._send("GET", f"{self.site}/api.xml", deadline)
        root = self._document(response, "api.xml")
        minimum = root.findtext("minversion", "").strip()
        if not minimum.isdigit() or int(minimum) > API_VERSION:
            raise BackendError(
                f"FogBugz at {self.options.url} speaks an XML API this target does not "
                f"(minversion {minimum or '?'}, this target speaks {API_VERSION})"
            )
        entry = root.findtext("url", "").strip()
        if not entry.startswith("api.asp"):
            raise BackendError(
                f"FogBugz at {self.options.url} answers at {entry!r}, not api.asp: "
                "FogBugz 7 or later is needed"
            )

    def _require(self, key: str, listed: ET.Element, field: str) -> None:
        wanted = getattr(self.options, key)
        names = {el.text.strip() for el in listed.iter(field) if el.text}
        if wanted not in names:
            raise BackendError(f"FogBugz has no {key} {wanted!r} there; check {key}")


# -- FogBugz's XML: expat, no DTD ---------------------------------------------------------


class _DoctypeRefused(ValueError):
    pass


def _refuse_doctype(*_: object) -> None:
    raise _DoctypeRefused("a document type declaration, which FogBugz never sends")


def parse_response(body: bytes) -> ET.Element:
    """The ``<response>`` of a FogBugz answer; ValueError saying why it is not one."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise ValueError(f"not XML: {expat.errors.messages.get(exc.code, 'malformed')}") from None
    root = builder.close()
    if root.tag != "response":
        raise ValueError(f"<{root.tag}> where <response> belongs")
    return root


def read_cases(answer: ET.Element) -> list[Case]:
    """Every ``<case ixBug="N">`` of a ``cmd=search`` answer, its fields as text."""
    cases = []
    for case in answer.iterfind("cases/case"):
        fields = {child.tag: (child.text or "").strip() for child in case}
        cases.append(Case(case.get("ixBug", "").strip(), fields))
    return cases


def readable_time(value: str) -> str:
    """FogBugz's ISO 8601 UTC time (``2007-05-06T22:47:59Z``) as ``2007-05-06 22:47 UTC``."""
    if len(value) >= 16 and value[10:11] == "T" and value.endswith("Z"):
        return f"{value[:10]} {value[11:16]} UTC"
    return value
