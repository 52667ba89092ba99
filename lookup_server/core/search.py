"""The one place that decides search order and what counts as a match, for every backend.

A source lists strategies (default: customer_id, email, phone, name). Each one
whose input is present is tried in order until one finds something, so a stale
customer id falls back to the e-mail address. No input at all finds nobody:
never the whole table.

A match is an exact customer id, a case-insensitive exact e-mail address, the
same phone digits (or one number ending with the other), and case-insensitive
prefixes of the last and first name; a backend whose system searches more
loosely re-checks what came back with :func:`matches_literally`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from lookup_server.core.fragments import FragmentSpec, Prerendered
from lookup_server.core.models import (
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Customer,
    LookupQuery,
    SearchTerm,
)
from lookup_server.core.sources import SourceBackend, SourceSettings

#: Shorter name prefixes would match a large part of any directory.
MIN_NAME_PREFIX = 2
#: Numbers of at least this many digits also match by their trailing digits,
#: so "555-010-2000" finds "+1 (555) 010-2000".
PHONE_SUFFIX_DIGITS = 7
#: Inputs longer than this are not a name, e-mail or id anyone types.
MAX_INPUT = 256

_NON_DIGITS = re.compile(r"[^0-9]+")
_ASCII_NON_DIGITS = str.maketrans(
    "", "", "".join(chr(c) for c in range(128) if not "0" <= chr(c) <= "9")
)


def phone_digits(text: str) -> str:
    """Only the ASCII digits of a phone number."""
    # str.translate drops ASCII non-digits twice as fast as the regular expression
    # (the CSV index calls this for every row); what it leaves is not always ASCII.
    digits = text.translate(_ASCII_NON_DIGITS)
    return digits if digits.isascii() else _NON_DIGITS.sub("", digits)


def phone_matches(stored: str, digits: str) -> bool:
    """True when a stored number is the searched one, ignoring formatting.

    Equal digits match; so does one number ending with the other when the
    shorter has at least PHONE_SUFFIX_DIGITS digits (country/area prefixes).
    """
    have = phone_digits(stored)
    if not have or not digits:
        return False
    if have == digits:
        return True
    short, long_ = sorted((have, digits), key=len)
    return len(short) >= PHONE_SUFFIX_DIGITS and long_.endswith(short)


def search_terms(query: LookupQuery, strategies: Sequence[str]) -> Iterator[SearchTerm]:
    """The terms to try, in order, for the strategies whose input is present."""
    for strategy in strategies:
        term = _term(strategy, query)
        if term is not None:
            yield term


def _term(strategy: str, q: LookupQuery) -> SearchTerm | None:
    if strategy == "customer_id" and _usable(q.customer_id):
        return ById(q.customer_id.strip())
    if strategy == "email" and _usable(q.email) and "@" in q.email:
        return ByEmail(q.email.strip())
    if strategy == "phone":
        digits = phone_digits(q.phone)
        if digits and len(digits) <= 32:
            return ByPhone(digits)
    if strategy == "name":
        last, first = q.last_name.strip(), q.first_name.strip()
        if len(last) >= MIN_NAME_PREFIX and len(last) <= MAX_INPUT and len(first) <= MAX_INPUT:
            return ByName(last, first)
    return None


def _usable(value: str) -> bool:
    return bool(value.strip()) and len(value) <= MAX_INPUT


@dataclass(frozen=True)
class TermTried:
    """One strategy's search of a lookup, for whoever asked to see them (the console)."""

    term: SearchTerm
    found: int
    seconds: float


def find_customers(
    backend: SourceBackend[object],
    query: LookupQuery,
    strategies: Sequence[str],
    limit: int,
    trace: list[TermTried] | None = None,
) -> list[Customer]:
    """Try each applicable strategy in order; stop at the first that finds someone.

    With ``trace``, every search made is appended to it.
    """
    for term in search_terms(query, strategies):
        started = time.perf_counter()
        found = [c for c in backend.find(term, limit) if c.customer_id][:limit]
        if trace is not None:
            trace.append(TermTried(term, len(found), time.perf_counter() - started))
        if found:
            return found
    return []


def find_prerendered(
    backend: SourceBackend[object],
    query: LookupQuery,
    strategies: Sequence[str],
    limit: int,
    spec: FragmentSpec,
) -> Prerendered | None:
    """:func:`find_customers` answered from stored fragments; None when any search has none.

    The same strategies in the same order, the first that finds someone wins;
    customers without an id are left out by the backend, as ``find_customers``
    leaves them out.
    """
    nobody = None
    for term in search_terms(query, strategies):
        found = backend.find_rendered(term, limit, spec)
        if found is None:
            return None
        if found.fragments:
            if len(found.fragments) <= limit:
                return found
            return Prerendered(found.frame, found.fragments[:limit])
        nobody = found
    return nobody


def matches_literally(term: SearchTerm, fields: Mapping[str, str]) -> bool:
    """True when a record found by a vendor's (looser) search really matches ``term``.

    Vendor searches tokenize, fold accents or match substrings; HelpSpot's
    contract is exact ids, case-insensitive exact e-mail, phone digits and
    case-insensitive name prefixes, so every backend re-checks what came back.
    """
    if isinstance(term, ById):
        return fields.get("customer_id", "") == term.customer_id
    if isinstance(term, ByEmail):
        return fields.get("email", "").casefold() == term.folded
    if isinstance(term, ByPhone):
        return phone_matches(fields.get("phone", ""), term.digits)
    last = fields.get("last_name", "").casefold()
    first = fields.get("first_name", "").casefold()
    return last.startswith(term.last_folded) and first.startswith(term.first_folded)


def with_field_map(raw: Mapping[str, str], source: SourceSettings) -> dict[str, str]:
    """The backend's record plus the elements the source maps onto its fields."""
    fields = dict(raw)
    for element, backend_field in source.fields.items():
        fields[element] = raw.get(backend_field, "")
    return fields
