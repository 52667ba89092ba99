"""Webhooks: stored durably before HelpSpot gets its answer, delivered in the background.

HelpSpot never retries a webhook and discards our answer (HELPSPOT.md §6), so a
webhook exists only once it is committed to the outbox. Every server process
runs its own delivery worker, so nothing but the server has to run; the
outbox's leases keep several processes from delivering one webhook twice.

The outbox is opened on first use: when it is unusable, webhooks are answered
503 (the caller's log is the only trace) while Live Lookup, AJAX fields and
Request Push go on, and the next webhook tries it again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping

from lookup_server.config.settings import ServerSettings
from lookup_server.core.backend import BackendError, DeliveryFailed
from lookup_server.core.calls import CallsInFlight
from lookup_server.core.models import Webhook
from lookup_server.core.targets import TargetSettings
from lookup_server.runtime.service import DeliveryRefused, ServiceError, Targets, UnknownTarget
from lookup_server.telemetry import Telemetry
from lookup_server.webhooks import (
    DeliveryWorker,
    OutboxEntry,
    OutboxError,
    TargetPolicy,
    open_outbox,
)

log = logging.getLogger(__name__)

#: How much of a refused body is read to find HelpSpot's request id. The request
#: row, xRequest first, comes before the (large) request history.
REQUEST_ID_WINDOW = 64 * 1024

# The number must be followed by its terminator, so a window that cuts it short
# never yields a wrong id.
_FORM_ID = re.compile(rb"(?:^|&)xRequest=([0-9]{1,20})&")
_REQUEST_ID = re.compile(r"[0-9]{1,20}")
_JSON_ID = re.compile(rb'"xRequest"[ \t\r\n]*:[ \t\r\n]*"?([0-9]{1,20})[" \t\r\n,}]')


def find_request_id(head: bytes, complete: bool = False) -> str:
    """HelpSpot's request id (xRequest) in the start of a form or JSON body, or "".

    ``complete`` says ``head`` is the whole body (its end ends the last field).
    One regular expression pass each over at most REQUEST_ID_WINDOW bytes.
    """
    head = head[:REQUEST_ID_WINDOW]
    match = _FORM_ID.search(head + b"&" if complete else head) or _JSON_ID.search(head)
    return match.group(1).decode("ascii") if match else ""


def request_id_of(payload: Mapping[str, object]) -> str:
    """HelpSpot's request id (xRequest) in a parsed webhook, or "" when it has none."""
    value = payload.get("xRequest")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = str(value).strip()
    return text if _REQUEST_ID.fullmatch(text) else ""


def policy_of(settings: TargetSettings) -> TargetPolicy:
    """How the outbox lets a target's webhooks through, from its settings."""
    return TargetPolicy(
        breaker_failures=settings.breaker_failures,
        breaker_probe_seconds=settings.breaker_probe_seconds,
        max_concurrent=settings.max_concurrent,
        max_per_second=settings.max_per_second,
        ordered=settings.ordered,
    )


class Webhooks:
    """Accepts webhooks for the configured targets and delivers them."""

    def __init__(
        self,
        server: ServerSettings,
        targets: Targets,
        telemetry: Telemetry | None = None,
        calls: CallsInFlight | None = None,
    ) -> None:
        self.server = server
        self.targets = targets
        self.telemetry = telemetry or Telemetry()
        #: The server's calls in this process, which deliveries give way to.
        self.calls = calls
        #: The targets that take webhooks.
        self.target_names = tuple(
            name for name, target in targets.items().items() if "webhook" in target.capabilities
        )
        self.enabled = bool(self.target_names)
        # Nothing is opened here: a bad outbox must not stop the app from starting.
        self.outbox = open_outbox(
            server.outbox_location,
            lazy=True,
            create_folder=True,
            policies={name: policy_of(targets[name].settings) for name in self.target_names},
        )
        self._worker: DeliveryWorker | None = None
        self._worker_pid = 0
        self._lock = threading.Lock()

    def accept(self, target: str, payload: Mapping[str, object]) -> OutboxEntry:
        """Store a webhook for ``target``; it is on disk when this returns."""
        self._require(target)
        request_id = request_id_of(payload)  # kept with it: ``ordered`` targets need it
        try:
            entry = self.outbox.store(target, payload, request_id=request_id)
        except OutboxError:
            # A file deleted or replaced under the server is opened afresh after a
            # failure, so a second try stores the webhook, which HelpSpot never resends.
            entry = self.outbox.store(target, payload, request_id=request_id)
        self.ensure_worker()
        return entry

    def submit(self, target: str, payload: Mapping[str, object]) -> int:
        """A source's hand-off (``WebhookSubmitter``): store ``payload`` for ``target``.

        The same path as a webhook from HelpSpot, with the core's errors as
        BackendError, the one error a plugin knows.
        """
        try:
            return self.accept(target, payload).id
        except ServiceError as exc:
            raise BackendError(exc.reason) from None
        except OutboxError as exc:
            raise BackendError(f"the webhook outbox is unusable: {exc}") from None

    def _require(self, target: str) -> None:
        if "webhook" not in self.targets[target].capabilities:
            raise UnknownTarget(f"target {target!r} does not accept webhooks")

    def record_refusal(self, target: str, size_bytes: int | None, head: bytes = b"") -> None:
        """Keep in the outbox what is known of a webhook refused as too large (not its body).

        ``size_bytes`` is None when the body was not announced (chunked); ``head``
        is as much of the body's start as could be read, to find the request id.
        Only for targets that take webhooks; a failure is logged, never raised.
        """
        try:
            self._require(target)
        except ServiceError:
            return
        complete = size_bytes is not None and len(head) >= size_bytes
        request_id = find_request_id(head, complete)
        try:
            self.outbox.record_refusal(target, size_bytes, self.server.max_body_bytes, request_id)
        except OutboxError as exc:
            log.error(
                "refused webhook for %r (request %s) NOT recorded: %s",
                target,
                request_id or "unknown",
                exc,
            )

    def ensure_worker(self) -> None:
        """Run a delivery worker in this process (again, after a fork)."""
        if not self.enabled or self._worker_pid == os.getpid():
            return
        with self._lock:
            if self._worker_pid == os.getpid():
                return
            # A worker inherited through fork() has no thread here: start our own.
            self._worker = DeliveryWorker(
                self.outbox,
                self._deliver,
                retention_days=self.server.outbox_retention_days,
                calls=self.calls,
            )
            self._worker_pid = os.getpid()
        self._worker.start()

    def _deliver(self, target: str, webhook: Webhook) -> None:
        started = time.perf_counter()
        delivered = False
        try:
            self.targets[target].deliver(webhook)
            delivered = True
        except DeliveryRefused as exc:  # the peer's status and answer go with the attempt
            raise DeliveryFailed(
                exc.reason,
                status=exc.peer_status,
                answer=exc.answer,
                final=exc.final,
                retry_after=exc.retry_after,
            ) from None
        except ServiceError as exc:
            raise BackendError(exc.reason) from None
        finally:
            self.telemetry.delivery(target, delivered, time.perf_counter() - started)

    def close(self) -> None:
        """Stop this process's delivery worker."""
        if self._worker is not None and self._worker_pid == os.getpid():
            self._worker.stop(timeout=5)
