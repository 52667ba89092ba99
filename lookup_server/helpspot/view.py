"""Read a livelookup document exactly the way HelpSpot does (HELPSPOT.md §3).

HelpSpot uses PHP's event-based expat parser, UTF-8, case folding off, and
never passes the final-chunk flag: an empty body is "no customers", a truncated
document keeps its complete customers, and any top-level element after a
``</customer>`` other than another ``<customer>`` crashes HelpSpot. This module
reproduces that, so ``lookup-server validate`` and the tests see what staff see.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field


class HelpSpotParseError(Exception):
    """HelpSpot would show "An Error Occurred" with this parser message."""


class HelpSpotCrash(HelpSpotParseError):
    """HelpSpot's own parser code would fail (HTTP 500 inside HelpSpot)."""


@dataclass
class LiveLookupView:
    """What HelpSpot made of a livelookup body."""

    customers: list[dict[str, str]] = field(default_factory=list)
    labels: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] | None = None

    def summary(self) -> str:
        """What staff see: "No customers found", one customer's fields, or a table."""
        if not self.customers:
            return "No customers found"
        if len(self.customers) == 1:
            c, labels = self.customers[0], self.labels[0]
            return "\n".join(f"{labels.get(k) or display_label(k)}: {v}" for k, v in c.items())
        cols = ["customer_id", *(self.columns or ["first_name", "last_name", "email"])]
        rows = [" | ".join(cols)] + [" | ".join(c.get(k, "") for k in cols) for c in self.customers]
        return "\n".join(rows)


def display_label(element: str) -> str:
    """HelpSpot's default label: first letter capitalised, '_' shown as a space."""
    return (element[:1].upper() + element[1:]).replace("_", " ")


def read_livelookup(body: bytes) -> LiveLookupView:
    """Parse ``body`` as HelpSpot does; raise HelpSpotParseError where HelpSpot shows an error."""
    view = LiveLookupView()
    parser = xml.parsers.expat.ParserCreate("UTF-8")
    state = _State(view)
    parser.StartElementHandler = state.start
    parser.EndElementHandler = state.end
    parser.CharacterDataHandler = state.text
    try:
        parser.Parse(body, False)  # HelpSpot never sends the final-chunk flag
    except xml.parsers.expat.ExpatError as exc:
        message = xml.parsers.expat.ErrorString(exc.code)
        raise HelpSpotParseError(
            f"XML error: {message} at line {exc.lineno}, column {exc.offset}"
        ) from None
    return view


class _State:
    def __init__(self, view: LiveLookupView) -> None:
        self.view = view
        self.depth = 0
        self.current: dict[str, str] | None = None
        self.labels: dict[str, str] = {}
        self.element: str | None = None
        self.seen_customer = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 1:
            if "columns" in attrs:
                self.view.columns = [c.strip() for c in attrs["columns"].split(",")]
        elif self.depth == 2:
            if name != "customer" and self.seen_customer:
                raise HelpSpotCrash(f"<{name}> after </customer> crashes HelpSpot's parser")
            if name == "customer":
                self.current, self.labels = {}, {}
        elif self.current is not None:
            self.element = name
            self.current[name] = ""  # a repeated tag keeps its last value
            if "label" in attrs:
                self.labels[name] = attrs["label"]

    def end(self, name: str) -> None:
        if self.depth == 2 and name == "customer" and self.current is not None:
            self.view.customers.append(self.current)
            self.view.labels.append(self.labels)
            self.current, self.seen_customer = None, True
        self.element = None
        self.depth -= 1

    def text(self, data: str) -> None:
        if self.current is not None and self.element is not None:
            self.current[self.element] += data


def read_ajaxfield(body: bytes) -> list[tuple[str, str]]:
    """The (value, description) pairs HelpSpot's drop-down shows (HELPSPOT.md §4).

    HelpSpot parses the body as ISO-8859-1 whatever it declares, so UTF-8
    text arrives mangled, and it drops every piece of text that is exactly "0",
    so a value of exactly "0" becomes "".
    """
    options: list[tuple[str, str]] = []
    current: dict[str, str] = {}
    element: list[str] = []
    parser = xml.parsers.expat.ParserCreate("ISO-8859-1")

    def start(name: str, attrs: dict[str, str]) -> None:
        element.append(name)
        if name == "option":
            current.clear()

    def end(name: str) -> None:
        element.pop()
        if name == "option":
            value = current.get("value", "")
            options.append(("" if value == "0" else value, current.get("description", "")))

    def text(data: str) -> None:
        # HelpSpot keeps a piece of text only when PHP's empty() says it is not:
        # a piece that is exactly "0" (expat splits text at every entity) is lost
        if element and element[-1] in ("value", "description") and data not in ("", "0"):
            current[element[-1]] = current.get(element[-1], "") + data

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, False)
    except xml.parsers.expat.ExpatError:
        return []  # staff see "No results returned", exactly as for an empty list
    return options
