"""Who may call us: the shared key and the allowed networks; who may read ``/metrics``.

HelpSpot verifies no TLS certificate and sends no credentials of its own
(HELPSPOT.md §1), so a shared key in the URL (``ll_key``, or the path form for
AJAX fields whose URL cannot carry a query string) is the real authentication.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Iterator
from urllib.parse import unquote

from lookup_server.config.settings import IPNetwork, ServerSettings
from lookup_server.runtime.service import Refused

# Matched in the decoded text, so that every spelling is caught: ``ll%5Fkey=``,
# ``%6Cl_key``, look-alikes that are refused anyway (``ll_key[]=``, ``ll-key=``),
# ``//livelookup/...``, ``/ajax//crm/KEY``, ``%2F`` for a slash, absolute-form
# targets (``http://host/webhook/...``), a path quoted in an error message.
_KEY_IN_QUERY = re.compile(r"(?i)(ll[^=&\s]{0,12}?key[^=&]*=)\s*[^&\s]*")
_KEY_IN_PATH = re.compile(
    r"(?i)([/\\](?:livelookup|ajax|webhook)[/\\;]+[^/\\;?#\s]+[/\\;]+)\s*[^/\\;?#&\s'\"]+"
)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def authorize(
    server: ServerSettings, kind: str, remote_addr: str | None, presented: str | None
) -> None:
    """Raise Refused unless the caller's address and key are acceptable for a ``kind`` call."""
    if server.allowed_ips and not in_networks(caller_address(remote_addr), server.allowed_ips):
        raise Refused("caller address not allowed")
    key = server.key_for(kind)
    if key is not None:
        expected = key.reveal().encode()
        given = (presented or "").encode()
        # compare_digest takes the same time wherever the first difference is
        if not (given and hmac.compare_digest(given, expected)):
            raise Refused("missing or wrong shared key (ll_key)")


def caller_address(remote_addr: str | None) -> IPAddress | None:
    """The caller's address as networks are matched against it; None when it is no address."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        # how a server bound to [::] sees an IPv4 caller: ::ffff:10.1.2.3
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress | None, networks: Iterable[IPNetwork]) -> bool:
    """True when ``address`` (from caller_address) is in one of ``networks``."""
    return address is not None and any(address in network for network in networks)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def redact(target: str) -> str:
    """A request target or line safe to log: every shared key hidden, in any spelling.

    Keys are looked for in the text as sent and again percent-decoded (as often
    as it takes); only when the decoded text held one more is it logged
    instead, with control characters re-encoded so that no line can be forged.
    """
    hidden = _hide(target)
    plain = hidden
    for plain in percent_decodings(hidden):  # noqa: B007 (keep the last: fully decoded)
        pass
    hidden_plain = _hide(plain)
    return hidden if hidden_plain == plain else printable(hidden_plain)


def _hide(text: str) -> str:
    return _KEY_IN_PATH.sub(r"\1***", _KEY_IN_QUERY.sub(r"\1***", text))


def percent_decodings(text: str) -> Iterator[str]:
    """``text`` percent-decoded once, twice... until nothing changes (at most 4 times).

    "%25" decodes to "%": a key may be encoded more than once.
    """
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            return
        text = decoded
        yield text


def printable(text: str) -> str:
    """Decoded text safe to log: control characters re-encoded, so no line can be forged."""
    return _UNPRINTABLE.sub(lambda m: f"%{ord(m.group()):02X}", text)
