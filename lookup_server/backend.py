"""The contract between lookup-server and its backend plugins.

A backend is a class registered in the ``lookup_server.backends`` entry point
group. It declares its own configuration keys as a dataclass (``Options``),
and implements the capabilities it offers by overriding methods:

* ``find(term, limit)``       -> Live Lookup (``/livelookup/<source>``)
* ``find_options(query, limit)`` -> AJAX selection field (``/ajax/<source>``)
* ``push(request)`` and
  ``details(push_id)``         -> Request Push target (``/push/<target>``)
* ``deliver(webhook)``         -> webhook target (``/webhook/<target>``)

Everything else (which strategy to try first, escaping, timeouts, HTTP) is
done by the core. See docs/plugins.md for a complete example.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from lookup_server.models import (
    Customer,
    Option,
    OptionsQuery,
    PushDetails,
    PushRequest,
    SearchTerm,
    Webhook,
)

Strategy = Literal["customer_id", "email", "phone", "name"]


class BackendError(Exception):
    """A backend failed in a way staff should be told about.

    The message is shown to HelpSpot staff: make it short and useful, and never
    put a password, token or connection string in it.
    """


class BackendTimeout(BackendError):
    """The backend's own network or query timeout fired."""


class NotFound(BackendError):
    """What was asked for does not exist there (an unknown push id, say)."""


@dataclass(frozen=True)
class NoOptions:
    """Options of a backend that takes none."""


@dataclass(frozen=True)
class SourceSettings:
    """The backend-independent keys of one ``[sources.NAME]`` table."""

    name: str
    backend: str
    columns: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    html_fields: frozenset[str] = frozenset()
    max_results: int = 50
    timeout: float = 5.0
    search: tuple[Strategy, ...] = ("customer_id", "email", "phone", "name")
    #: livelookup element name -> the backend's own field (column, attribute).
    fields: Mapping[str, str] = field(default_factory=dict)
    on_error: Literal["error", "empty"] = "error"
    #: Seconds a result may be served from memory; 0 (default) turns caching off.
    cache_ttl: float = 0.0
    #: AJAX fields: transliterate descriptions to ASCII (HelpSpot mangles the rest).
    ascii: bool = False
    #: Send insertable fields that are empty, so that automation rules clear them
    #: in the request (and Insert empties them); by default they are left out.
    clear_empty: bool = False

    def backend_field(self, element: str, default: str | None = None) -> str:
        """The backend field that feeds ``element`` (identity unless mapped)."""
        mapped = self.fields.get(element)
        if mapped is not None:
            return mapped
        return element if default is None else default


OptionsT = TypeVar("OptionsT")


class Backend(Generic[OptionsT]):
    """Base class of every backend plugin.

    Subclasses set ``Options`` to a frozen dataclass whose fields are the
    backend's own configuration keys; the core validates a source's table
    against it (types, required keys, unknown keys) and passes an instance to
    ``__init__``. Supported field types: ``str``, ``int``, ``float``, ``bool``,
    ``Path`` (resolved against the config file's folder), ``Secret``,
    ``list[str]``, ``dict[str, str]``, ``Literal[...]`` and ``X | None``.
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: True when a call may wait on another system (network, database server): the
    #: core then runs it on a worker thread and stops waiting at the source's
    #: timeout. A backend that only reads local, indexed files may set False to be
    #: called inline, sparing each lookup a thread hand-off.
    waits_on_network: ClassVar[bool] = True

    def __init__(self, options: OptionsT, source: SourceSettings) -> None:
        self.options = options
        self.source = source

    # -- capabilities: override what the backend offers -------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Return at most ``limit`` customers matching ``term`` (Live Lookup)."""
        raise NotImplementedError

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """Return at most ``limit`` drop-down options for an AJAX selection field."""
        raise NotImplementedError

    def push(self, request: PushRequest) -> str:
        """Send a pushed request to the other system; return its id there.

        Raise BackendError with a message for staff when the push fails.
        """
        raise NotImplementedError

    def details(self, push_id: str) -> PushDetails:
        """Describe an earlier push for the request page."""
        raise NotImplementedError

    def deliver(self, webhook: Webhook) -> None:
        """Deliver one webhook; raise BackendError to have it retried later."""
        raise NotImplementedError

    # -- life cycle ---------------------------------------------------------------

    def prepare(self) -> None:
        """Warm up once before serving (build an index, open a pool); no deadline applies.

        May raise BackendError: the failure is logged and lookups report it.
        """

    def check(self) -> list[str]:
        """Probe the backend for ``lookup-server check``.

        Return warnings (empty when all is well); raise BackendError when the
        backend cannot serve.
        """
        return []

    def close(self) -> None:
        """Release connections and files."""

    # -- configuration -------------------------------------------------------------

    @classmethod
    def validate(cls, options: Any, source: SourceSettings) -> list[tuple[str, str]]:
        """Problems the option types cannot express, found when the config loads.

        Return ``(key, what to do)`` pairs; the key is relative to the source's
        table (``"queries.email"``), or "" for the table as a whole.
        """
        return []

    # -- introspection ------------------------------------------------------------

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capabilities this class implements (``livelookup``, ...)."""
        offered = {
            name: method
            for name, method in CAPABILITY_METHODS.items()
            if getattr(cls, method) is not getattr(Backend, method)
        }
        return frozenset(offered)


#: capability name -> the method that provides it
CAPABILITY_METHODS: dict[str, str] = {
    "livelookup": "find",
    "ajax": "find_options",
    "push": "push",
    "details": "details",
    "webhook": "deliver",
}
