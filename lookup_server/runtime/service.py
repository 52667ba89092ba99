"""Configured sources and the lookups they answer: one code path for HTTP and CLI.

HelpSpot has no read timeout (HELPSPOT.md §1): a slow backend hangs a staff
member's screen. So every backend call runs on a worker thread and the answer
is bounded by the source's ``timeout``. When it passes, the call is aborted
through the hooks the backend registered (its socket shut down, its statement
cancelled), so the thread and its connection come back within a second; a
call that still cannot be aborted keeps its slot, and when all slots of a
source are stuck new calls fail at once instead of piling up threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

from lookup_server.config.settings import Config, SourceConfig, TargetConfig
from lookup_server.core.backend import (
    Backend,
    BackendError,
    BackendTimeout,
    DeliveryFailed,
    NotFound,
)
from lookup_server.core.calls import RunningCall
from lookup_server.core.fragments import FragmentSpec, Prerendered
from lookup_server.core.models import (
    Customer,
    LookupQuery,
    Option,
    OptionsQuery,
    PushDetails,
    PushRequest,
    Webhook,
)
from lookup_server.core.search import TermTried, find_customers, find_prerendered
from lookup_server.core.sources import SourceBackend, SourceSettings, WebhookSubmitter
from lookup_server.core.targets import TargetBackend, TargetSettings
from lookup_server.runtime.cache import (
    CUSTOMERS,
    OPTIONS,
    ResultCache,
    SharedResultCache,
    namespace_of,
)
from lookup_server.telemetry import Telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Calls one source may have in flight; past that, answer "busy" at once.
MAX_IN_FLIGHT = 8
#: After the timeout, a call's abort hooks run again this often while it has not
#: returned: a hook may have found nothing to act on yet (a socket still connecting,
#: a statement not yet started in the driver).
ABORT_RETRY = 0.2
#: ... for this long; a call still running then is reported, and keeps its slot.
ABORT_GRACE = 1.0


class ServiceError(Exception):
    """A lookup that cannot be answered; ``reason`` is safe to show to staff."""

    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refused(ServiceError):
    """Wrong or missing shared key, or a caller outside ``allowed_ips``."""

    status = 403


class UnknownSource(ServiceError):
    """No source of that name, or it does not offer what was asked."""

    status = 404


class UnknownTarget(ServiceError):
    """No target of that name, or it does not offer what was asked."""

    status = 404


class Missing(ServiceError):
    """The backend has no such item (an unknown push id)."""

    status = 404


class BackendFailed(ServiceError):
    """The backend raised an error."""

    status = 502


class DeliveryRefused(BackendFailed):
    """The target's peer did not take a webhook: what it answered, for the outbox's record."""

    def __init__(
        self,
        reason: str,
        peer_status: int | None,
        answer: str,
        final: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.peer_status = peer_status
        self.answer = answer
        self.final = final
        self.retry_after = retry_after


class Busy(ServiceError):
    """Every slot of the source is held by a call that has not returned."""

    status = 503


class TimedOut(ServiceError):
    """The backend did not answer within the source's timeout."""

    status = 504


class DeadlineRunner:
    """Runs calls on daemon threads, waits for each until its deadline, then aborts it.

    Daemon threads (unlike ThreadPoolExecutor's) never keep a finished CLI
    process waiting for a backend that hangs.
    """

    def __init__(self, name: str, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.name = name
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._queue: SimpleQueue[tuple[Callable[[], Any], futures.Future[Any], RunningCall]] = (
            SimpleQueue()
        )
        self._idle = 0
        self._in_flight = 0
        self._threads = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Calls that hold a slot: running, or timed out and not yet returned."""
        return self._in_flight

    @property
    def threads(self) -> int:
        """Worker threads started so far (idle ones wait for the next call)."""
        return self._threads

    def run(self, call: Callable[[], T], timeout: float) -> T:
        """``call()``'s result; TimeoutError when it takes longer than ``timeout``."""
        if not self._slots.acquire(timeout=min(timeout, 0.05)):
            raise Busy(f"source {self.name!r} is busy: earlier lookups have not returned yet")
        future: futures.Future[T] = futures.Future()
        running = RunningCall()
        with self._lock:
            self._in_flight += 1
            start_thread = self._idle == 0
            if start_thread:
                self._threads += 1
            else:
                self._idle -= 1
        if start_thread:
            threading.Thread(target=self._work, name=f"source-{self.name}", daemon=True).start()
        self._queue.put((call, future, running))
        try:
            return future.result(timeout=timeout)
        except futures.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            # aborting may itself wait (a cancel request to the database): not on this thread
            threading.Thread(
                target=self._abort,
                args=(running, future, timeout),
                name=f"abort-{self.name}",
                daemon=True,
            ).start()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def _work(self) -> None:
        while True:
            call, future, running = self._queue.get()
            try:
                with running.bound():
                    future.set_result(call())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)
            finally:
                with self._lock:
                    # idle before the slot is free: the next call must not start a thread
                    self._in_flight -= 1
                    self._idle += 1
                self._slots.release()

    def _abort(self, running: RunningCall, future: futures.Future[Any], timeout: float) -> None:
        """Abort a call past its deadline, again while it has not returned, for ABORT_GRACE."""
        give_up = time.monotonic() + ABORT_GRACE
        while not future.done():
            left = give_up - time.monotonic()
            if left <= 0:
                log.warning(
                    "source %r: a call is still running %g s after its timeout of "
                    "%g s and could not be aborted; it holds one of the source's slots "
                    "until it returns",
                    self.name,
                    ABORT_GRACE,
                    timeout,
                )
                return
            running.abort()
            futures.wait([future], timeout=min(ABORT_RETRY, left))


Settings = TypeVar("Settings", SourceSettings, TargetSettings)


class Plugged(Generic[Settings]):
    """What a configured source and a configured target share: a backend and its runner."""

    kind = "source"
    unknown: type[ServiceError] = UnknownSource

    def __init__(self, settings: Settings, backend: Backend[Any], capabilities: frozenset[str]):
        self.settings: Settings = settings
        self.backend = backend
        self.capabilities = capabilities
        self._runner = DeadlineRunner(settings.name) if backend.waits_on_network else None

    def _require(self, capability: str, what: str) -> None:
        if capability not in self.capabilities:
            raise self.unknown(f"{self.kind} {self.settings.name!r} does not offer {what}")

    def check(self, findings: Callable[[Backend[Any]], list[str]]) -> list[str]:
        """What ``findings`` says of the backend, bounded like every call of this item."""
        return self._call(lambda: findings(self.backend))

    def _call(self, call: Callable[[], T]) -> T:
        """``call()`` bounded by the timeout, its failures turned into ServiceErrors."""
        what = f"{self.kind} {self.settings.name!r}"
        timeout = self.settings.timeout
        try:
            return call() if self._runner is None else self._runner.run(call, timeout)
        except TimeoutError:
            raise TimedOut(f"{what} did not answer within {timeout:g} s") from None
        except BackendTimeout as exc:
            raise TimedOut(f"{what} timed out: {exc}") from None
        except NotFound as exc:
            raise Missing(f"{what}: {exc}") from None
        except DeliveryFailed as exc:
            raise DeliveryRefused(
                f"{what} failed: {exc}", exc.status, exc.answer, exc.final, exc.retry_after
            ) from None
        except BackendError as exc:
            raise BackendFailed(f"{what} failed: {exc}") from None
        except ServiceError:
            raise
        except Exception:
            log.exception("%s: unexpected error in backend", what)
            raise BackendFailed(f"{what} failed (details in the server log)") from None


class Source(Plugged[SourceSettings]):
    """One configured source: Live Lookup and AJAX options, with an optional cache."""

    def __init__(
        self,
        config: SourceConfig,
        telemetry: Telemetry | None = None,
        shared_cache: str | None = None,
    ) -> None:
        self.source: SourceBackend[Any] = _created(config, _UnusableSource)
        super().__init__(config.settings, self.source, config.backend_class.capabilities())
        name, ttl = self.settings.name, self.settings.cache_ttl
        report = None if telemetry is None else (lambda hit: telemetry.cache(name, hit))
        self._cache = (
            SharedResultCache(
                ttl, shared_cache, namespace_of(name, config.settings, config.options), report
            )
            if shared_cache and ttl > 0
            else ResultCache(ttl, on_lookup=report)
        )
        #: Whether lookup_prerendered can answer: only a backend that stores fragments
        #: can, and a cached source answers through its cache (what it counts is the
        #: cache's use).
        self.prerenders = (
            type(self.source).find_rendered is not SourceBackend.find_rendered and ttl <= 0
        )

    def lookup_prerendered(self, query: LookupQuery, spec: FragmentSpec) -> Prerendered | None:
        """What :meth:`lookup` finds, as fragments stored for ``spec``; None when there are none.

        The answer is then the renderer's own bytes, joined (see core.fragments).
        """
        self._require("livelookup", "Live Lookup")
        if not self.prerenders or query.is_empty():
            return None
        s = self.settings
        return self._call(
            lambda: find_prerendered(self.source, query, s.search, s.max_results, spec)
        )

    def lookup(self, query: LookupQuery, trace: list[TermTried] | None = None) -> list[Customer]:
        """Customers for a Live Lookup, within the source's timeout.

        With ``trace`` (the console trying a lookup) the cache is passed by and
        every search made is appended to it.
        """
        self._require("livelookup", "Live Lookup")
        if query.is_empty():
            return []
        s = self.settings
        if trace is not None:
            return self._call(
                lambda: find_customers(self.source, query, s.search, s.max_results, trace)
            )
        return self._cache.get_or_compute(
            lambda: (
                "lookup",
                query.customer_id,
                query.first_name,
                query.last_name,
                query.email,
                query.phone,
            ),
            lambda: self._call(lambda: find_customers(self.source, query, s.search, s.max_results)),
            CUSTOMERS,
        )

    def options(self, query: OptionsQuery) -> list[Option]:
        """Options for an AJAX selection field, within the source's timeout."""
        self._require("ajax", "AJAX options")
        limit = self.settings.max_results
        return self._cache.get_or_compute(
            lambda: ("options", query.search, tuple(sorted(query.fields.items()))),
            lambda: self._call(lambda: list(self.source.find_options(query, limit))[:limit]),
            OPTIONS,
        )


class Target(Plugged[TargetSettings]):
    """One configured Request Push / webhook target."""

    kind = "target"
    unknown = UnknownTarget

    def __init__(self, config: TargetConfig) -> None:
        self.target: TargetBackend[Any] = _created(config, _UnusableTarget)
        super().__init__(config.settings, self.target, config.backend_class.capabilities())

    def push(self, request: PushRequest) -> str:
        """Push a request; the id the other system gave it."""
        self._require("push", "Request Push")
        return self._call(lambda: str(self.target.push(request)))

    def details(self, push_id: str) -> PushDetails:
        """What to show in the request page about an earlier push."""
        self._require("details", "push details")
        return self._call(lambda: self.target.details(push_id))

    def deliver(self, webhook: Webhook) -> None:
        """Deliver one webhook (from the delivery worker), within the target's timeout."""
        self._require("webhook", "webhook delivery")
        self._call(lambda: self.target.deliver(webhook))


class _UnusableSource(SourceBackend[Any]):
    """Stands in for a source backend whose constructor failed: every use reports why."""

    def __init__(self, config: SourceConfig, reason: str) -> None:
        super().__init__(config.options, config.settings)
        self.reason = reason

    def find(self, term: Any, limit: int) -> Any:
        raise BackendError(self.reason)

    def find_options(self, query: Any, limit: int) -> Any:
        raise BackendError(self.reason)

    def check(self) -> list[str]:
        raise BackendError(self.reason)


class _UnusableTarget(TargetBackend[Any]):
    """Stands in for a target backend whose constructor failed: every use reports why."""

    def __init__(self, config: TargetConfig, reason: str) -> None:
        super().__init__(config.options, config.settings)
        self.reason = reason

    def push(self, request: Any) -> str:
        raise BackendError(self.reason)

    def details(self, push_id: str) -> Any:
        raise BackendError(self.reason)

    def deliver(self, webhook: Any) -> None:
        raise BackendError(self.reason)

    def check(self) -> list[str]:
        raise BackendError(self.reason)


Made = TypeVar("Made", bound=Backend[Any])


def _created(config: Any, unusable: Callable[[Any, str], Made]) -> Made:
    """The backend of a source or target; one that cannot be built must not stop the rest."""
    try:
        made: Made = config.create_backend()
        return made
    except BackendError as exc:
        return unusable(config, str(exc))
    except Exception:
        log.exception("%r: the backend could not be created", config.settings.name)
        return unusable(config, "the backend could not be created (details in the server log)")


def create_backend(config: SourceConfig | TargetConfig) -> Backend[Any]:
    """The backend of a source or target, or a stand-in that reports why it cannot be built."""
    if isinstance(config, SourceConfig):
        return _created(config, _UnusableSource)
    return _created(config, _UnusableTarget)


P = TypeVar("P", Source, Target)


class Configured(Generic[P]):
    """Every configured source (or target), created once per process."""

    def __init__(self, items: Mapping[str, P], kind: str, unknown: type[ServiceError]) -> None:
        self.kind = kind
        self._items: dict[str, P] = dict(items)
        self._unknown = unknown

    def __getitem__(self, name: str) -> P:
        try:
            return self._items[name]
        except KeyError:
            raise self._unknown(f"no {self.kind} named {name!r} is configured") from None

    def items(self) -> Mapping[str, P]:
        """Name -> source or target."""
        return self._items

    def prepare(self) -> None:
        """Warm every backend up; a failure is logged, and that one answers with errors."""
        for name, item in self._items.items():
            try:
                item.backend.prepare()
            except BackendError as exc:
                log.error("%s %r is not ready: %s", self.kind, name, exc)

    def close(self) -> None:
        """Close every backend."""
        for item in self._items.values():
            item.backend.close()


class Sources(Configured[Source]):
    """Every configured source."""

    def __init__(self, config: Config, telemetry: Telemetry | None = None) -> None:
        shared = config.server.cache.reveal() if config.server.cache is not None else None
        made = {name: Source(c, telemetry, shared) for name, c in config.sources.items()}
        super().__init__(made, "source", UnknownSource)
        self._background_pid = 0
        self._background_lock = threading.Lock()

    def start_background(self, submit: WebhookSubmitter) -> None:
        """Start every source's background work in this process (again, after a fork).

        Only the server calls this: the command line and ``check`` never start
        a source's background work. A failure is logged; that source still answers.
        """
        if self._background_pid == os.getpid():
            return  # every request asks: no lock on the way
        with self._background_lock:
            if self._background_pid == os.getpid():
                return
            self._background_pid = os.getpid()
        for name, item in self._items.items():
            try:
                item.source.start_background(submit)
            except BackendError as exc:
                log.error("source %r: its background work cannot start: %s", name, exc)
            except Exception:
                log.exception("source %r: its background work cannot start", name)


class Targets(Configured[Target]):
    """Every configured Request Push / webhook target."""

    def __init__(self, config: Config) -> None:
        made = {name: Target(c) for name, c in config.targets.items()}
        super().__init__(made, "target", UnknownTarget)
