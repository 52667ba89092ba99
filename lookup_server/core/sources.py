"""Source backends: where Live Lookup and AJAX selection fields find their answers.

A source backend is registered in the ``lookup_server.backends`` entry point
group and serves ``[sources.NAME]`` tables:

* ``find(term, limit)``          -> Live Lookup (``/livelookup/<source>``)
* ``find_options(query, limit)`` -> AJAX selection field (``/ajax/<source>``)

Which term to try first is decided by :mod:`lookup_server.core.search`, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from lookup_server.core.backend import Backend, offered
from lookup_server.core.fragments import FragmentSpec, Prerendered
from lookup_server.core.models import Customer, Option, OptionsQuery, SearchTerm

Strategy = Literal["customer_id", "email", "phone", "name"]

#: ``submit(target, payload)``: store ``payload`` in the outbox as a webhook for the
#: target named ``target``, as if HelpSpot had sent it; the outbox then delivers it
#: through that target's ``deliver`` with retries, and it is on disk when this
#: returns (the webhook's id). Raises BackendError when that target takes no
#: webhooks or the outbox is unusable. See :meth:`SourceBackend.start_background`.
WebhookSubmitter = Callable[[str, Mapping[str, object]], int]


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
    #: in the request (Insert skips empty values); by default they are left out.
    clear_empty: bool = False

    def backend_field(self, element: str, default: str | None = None) -> str:
        """The backend field that feeds ``element`` (identity unless mapped)."""
        mapped = self.fields.get(element)
        if mapped is not None:
            return mapped
        return element if default is None else default


OptionsT = TypeVar("OptionsT")


class SourceBackend(Backend[OptionsT]):
    """Base class of every source backend plugin; override what it offers."""

    CAPABILITY_METHODS: ClassVar[dict[str, str]] = {"livelookup": "find", "ajax": "find_options"}

    def __init__(self, options: OptionsT, source: SourceSettings) -> None:
        super().__init__(options)
        self.source = source

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Return at most ``limit`` customers matching ``term`` (Live Lookup)."""
        raise NotImplementedError

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """Return at most ``limit`` drop-down options for an AJAX selection field."""
        raise NotImplementedError

    def find_rendered(self, term: SearchTerm, limit: int, spec: FragmentSpec) -> Prerendered | None:
        """What ``find(term, limit)`` finds, as fragments stored for ``spec``; None without them.

        Optional: a backend that keeps every customer's fragment, rendered ahead
        of time with ``fragment_renderer(spec)``, answers from them (see
        lookup_server.core.fragments); the core falls back to ``find`` and the
        renderer whenever this returns None.
        """
        return None

    def start_background(self, submit: WebhookSubmitter) -> None:
        """Start the source's own background work in this server process (a sync thread).

        Called by the server only (never by the command line or ``check``), once
        per process after ``prepare`` (again in each gunicorn worker after a
        fork), with ``submit`` to hand work to a target through the durable
        outbox. Return at once; run the work on a daemon thread of your own,
        stopped by ``close``.
        """

    @classmethod
    def validate(cls, options: Any, source: SourceSettings) -> list[tuple[str, str]]:
        """Problems the option types cannot express, found when the config loads.

        Return ``(key, what to do)`` pairs; the key is relative to the source's
        table (``"queries.email"``), or "" for the table as a whole.
        """
        return []

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capabilities this class implements: ``livelookup``, ``ajax``."""
        return offered(cls, SourceBackend)
