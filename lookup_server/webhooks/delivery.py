"""Delivering stored webhooks: a thread per server process that claims, delivers, records.

Each outcome is recorded with its attempt: when it started, how long it took,
and, when the target raised :class:`~lookup_server.core.backend.DeliveryFailed`,
the peer's status and the start of its answer.

While a delivery runs, :class:`LeaseRenewal` keeps its lease alive, so the
lease can be short and a process that dies mid-delivery delays its webhook by
one lease at most. Now and then the same thread purges what the retention no
longer keeps. An unusable outbox is logged once when it breaks and once when
it works again, never at every poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from lookup_server.core.backend import BackendError, DeliveryFailed
from lookup_server.core.calls import CallsInFlight
from lookup_server.core.models import Webhook
from lookup_server.webhooks.database import OutboxError
from lookup_server.webhooks.interface import WebhookOutbox
from lookup_server.webhooks.leases import new_owner
from lookup_server.webhooks.records import OutboxEntry, Purged

log = logging.getLogger(__name__)

#: ``deliver(target_name, webhook)``: returns when delivered, raises when not (a
#: DeliveryFailed with what the peer answered, when it refused).
Deliver = Callable[[str, Webhook], None]

#: Seconds between looks at the outbox when nothing woke the worker.
POLL_SECONDS = 5.0
#: A lease is renewed four times per lease period, so one slow renewal costs nothing.
RENEWALS_PER_LEASE = 4
#: A delivery takes at most its target's timeout (300 s at most); one still running
#: after this is stuck, and its lease is left to expire.
MAX_HOLD_SECONDS = 600.0
#: The retention purge runs at most this often per process...
PURGE_EVERY_SECONDS = 3600.0
#: ...deleting at most this many rows before it lets deliveries run again.
PURGE_ROWS_PER_PASS = 10_000
#: A delivery waits at most this long for the process's calls to be answered
#: (CallsInFlight): a process that is never idle still delivers at least about
#: 1 / GIVE_WAY_SECONDS webhooks a second, and all of them once the calls stop.
GIVE_WAY_SECONDS = 0.05


def safe_error(exc: BaseException) -> str:
    """The text to store as last_error: a BackendError's message, else only the type."""
    if isinstance(exc, BackendError):
        return str(exc) or type(exc).__name__
    # Other exceptions may quote URLs with keys or tokens; the log has the details.
    return f"{type(exc).__name__}: unexpected error (details in the server log)"


@dataclass(frozen=True)
class _Outcome:
    """How one delivery went: ``error`` is None when delivered."""

    error: str | None = None
    status: int | None = None
    answer: str = ""
    #: The peer said a retry cannot succeed / to wait at least this long.
    final: bool = False
    retry_after: float | None = None


class LeaseRenewal:
    """Keeps the lease of the webhook its worker is delivering alive, on a thread of its own.

    One per delivery worker, its thread started with the first delivery and kept:
    a thread started per delivery cost a millisecond of every delivery's time
    (bench/bench_outbox.py). :meth:`holding` covers one delivery; renewal of it
    stops when the lease was lost (another worker took the webhook over, which
    it records) or after ``max_hold`` seconds.
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        owner: str,
        *,
        every: float,
        clock: Callable[[], float] = time.time,
        max_hold: float = MAX_HOLD_SECONDS,
    ) -> None:
        self.outbox = outbox
        self.owner = owner
        self.every = every
        self.clock = clock
        self.max_hold = max_hold
        #: Whether the current delivery's lease is being kept alive (False once it stops).
        self.renewing = False
        self._changed = threading.Condition()
        #: The delivery being covered: its webhook and when it began (monotonic).
        self._held: tuple[OutboxEntry, float] | None = None
        #: Held while a renewal is written, so that none is written after holding() ends.
        self._writing = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, entry: OutboxEntry) -> Iterator[None]:
        """Keep ``entry``'s lease alive for the block (the delivery)."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-lease", daemon=True)
                self._thread.start()
            self._held = (entry, time.monotonic())
            self.renewing = True
            self._changed.notify()
        try:
            yield
        finally:
            with self._writing, self._changed:  # a renewal being written ends first
                self._held = None
                self.renewing = False
                self._changed.notify()

    def stop(self) -> None:
        """End the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._stopping:
                held = self._held
                if held is None:
                    self._changed.wait()
                elif self._changed.wait_for(partial(self._moved_on, held), timeout=self.every):
                    continue  # that delivery ended: look at what is held now
                elif not self._renew(*held):  # renewing it stops: wait for its end
                    self.renewing = False
                    self._changed.wait_for(partial(self._moved_on, held))

    def _moved_on(self, held: tuple[OutboxEntry, float]) -> bool:
        return self._stopping or self._held is not held

    def _renew(self, entry: OutboxEntry, began: float) -> bool:
        """One renewal, called with _changed held; False when renewing this delivery stops."""
        if time.monotonic() - began > self.max_hold:
            log.error(
                "webhook %s to target %r: still delivering after %g s; its lease is left to expire",
                entry.id,
                entry.target,
                self.max_hold,
            )
            return False
        self._changed.release()  # the database write must not hold up holding()
        try:
            with self._writing:
                if self._held is None or self._held[0] is not entry:
                    return False  # the delivery ended meanwhile
                try:
                    kept = self.outbox.renew(entry.id, self.owner, now=self.clock())
                except OutboxError as exc:  # try again; the lease lasts a few more renewals
                    log.warning("webhook %s: cannot renew its lease: %s", entry.id, exc)
                    return True
        finally:
            self._changed.acquire()
        if not kept:
            log.warning(
                "webhook %s to target %r: lease lost to another worker, which "
                "will record the outcome",
                entry.id,
                entry.target,
            )
        return kept


class _StateLog:
    """Logs a problem when it starts or changes, and once when it is over."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.problem: str | None = None

    def failed(self, problem: str, exc_info: BaseException | None = None) -> None:
        if problem != self.problem:
            log.error(
                "%s: %s (logged once; deliveries resume by themselves when it is fixed)",
                self.what,
                problem,
                exc_info=exc_info,
            )
            self.problem = problem

    def ok(self) -> None:
        if self.problem is not None:
            log.warning("%s: usable again", self.what)
            self.problem = None


class DeliveryWorker:
    """A daemon thread that delivers due webhooks: claim, deliver, record, repeat.

    Start one in every server process (after any fork): it wakes at once when
    the same process stores a webhook and polls every ``poll_seconds``
    otherwise, which picks up retries and webhooks stored by other processes.
    Given the process's ``calls``, each delivery first gives way to them.
    With ``retention_days`` above 0 it purges finished webhooks and refusals
    older than that, at most every ``purge_every`` seconds.
    """

    def __init__(
        self,
        outbox: WebhookOutbox,
        deliver: Deliver,
        *,
        poll_seconds: float = POLL_SECONDS,
        owner: str | None = None,
        retention_days: float = 0.0,
        purge_every: float = PURGE_EVERY_SECONDS,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        calls: CallsInFlight | None = None,
    ) -> None:
        self.outbox = outbox
        #: The process's calls, which each delivery gives way to.
        self.calls = calls
        self.deliver = deliver
        self.poll_seconds = poll_seconds
        self.owner = owner or new_owner()
        self.retention_days = retention_days
        self.purge_every = purge_every
        self.renew_every = renew_every or outbox.lease_seconds / RENEWALS_PER_LEASE
        self.clock = clock
        #: Measures how long a delivery took (monotonic: the wall clock may jump).
        self.timer = timer
        self._next_purge = 0.0
        #: Keeps the lease of the webhook being delivered alive.
        self.renewal = LeaseRenewal(outbox, self.owner, every=self.renew_every, clock=clock)
        self._state = _StateLog(f"webhook outbox {outbox.description}")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self.outbox.subscribe(self._wake)
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop after the current delivery and wait for it."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.renewal.stop()
        self.outbox.unsubscribe(self._wake)

    def run_once(self, now: float | None = None) -> bool:
        """Claim and deliver one due webhook; False when none was due."""
        started = self.clock() if now is None else now
        entry = self.outbox.claim(self.owner, started)
        if entry is None:
            return False
        began = self.timer()
        with self.renewal.holding(entry):
            outcome = self._deliver(entry)
        duration_ms = round((self.timer() - began) * 1000)
        # Recorded only while we hold the lease (owner=): after a takeover the new
        # owner's outcome counts.
        finished = self.clock() if now is None else now
        if outcome.error is None:
            self.outbox.mark_delivered(
                entry.id,
                owner=self.owner,
                now=finished,
                started_at=started,
                duration_ms=duration_ms,
            )
        else:
            self.outbox.mark_failed(
                entry.id,
                outcome.error,
                owner=self.owner,
                now=finished,
                started_at=started,
                duration_ms=duration_ms,
                status=outcome.status,
                answer=outcome.answer,
                final=outcome.final,
                retry_after=outcome.retry_after,
            )
        return True

    def _deliver(self, entry: OutboxEntry) -> _Outcome:
        """Hand the webhook to its target; how it went."""
        try:
            self.deliver(entry.target, entry.webhook)
        except Exception as exc:
            if not isinstance(exc, BackendError):
                log.exception("webhook %s to target %r: unexpected error", entry.id, entry.target)
            else:
                log.warning(
                    "webhook %s to target %r failed (attempt %s): %s",
                    entry.id,
                    entry.target,
                    entry.attempts,
                    exc,
                )
            if isinstance(exc, DeliveryFailed):
                return _Outcome(safe_error(exc), exc.status, exc.answer, exc.final, exc.retry_after)
            return _Outcome(safe_error(exc))
        return _Outcome()

    def purge_if_due(self, now: float | None = None) -> Purged | None:
        """Apply the retention if it is time to; what was purged, or None."""
        moment = self.clock() if now is None else now
        if self.retention_days <= 0 or moment < self._next_purge:
            return None
        purged = self.outbox.purge(self.retention_days, moment, max_rows=PURGE_ROWS_PER_PASS)
        # A large backlog is purged a pass at a time, with deliveries in between.
        self._next_purge = moment + (self.purge_every if purged.complete else 0.0)
        if purged.webhooks or purged.refusals:
            log.info(
                "webhook outbox %s: purged %s webhook(s) and %s refusal(s) older than %g days",
                self.outbox.description,
                purged.webhooks,
                purged.refusals,
                self.retention_days,
            )
        return purged

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            if self.calls is not None:
                self.calls.wait_until_idle(GIVE_WAY_SECONDS)
            try:
                delivered = self.run_once()
                if not delivered:
                    self.purge_if_due()
                self._state.ok()
                if delivered:
                    continue
            except OutboxError as exc:
                self._state.failed(str(exc))
            except Exception as exc:
                # A bug must not end deliveries for good, nor fill the log every poll.
                self._state.failed(f"delivery loop error: {exc!r}", exc_info=exc)
            self.outbox.wait_for_work(self._wake, self.poll_seconds)
