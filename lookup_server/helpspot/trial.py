"""A lookup tried from the console exactly as HelpSpot would make it (HELPSPOT.md §1, §2, §4).

The console's form gives what staff would have on the ticket; this module
builds what each HelpSpot page sends from it (the request page's double
encoding, the address book's names only, an automation rule's request row,
the command line's arguments), runs it through the same decoding and
answering code as a real call, and reads the answer back as HelpSpot does.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from lookup_server.core.search import TermTried
from lookup_server.helpspot.answers import Answer, livelookup_answer, options_answer
from lookup_server.helpspot.decode import cli_params, decode_params
from lookup_server.helpspot.view import (
    HelpSpotParseError,
    LiveLookupView,
    read_ajaxfield,
    read_livelookup,
)
from lookup_server.runtime.service import Sources

#: The ways HelpSpot calls a Live Lookup source, as the console names them.
MODES = {
    "request_page": "Request page (Live Lookup tab)",
    "address_book": "Address book",
    "automation": "Automation rule or trigger",
    "command_line": "Command line (cmdline source)",
}
#: Who the trial says is looking (HelpSpot sends the logged-in staff member).
ACTING_PERSON = (
    ("acting_person_xperson", "1"),
    ("acting_person_fusertype", "1"),
    ("acting_person_fname", "Console"),
    ("acting_person_lname", "Trial"),
    ("acting_person_email", ""),
)
#: A made-up request id for the calls that carry one.
REQUEST_ID = "12345"
_STANDARD = ("customer_id", "first_name", "last_name", "email", "phone")
_REQUEST_NAMES = ("sUserId", "sFirstName", "sLastName", "sEmail", "sPhone")


@dataclass(frozen=True)
class Ticket:
    """What staff have on the ticket: the customer's fields and custom fields."""

    customer_id: str = ""
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phone: str = ""
    category: str = ""
    #: CustomN -> value.
    custom: Mapping[str, str] = field(default_factory=dict)

    def standard(self) -> tuple[str, ...]:
        """The five customer fields, in HelpSpot's order."""
        return (self.customer_id, self.first_name, self.last_name, self.email, self.phone)


@dataclass
class Trial:
    """One tried call: what was sent, the answer, what HelpSpot read, how long each step took."""

    mode: str
    #: What HelpSpot sends: the query string, or the command line.
    sent: str
    answer: Answer
    #: (step, milliseconds), in order.
    steps: list[tuple[str, float]]
    tried: list[TermTried] = field(default_factory=list)
    view: LiveLookupView | None = None
    #: HelpSpot's parser message when it could not read the answer.
    parse_error: str | None = None
    #: An AJAX field's drop-down: (value, description) as HelpSpot shows them.
    options: list[tuple[str, str]] = field(default_factory=list)


def sent_by(mode: str, ticket: Ticket) -> list[tuple[str, str]]:
    """The parameters HelpSpot sends in ``mode``, as the server reads them off the URL.

    Values the request page's browser code encodes twice still carry one
    encoding here, exactly as a real call's do after the server's own decode.
    """
    if mode == "address_book":
        return [
            ("source_id", "0"),
            ("first_name", ticket.first_name),
            ("last_name", ticket.last_name),
            *ACTING_PERSON,
        ]
    custom = _by_field_id(ticket.custom)
    if mode == "automation":  # the request row, built once by PHP: nothing double-encoded
        return [
            ("xRequest", REQUEST_ID),
            ("sTitle", "Tried from the lookup-server console"),
            *zip(_REQUEST_NAMES, ticket.standard(), strict=True),
            ("xCategory", ticket.category),
            *custom,
            *zip(_STANDARD, ticket.standard(), strict=True),
            *ACTING_PERSON,
        ]
    return [
        ("source_id", "0"),
        *zip(_STANDARD, ticket.standard(), strict=True),
        ("request", REQUEST_ID),
        *(
            (name, _twice(value))
            for name, value in zip(_REQUEST_NAMES, ticket.standard(), strict=True)
        ),
        ("xStatus", "1"),
        ("xCategory", _twice(ticket.category)),
        ("xPersonAssignedTo", "0"),
        *((name, _twice(value)) for name, value in custom),
        *ACTING_PERSON,
    ]


def command_line(ticket: Ticket) -> list[str]:
    """The arguments HelpSpot 5.3+ appends to a cmdline source (a bare ``--name`` when empty)."""
    values = [*zip(_STANDARD, ticket.standard(), strict=True), *_by_field_id(ticket.custom)]
    return [f"--{name}={value}" if value else f"--{name}" for name, value in values]


def _by_field_id(custom: Mapping[str, str]) -> list[tuple[str, str]]:
    """Custom fields in ascending field id, as HelpSpot sends them (Custom2 before Custom10)."""
    return sorted(custom.items(), key=lambda item: int(item[0].removeprefix("Custom") or 0))


def _twice(value: str) -> str:
    """A value as HelpSpot's browser code sends it: URL-encoded once more than the rest."""
    return quote(value, safe="")


def try_lookup(sources: Sources, source: str, mode: str, ticket: Ticket, command: str) -> Trial:
    """Make the Live Lookup call HelpSpot would make in ``mode``, and read its answer back.

    ``command`` is the cmdline source's configured path, shown before the arguments.
    """
    started = time.perf_counter()
    if mode == "command_line":
        args = command_line(ticket)
        sent = " ".join([command, *map(shlex.quote, args)])
        params = cli_params(args)
    else:
        pairs = sent_by(mode, ticket)
        sent = urlencode(pairs, quote_via=quote)
        params = decode_params(pairs)
    decoded = time.perf_counter()
    tried: list[TermTried] = []
    answer = livelookup_answer(sources, source, params, mode == "command_line", trace=tried)
    answered = time.perf_counter()
    searched = sum(t.seconds for t in tried)
    trial = Trial(mode, sent, answer, [], tried)
    try:
        trial.view = read_livelookup(answer.body)
    except HelpSpotParseError as exc:
        trial.parse_error = str(exc)
    read = time.perf_counter()
    trial.steps = [
        ("decode what HelpSpot sent", (decoded - started) * 1000),
        ("search the source", searched * 1000),
        ("render the answer", (answered - decoded - searched) * 1000),
        ("HelpSpot reads it", (read - answered) * 1000),
    ]
    return trial


def try_ajax(sources: Sources, source: str, field_id: str, typed: str, ticket: Ticket) -> Trial:
    """Press an AJAX field's button: the call HelpSpot makes, and its drop-down."""
    started = time.perf_counter()
    pairs = [
        *(
            (name, _twice(value))
            for name, value in zip(_REQUEST_NAMES, ticket.standard(), strict=True)
        ),
        ("xStatus", "1"),
        ("xCategory", _twice(ticket.category)),
        ("xPersonAssignedTo", "0"),
        *(
            (name, _twice(value))
            for name, value in _by_field_id({**ticket.custom, field_id: typed})
        ),
        ("callingField", field_id),
        *ACTING_PERSON,
    ]
    params = decode_params(pairs)
    decoded = time.perf_counter()
    answer = options_answer(sources, source, params)
    answered = time.perf_counter()
    options = read_ajaxfield(answer.body)
    read = time.perf_counter()
    return Trial(
        "ajax",
        urlencode(pairs, quote_via=quote),
        answer,
        [
            ("decode what HelpSpot sent", (decoded - started) * 1000),
            ("search and render", (answered - decoded) * 1000),
            ("HelpSpot reads it", (read - answered) * 1000),
        ],
        options=options,
    )
