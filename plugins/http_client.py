"""HTTP calls to hosted APIs that end within a source's timeout, retries included.

Shared by the Shopify, Highrise and Microsoft Graph backends: each lookup gets
one :class:`Deadline`; every request, and every wait a vendor asks for with
``Retry-After``, must fit in what is left of it. Error messages name the vendor
and what to do, never a URL's query, a header or a token.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from typing import Any

import requests

from lookup_server.backend import BackendError, BackendTimeout, SourceSettings
from lookup_server.models import ByEmail, ById, ByPhone, SearchTerm
from lookup_server.search import phone_matches

log = logging.getLogger(__name__)

#: Retry-After absent or unreadable: wait this long before the next try.
DEFAULT_RETRY_WAIT = 1.0
#: Statuses that mean "later": rate limits and brief outages.
RETRY_STATUSES = frozenset({429, 503})


class Deadline:
    """The moment one lookup must be finished by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self._end - self._clock())

    def allows(self, wait: float) -> bool:
        """True when waiting ``wait`` seconds still leaves time for a request."""
        return wait < self.remaining()

    def wait(self, seconds: float) -> None:
        """Pause for a vendor-requested delay (the caller checked :meth:`allows`)."""
        if seconds > 0:
            threading.Event().wait(seconds)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return DEFAULT_RETRY_WAIT
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_WAIT
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def throttled_error(vendor: str, wait: float, deadline: Deadline) -> BackendError:
    """The error for a rate limit that outlasts the source's timeout."""
    return BackendError(
        f"{vendor} is rate-limiting requests and asks to wait {wait:.0f} s, longer than "
        f"the source's timeout of {deadline.budget:g} s; try again shortly or raise timeout"
    )


def outage_error(vendor: str, status: int) -> BackendError:
    """The error for a 5xx answer."""
    return BackendError(f"{vendor} is having problems (HTTP {status}); try again later")


def send(session: requests.Session, method: str, url: str, deadline: Deadline, *,
         vendor: str, retry_statuses: Collection[int] = RETRY_STATUSES,
         **kwargs: Any) -> requests.Response:
    """Send one request, repeating it on a rate limit while the deadline allows.

    Returns the first answer that is not a retryable status; raises
    BackendTimeout or BackendError (without the URL) on network failure.
    """
    while True:
        response = request_once(session, method, url, deadline, vendor=vendor, **kwargs)
        if response.status_code not in retry_statuses:
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        if not deadline.allows(wait):
            if response.status_code == 429 or "Retry-After" in response.headers:
                raise throttled_error(vendor, wait, deadline)
            raise outage_error(vendor, response.status_code)
        log.info("%s answered HTTP %s; retrying in %.1f s", vendor, response.status_code, wait)
        deadline.wait(wait)


def request_once(session: requests.Session, method: str, url: str, deadline: Deadline, *,
                 vendor: str, **kwargs: Any) -> requests.Response:
    """One request whose connect and read timeouts end by the deadline."""
    left = deadline.remaining()
    if left <= 0:
        raise BackendTimeout(f"{vendor} did not answer within {deadline.budget:g} s")
    try:
        return session.request(method, url, timeout=(left, left), allow_redirects=False,
                               **kwargs)
    except requests.Timeout:
        raise BackendTimeout(f"{vendor} did not answer within {deadline.budget:g} s") from None
    except requests.ConnectionError as exc:
        raise BackendError(
            f"cannot connect to {vendor} ({_reason(exc)}); check the address and the network"
        ) from None
    except requests.RequestException as exc:
        raise BackendError(f"request to {vendor} failed ({type(exc).__name__})") from None


def _reason(exc: requests.ConnectionError) -> str:
    # The exception text repeats the URL and nested urllib3 reprs; its class is enough.
    text = str(exc)
    for hint in ("Name or service not known", "nodename nor servname", "Connection refused",
                 "CERTIFICATE_VERIFY_FAILED", "timed out"):
        if hint in text:
            return hint
    return type(exc).__name__


def json_body(response: requests.Response, vendor: str) -> Any:
    """The decoded JSON body, or a BackendError saying the answer was unreadable."""
    try:
        return response.json()
    except ValueError:
        raise BackendError(
            f"{vendor} sent an unreadable answer (HTTP {response.status_code}, not JSON)"
        ) from None


def text_of(value: object) -> str:
    """A JSON scalar as display text ("" for null)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def dig(data: object, *path: str) -> object:
    """``data[p0][p1]...`` through nested objects, None where a step is missing."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


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
