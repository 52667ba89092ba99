"""What the server reports about its own work: HelpSpot's calls, cache use, deliveries.

The parts that do the work report to a :class:`Telemetry`; the web app
composes its consumers from the configuration (the console's activity store,
Prometheus metrics, the JSON call log). The base class does nothing, so the
command line, which builds none of them, pays nothing.

- :mod:`.activity` — the last calls and per-minute figures that the console
  shows, shared by every process of one server.
- :mod:`.metrics` — the same, counted for Prometheus (``GET /metrics``).
- :mod:`.json_log` — one JSON line per call (``[server] log_format = "json"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: HelpSpot's calls, as CallRecord.endpoint names them.
ENDPOINTS = ("livelookup", "ajax", "push", "details", "webhook")
#: The endpoints that name a source; the others name a target.
SOURCE_ENDPOINTS = frozenset({"livelookup", "ajax"})
#: CallRecord.name when the URL named no configured source or target.
UNKNOWN_NAME = "(unknown)"

#: HelpSpot's URLs carry every custom field (and after a trigger's Webhook action the
#: whole thread): a log line shows this much of a field, then says how much is left.
MAX_LOGGED_CHARS = 2048


def shortened(text: str) -> str:
    """``text`` cut to MAX_LOGGED_CHARS (after redaction: a key is never cut in half)."""
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    return f"{text[:MAX_LOGGED_CHARS]}...[{len(text) - MAX_LOGGED_CHARS} more characters]"


#: How every error answer to HelpSpot begins (helpspot/answers.py, web/app.py).
ERROR_PREFIX = "lookup-server error: "


def reason_of(text: str) -> str:
    """The reason a plain-text error answer gave, for CallRecord.detail."""
    return text.strip().removeprefix(ERROR_PREFIX).strip()


#: What became of a call, read from its HTTP status (and for a lookup its count).
_OUTCOME_BY_STATUS = {
    202: "accepted",
    400: "bad_request",
    403: "refused",
    404: "unknown",
    413: "too_large",
    414: "too_long",
    415: "bad_request",
    502: "backend_error",
    503: "busy",
    504: "timeout",
}
#: Outcomes that count as errors in the console's figures: the caller got no answer
#: it could use because of us or a backend (a refusal or a bad request is the caller's).
ERROR_OUTCOMES = frozenset({"backend_error", "busy", "timeout", "error"})


def outcome_for(status: int, count: int | None = None) -> str:
    """The outcome of a call answered with ``status`` (``count``: customers or options)."""
    if status == 200:
        if count is None:
            return "ok"
        return "found" if count else "none"
    return _OUTCOME_BY_STATUS.get(status, "error" if status >= 500 else "bad_request")


@dataclass(frozen=True)
class CallRecord:
    """One call HelpSpot (or someone) made to a HelpSpot endpoint."""

    #: Seconds since the epoch, when the call arrived.
    at: float
    #: One of ENDPOINTS.
    endpoint: str
    #: The source or target the URL names (maybe not a configured one).
    name: str
    #: outcome_for(status, count).
    outcome: str
    status: int
    duration_ms: float
    #: Customers or options answered, for a lookup that answered.
    count: int | None = None
    #: The reason given to the caller when the call failed; never a key.
    detail: str = ""
    #: The request's path and query, every key hidden, shortened.
    path: str = ""
    remote_addr: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The record as plain values (JSON log lines, the console)."""
        return asdict(self)


class Telemetry:
    """Receives reports of work done; this one discards them (the default)."""

    def call(self, record: CallRecord) -> None:
        """A HelpSpot call was answered."""

    def cache(self, source: str, hit: bool) -> None:
        """A source's result cache was asked (only when the source caches)."""

    def delivery(self, target: str, delivered: bool, seconds: float) -> None:
        """One attempt to deliver a webhook to ``target`` ended."""


class Fanout(Telemetry):
    """Hands every report to each of several consumers, in order."""

    def __init__(self, *consumers: Telemetry) -> None:
        self.consumers = consumers

    def call(self, record: CallRecord) -> None:
        """Report the call to every consumer."""
        for consumer in self.consumers:
            consumer.call(record)

    def cache(self, source: str, hit: bool) -> None:
        """Report the cache use to every consumer."""
        for consumer in self.consumers:
            consumer.cache(source, hit)

    def delivery(self, target: str, delivered: bool, seconds: float) -> None:
        """Report the delivery attempt to every consumer."""
        for consumer in self.consumers:
            consumer.delivery(target, delivered, seconds)
