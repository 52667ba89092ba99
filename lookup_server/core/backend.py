"""What every backend plugin has, whether it serves a source or a target.

A backend is a class registered through an entry point: a source backend
(:class:`~lookup_server.core.sources.SourceBackend`) in
``lookup_server.backends``, a target backend
(:class:`~lookup_server.core.targets.TargetBackend`) in ``lookup_server.targets``.
It declares its own configuration keys as a dataclass (``Options``) and
implements the capabilities it offers by overriding methods. Everything else
(search order, escaping, timeouts, HTTP) is done by the core. See
docs/plugins.md for a complete example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar


class BackendError(Exception):
    """A backend failed in a way staff should be told about.

    The message is shown to HelpSpot staff: make it short and useful, and never
    put a password, token or connection string in it.
    """


class BackendTimeout(BackendError):
    """The backend's own network or query timeout fired, or the core's passed."""


class NotFound(BackendError):
    """What was asked for does not exist there (an unknown push id, say)."""


#: How much of a peer's answer a DeliveryFailed keeps: enough to see what it said.
ANSWER_EXCERPT_CHARS = 1000
#: Control characters but tab and newline (so CR LF becomes LF), and bidirectional
#: overrides: they could rewrite a terminal, or hide text from whoever reads it.
_UNSHOWABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def showable_excerpt(text: str, limit: int = ANSWER_EXCERPT_CHARS) -> str:
    """The start of ``text``, at most ``limit`` characters, without what a terminal acts on."""
    # Only the start is kept, so only the start is cleaned (a peer may answer a whole page).
    return _UNSHOWABLE.sub("", text[: limit * 2])[:limit]


class DeliveryFailed(BackendError):
    """The peer refused what was sent: its HTTP status (None: it gave none) and answer.

    For a webhook, the outbox records both with the attempt, and ``lookup-server
    outbox show`` prints them. Like the message, ``answer`` must never hold a
    password, key or token: leave out whatever the peer may have echoed of the
    request. It is cut to ANSWER_EXCERPT_CHARS, without control characters.

    What the peer said about trying again goes with it: ``final`` when a retry
    cannot succeed (a plan's limit, a request that no longer exists), so the
    webhook fails at once; ``retry_after`` (seconds) when it asked to wait at
    least that long (a rate limit's reset), so the next try is no sooner.
    Left out, ``final`` follows the status by the one rule every target keeps
    (:func:`is_final_status`).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        answer: str = "",
        final: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.answer = showable_excerpt(answer)
        self.final = is_final_status(status) if final is None else final
        self.retry_after = retry_after


def is_final_status(status: int | None) -> bool:
    """Whether a webhook refused with this HTTP status would be refused again, as it is.

    A 4xx says the request itself is wrong (a dead letter, its answer kept),
    except 408 (the peer timed out) and 429 (too many requests); a 5xx, a 3xx
    (redirects are not followed: a fixed url delivers it) or no status at all
    (the network) is retried.
    """
    return status is not None and 400 <= status < 500 and status not in (408, 429)


@dataclass(frozen=True)
class NoOptions:
    """Options of a backend that takes none."""


OptionsT = TypeVar("OptionsT")


class Backend(Generic[OptionsT]):
    """The life cycle and configuration that source and target backends share.

    Subclasses set ``Options`` to a frozen dataclass whose fields are the
    backend's own configuration keys; the core validates a table against it
    (types, required keys, unknown keys) and passes an instance to
    ``__init__``. Supported field types: ``str``, ``int``, ``float``, ``bool``,
    ``Path`` (resolved against the config file's folder), ``Secret``,
    ``list[str]``, ``dict[str, str]``, ``Literal[...]`` and ``X | None``.
    """

    Options: ClassVar[type[Any]] = NoOptions
    #: True when a call may wait on another system (network, database server): the
    #: core then runs it on a worker thread, stops waiting at the timeout and aborts
    #: it (see :func:`~lookup_server.core.calls.abort_on_timeout`). A backend that only
    #: reads local, indexed files may set False to be called inline, sparing each
    #: lookup a thread hand-off; so may an instance, in ``__init__`` (a mirrored
    #: source answers from local files). ``check`` goes by the class's value.
    waits_on_network: bool = True
    #: capability name -> the method that provides it, for each kind of backend
    CAPABILITY_METHODS: ClassVar[dict[str, str]] = {}

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    def prepare(self) -> None:
        """Warm up once before serving (build an index, open a pool); no deadline applies.

        May raise BackendError: the failure is logged and calls report it.
        """

    def check(self) -> list[str]:
        """Probe the backend for ``lookup-server check``.

        Return warnings (empty when all is well); raise BackendError when the
        backend cannot serve.
        """
        return []

    def status(self) -> list[str]:
        """What ``check`` and the console show of the backend's own state (a mirror's age).

        Read locally and at once: no network. Empty unless the backend keeps state.
        """
        return []

    def close(self) -> None:
        """Release connections and files."""

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capabilities this class implements (``livelookup``, ``push``, ...)."""
        return frozenset()


def offered(cls: type[Backend[Any]], kind: type[Backend[Any]]) -> frozenset[str]:
    """The capabilities of ``kind`` (its ``CAPABILITY_METHODS``) that ``cls`` overrides."""
    return frozenset(
        name
        for name, method in kind.CAPABILITY_METHODS.items()
        if getattr(cls, method) is not getattr(kind, method)
    )
