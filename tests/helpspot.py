"""Test helpers that imitate HelpSpot as a client (../shared/HELPSPOT.md)."""

from __future__ import annotations

from lookup_server.helpspot_view import LiveLookupView, read_livelookup
from lookup_server.render import schema_errors

DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'


def assert_livelookup(body: bytes) -> LiveLookupView:
    """Assert ``body`` is a valid livelookup document and return what HelpSpot reads."""
    assert body.startswith(DECLARATION), body[:80]
    assert schema_errors(body) == [], schema_errors(body)
    return read_livelookup(body)


def helpspot_error(body: bytes) -> str:
    """Assert HelpSpot would show "An Error Occurred" for ``body``; return its message."""
    from lookup_server.helpspot_view import HelpSpotParseError

    try:
        view = read_livelookup(body)
    except HelpSpotParseError as exc:
        return str(exc)
    raise AssertionError(f"HelpSpot would read {len(view.customers)} customer(s): {body!r}")


def double_encode(value: str) -> str:
    """A value as HelpSpot's request page sends it: URL-encoded once more."""
    from urllib.parse import quote

    return quote(value, safe="")
