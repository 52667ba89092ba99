"""What HelpSpot reads back: one function per kind of call, shared by HTTP and CLI.

A failure must make HelpSpot show an error, never "No customers found"
(HELPSPOT.md §3): the body is a short plain-text reason, which HelpSpot's XML
parser rejects and shows to staff, with an HTTP status saying what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from lookup_server.core.fragments import FragmentSpec
from lookup_server.core.models import Audience, LookupQuery
from lookup_server.core.search import TermTried
from lookup_server.helpspot.decode import audience, lookup_query, options_query
from lookup_server.helpspot.prerendered import spec_for
from lookup_server.runtime.service import (
    BackendFailed,
    Busy,
    ServiceError,
    Source,
    Sources,
    TimedOut,
)

log = logging.getLogger(__name__)
XML = "text/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """An HTTP status, a body and its content type."""

    status: int
    body: bytes
    content_type: str
    #: Customers or options in the answer (None for an error).
    count: int | None = None


def error_answer(error: ServiceError) -> Answer:
    """The body HelpSpot's parser rejects, so staff see the reason and nothing else."""
    return Answer(error.status, f"lookup-server error: {error.reason}\n".encode(), TEXT)


def request_line_answer(query: str, path_length: int, limit: int) -> Answer | None:
    """An error naming the field to shorten when the URL is longer than ``limit``.

    HelpSpot puts every custom field in the URL, encoded twice (HELPSPOT.md §1):
    staff must learn which field made a lookup fail, not just that it did.
    """
    length = path_length + 1 + len(query)
    if length <= limit:
        return None
    pairs = [pair for pair in query.split("&") if pair]
    longest = max(pairs, key=len, default="")
    name = unquote(longest.partition("=")[0]) or "(unnamed)"
    reason = (
        f"the request's URL is {length // 1024} KB, more than [server] max_request_line "
        f"({limit // 1024} KB); its longest field is {name} ({len(longest) // 1024} KB): "
        f"shorten that field, or raise max_request_line in lookup-server's configuration"
    )
    return Answer(414, f"lookup-server error: {reason}\n".encode(), TEXT)


def livelookup_answer(
    sources: Sources,
    source_name: str,
    params: Mapping[str, str],
    command_line: bool = False,
    trace: list[TermTried] | None = None,
) -> Answer:
    """Answer one Live Lookup call whose parameters are already decoded.

    On the command line the caller cannot be told apart (HELPSPOT.md §2): the
    answer is made for the request page, which shows every value as HTML.
    ``trace`` collects the searches made (see Source.lookup).
    """
    started = time.perf_counter()
    try:
        source = sources[source_name]
        reader = Audience.REQUEST_PAGE if command_line else audience(params)
        body, count = _lookup(source, lookup_query(params), reader, trace)
    except ServiceError as exc:
        log.warning("livelookup %s: %s", source_name, exc.reason)
        return error_answer(exc)
    # every call is in the access log already; the count and time are for debugging
    log.debug(
        "livelookup %s: %d customer(s) in %.1f ms",
        source_name,
        count,
        (time.perf_counter() - started) * 1000,
    )
    return Answer(200, body, XML, count)


def _lookup(
    source: Source, query: LookupQuery, reader: Audience, trace: list[TermTried] | None
) -> tuple[bytes, int]:
    """The document and how many customers it answers, from fragments where they are stored."""
    try:
        if trace is None and source.prerenders:  # the spec costs a hash of the renderer
            found = source.lookup_prerendered(query, _spec(source, reader))
            if found is not None:
                if b"" in found.fragments:  # what the renderer logs of each, said once
                    log.warning(
                        "livelookup %s: %d customer(s) left out of the address book: their "
                        "e-mail address would break HelpSpot's javascript: links",
                        source.settings.name,
                        found.fragments.count(b""),
                    )
                return found.frame.document(found.fragments), len(found.fragments)
        customers = source.lookup(query, trace)
    except (BackendFailed, TimedOut, Busy) as exc:
        if source.settings.on_error != "empty":
            raise
        log.warning(
            "livelookup %s: %s (answering no customers: on_error = empty)",
            source.settings.name,
            exc.reason,
        )
        customers = []
    from lookup_server.helpspot.render import render_livelookup  # only here: lxml loads slowly

    return render_livelookup(customers, source.settings, reader), len(customers)


@lru_cache(maxsize=256)  # by the Source itself: held here, its id is never reused
def _spec(source: Source, reader: Audience) -> FragmentSpec:
    """The FragmentSpec of a source's settings for one audience, made once."""
    return spec_for(source.settings, reader)


def options_answer(sources: Sources, source_name: str, params: Mapping[str, str]) -> Answer:
    """Answer one AJAX selection field call whose parameters are already decoded.

    HelpSpot shows an error and an empty list alike ("No results returned"),
    so the status and the log are what tell an admin the difference.
    """
    try:
        source = sources[source_name]
        options = source.options(options_query(params))
    except ServiceError as exc:
        log.warning("ajax %s: %s", source_name, exc.reason)
        return error_answer(exc)
    log.debug("ajax %s: %d option(s)", source_name, len(options))
    from lookup_server.helpspot.render import render_ajaxfield  # lxml: see _lookup

    return Answer(200, render_ajaxfield(options, source.settings.ascii), XML, len(options))
