"""What a mirror of an ldap source reads from the directory (see lookup_plugins.mirror).

Every entry the person filter matches under base_dn, with the attributes the
source's fields use, read page by page. Changes: Active Directory's
``uSNChanged`` (one counter per domain controller), OpenLDAP's
``modifyTimestamp``; both only grow, so ``>=`` the newest one seen finds
every entry changed since (and the few seen last time, again). Deletions:
the DNs of every entry there is, without attributes (``1.1``).

``attr>other`` fields (a manager's name) are resolved within the copy: the
entry a DN names is almost always a mirrored person; one outside the filter
falls back to the field's next alternative (``manager:cn``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from lookup_server.plugin import BackendError

from ..mirror.feed import Data, Marker, MarkerNotValid, Record
from .backend import _OK_CODES, _PAGED, Entry, _texts, _unbind

if TYPE_CHECKING:
    from .backend import LdapBackend

#: Entries per page of a mirror's searches (AD's MaxPageSize is 1000).
MIRROR_PAGE_SIZE = 1000
_SIZE_LIMIT_EXCEEDED = 4
MARKERS = {"active_directory": "uSNChanged", "openldap": "modifyTimestamp"}


class LdapMirrorFeed:
    """Reads the entries an ldap source can find, for its mirror."""

    drops_empty = True

    def __init__(self, backend: LdapBackend) -> None:
        self.backend = backend
        self.marker = MARKERS[backend.options.preset]
        #: AD counts changes per domain controller: a marker holds the DC that counted it
        self.per_server = self.marker == "uSNChanged"
        self.elements = tuple(backend.elements)
        specs = [s for alternatives in backend.elements.values() for s in alternatives]
        self._follows = sorted({(s.attribute.lower(), s.follow) for s in specs if s.follow})
        self.attributes = sorted({*backend.attributes, *(f for _, f in self._follows), self.marker})

    def signature(self) -> str:
        """Base, filter and attribute specs: a change of any needs a new full copy."""
        b = self.backend
        specs = {e: [repr(s) for s in specs] for e, specs in b.elements.items()}
        return json.dumps([1, b.options.base_dn, b.person_filter, specs, self.marker])

    def read_all(self) -> Iterator[Record]:
        """Every entry of the person filter."""
        return self._records(self.backend.person_filter)

    def read_changed(self, since: Marker) -> Iterator[Record]:
        """Entries whose marker is ``since`` or later (on the same domain controller, for AD)."""
        server, _, value = str(since).rpartition(" ")
        if self.per_server and not server:
            raise MarkerNotValid("a marker without its domain controller")
        clause = f"({self.marker}>={escape_filter_chars(value)})"
        return self._records(f"(&{self.backend.person_filter}{clause})", server or None)

    def read_keys(self) -> set[str]:
        """The DN of every entry of the person filter."""
        _server, found = self._search(self.backend.person_filter, ["1.1"])
        return {_key(item["dn"]) for item in found}

    def newest(self, markers: Iterable[Marker]) -> Marker:
        """The highest uSN (with its DC), or the latest timestamp (it sorts as text)."""
        present = [str(m) for m in markers if m not in (None, "")]
        if not self.per_server:
            return max(present) if present else None
        counted = [(int(m.rpartition(" ")[2]), m) for m in present if _usn(m)]
        return max(counted)[1] if counted else None

    def customers(self, stored: Mapping[str, Data]) -> Iterator[Mapping[str, str]]:
        """Each entry's fields as the live source renders them."""
        entries = {key: _entry(data) for key, data in stored.items()}
        for entry in entries.values():
            followed: dict[tuple[str, str], str] = {}
            for attribute, follow in self._follows:
                for dn in _texts(entry, attribute):
                    target = entries.get(_key(dn))
                    if target is not None:
                        followed[(dn, follow)] = ", ".join(_texts(target, follow))
            yield self.backend._fields(entry, followed)

    def _records(self, wanted: str, on: str | None = None) -> Iterator[Record]:
        server, found = self._search(wanted, self.attributes, on)
        marker = self.marker.lower()
        for item in found:
            raw = {k.lower(): list(v) for k, v in item["raw_attributes"].items()}
            values = _texts(raw, marker)
            data = {k: [v.decode("utf-8", "surrogateescape") for v in vs] for k, vs in raw.items()}
            value = values[0] if values else None
            if value is not None and self.per_server:
                value = f"{server} {value}"
            yield Record(_key(item["dn"]), value, data)

    def _search(
        self, wanted: str, attributes: list[str], on: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """The server that answered, and every entry of a paged search over base_dn.

        With ``on``, that server must be the one (see MarkerNotValid).
        """
        b = self.backend
        conn = b._connect()
        server = f"{conn.server.host}:{conn.server.port}"
        found: list[dict[str, Any]] = []
        cookie: bytes | None = None
        try:
            if on is not None and on != server:
                raise MarkerNotValid(f"changes were counted on {on}, and {server} answered")
            while True:
                conn.search(
                    b.options.base_dn,
                    wanted,
                    attributes=attributes,
                    paged_size=MIRROR_PAGE_SIZE,
                    paged_cookie=cookie,
                )
                if conn.result.get("result") == _SIZE_LIMIT_EXCEEDED:
                    # a copy cut short would drop everyone past the limit as deleted
                    raise BackendError(
                        f"the directory stopped the mirror's search at its size limit, after "
                        f"{len(found) + len(conn.response or ())} entries; let the bind_dn "
                        "read every entry with paged searches (see docs/backends/ldap.md)"
                    )
                if conn.result.get("result") not in _OK_CODES:
                    b._raise_for(conn.result)
                found += [i for i in conn.response or () if i.get("type") == "searchResEntry"]
                control = conn.result.get("controls", {}).get(_PAGED, {})
                cookie = control.get("value", {}).get("cookie") or None
                if cookie is None:
                    return server, found
        except (lx.LDAPException, OSError) as exc:
            raise BackendError(f"the directory failed while mirroring: {exc}") from None
        finally:
            _unbind(conn)


def _usn(marker: str) -> bool:
    return marker.rpartition(" ")[2].isdigit()


def _key(dn: str) -> str:
    """A DN compared as directories do, well enough: case and spaces around commas ignored."""
    return ",".join(part.strip() for part in dn.casefold().split(","))


def _entry(data: Data) -> Entry:
    return {k: [v.encode("utf-8", "surrogateescape") for v in vs] for k, vs in data.items()}
