"""What a mirror needs of the backend it copies: the narrow interface ldap and odbc implement."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

#: A record's own data, as JSON can hold it (the backend decides what it is).
Data = Mapping[str, Any]
#: A change marker as JSON can hold it (``uSNChanged``, ``modifyTimestamp``, a column's value).
Marker = Any


class MarkerNotValid(Exception):
    """The store cannot tell changes since this marker (another server answers): copy it all."""


class Record(NamedTuple):
    """One entry or row as the mirror stores it."""

    #: what identifies it across passes (a DN, a customer id)
    key: str
    #: its change marker, None when it has none
    marker: Marker
    data: Data


class MirrorFeed(Protocol):
    """Reads a backend's store for its mirror; every method may raise BackendError."""

    #: the livelookup elements of each customer, in the order the mirror keeps them
    elements: tuple[str, ...]
    #: leave out empty elements that HelpSpot cannot insert (as the live source does)
    drops_empty: bool

    def signature(self) -> str:
        """What the records depend on besides the store (fields, filters); never a secret."""

    def read_all(self) -> Iterator[Record]:
        """Every record a search of the source could return."""

    def read_changed(self, since: Marker) -> Iterator[Record]:
        """The records whose marker is ``since`` or later (deleted ones are not among them).

        Raises MarkerNotValid when ``since`` means nothing to the store as it is now.
        """

    def read_keys(self) -> set[str]:
        """The keys of every record there is now (cheap: no data)."""

    def newest(self, markers: Iterable[Marker]) -> Marker:
        """The latest of ``markers`` (None among them ignored); None when there is none."""

    def customers(self, stored: Mapping[str, Data]) -> Iterator[Mapping[str, str]]:
        """Each stored record as the live source would answer it (element -> text)."""
