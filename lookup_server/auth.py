"""Who may call us: the shared key and the allowed networks.

HelpSpot verifies no TLS certificate and sends no credentials of its own
(HELPSPOT.md §1), so a shared key in the URL (``ll_key``, or the path form for
AJAX fields whose URL cannot carry a query string) is the real authentication.
"""

from __future__ import annotations

import hmac
import ipaddress
import re

from lookup_server.config import ServerSettings
from lookup_server.service import Refused

# The query parser decodes names, so ``ll%5Fkey=`` is a key too: every spelling of
# each letter is hidden.
_KEY_IN_QUERY = re.compile(r"(?i)((?:l|%6c)(?:l|%6c)(?:_|%5f)(?:k|%6b)(?:e|%65)(?:y|%79)=)[^&\s]*")
# A path starts a line, follows a method, or is quoted in an error message.
_KEY_IN_PATH = re.compile(r"((?:^|[\s'\"])/(?:livelookup|ajax|webhook)/[^/?\s]+/)[^/?\s'\"]+")


def authorize(server: ServerSettings, remote_addr: str | None, presented: str | None) -> None:
    """Raise Refused unless the caller's address and key are acceptable."""
    if server.allowed_ips:
        try:
            address = ipaddress.ip_address(remote_addr or "")
        except ValueError:
            raise Refused("caller address not allowed") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            # how a server bound to [::] sees an IPv4 caller: ::ffff:10.1.2.3
            address = address.ipv4_mapped
        if not any(address in network for network in server.allowed_ips):
            raise Refused("caller address not allowed")
    if server.shared_key is not None:
        expected = server.shared_key.reveal().encode()
        given = (presented or "").encode()
        # compare_digest takes the same time wherever the first difference is
        if not (given and hmac.compare_digest(given, expected)):
            raise Refused("missing or wrong shared key (ll_key)")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def redact(target: str) -> str:
    """A request target or line safe to log: every shared key hidden."""
    return _KEY_IN_PATH.sub(r"\1***", _KEY_IN_QUERY.sub(r"\1***", target))
