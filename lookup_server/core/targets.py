"""Target backends: where Request Push and webhooks send HelpSpot's requests.

A target backend is registered in the ``lookup_server.targets`` entry point
group and serves ``[targets.NAME]`` tables:

* ``push(request)`` and
  ``details(push_id)`` -> Request Push (``/push/<target>``)
* ``deliver(webhook)``  -> webhooks (``/webhook/<target>``), from the outbox

A push is answered while staff wait, so it fails with a message for them. A
webhook is delivered later by the outbox, which retries it whenever
``deliver`` raises BackendError: ``deliver`` must be safe to call again for the
same webhook (its ``id`` is the idempotency key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from lookup_server.core.backend import Backend, offered
from lookup_server.core.models import PushDetails, PushRequest, Webhook
from lookup_server.core.templates import request_link


@dataclass(frozen=True)
class TargetSettings:
    """The backend-independent keys of one ``[targets.NAME]`` table."""

    name: str
    backend: str
    timeout: float = 10.0
    #: HelpSpot's own address (``[server] helpspot_url``), for links back to a request.
    helpspot_url: str = ""
    #: Consecutive failed webhook attempts that pause the target (0: never paused)...
    breaker_failures: int = 0
    #: ...and, while it is paused, how often one webhook is let through as a probe.
    breaker_probe_seconds: float = 60.0
    #: Webhooks of this target delivered at once across every process (0: no limit).
    max_concurrent: int = 0
    #: Webhooks of this target claimed per second across every process (0: no limit).
    max_per_second: float = 0.0
    #: Webhooks of one HelpSpot request delivered in the order they arrived.
    ordered: bool = False

    def request_link(self, request_id: str) -> str:
        """The request's page in HelpSpot, or "" when helpspot_url is not set."""
        return request_link(self.helpspot_url, request_id)


OptionsT = TypeVar("OptionsT")


class TargetBackend(Backend[OptionsT]):
    """Base class of every target backend plugin; override what it offers."""

    CAPABILITY_METHODS: ClassVar[dict[str, str]] = {
        "push": "push",
        "details": "details",
        "webhook": "deliver",
    }

    def __init__(self, options: OptionsT, target: TargetSettings) -> None:
        super().__init__(options)
        self.target = target

    def push(self, request: PushRequest) -> str:
        """Send a pushed request to the other system; return its id there.

        Raise BackendError with a message for staff when the push fails.
        """
        raise NotImplementedError

    def details(self, push_id: str) -> PushDetails:
        """Describe an earlier push for the request page; NotFound for an unknown id."""
        raise NotImplementedError

    def deliver(self, webhook: Webhook) -> None:
        """Deliver one webhook; raise BackendError to have it retried later."""
        raise NotImplementedError

    @classmethod
    def validate(cls, options: Any, target: TargetSettings) -> list[tuple[str, str]]:
        """Problems the option types cannot express, found when the config loads.

        Return ``(key, what to do)`` pairs; the key is relative to the target's
        table, or "" for the table as a whole.
        """
        return []

    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capabilities this class implements: ``push``, ``details``, ``webhook``."""
        return offered(cls, TargetBackend)
