"""The server's work counted for Prometheus, read by ``GET /metrics``.

Counted with prometheus_client. Under gunicorn each worker is a process of its
own: gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a private folder
before the workers start, every worker writes its counts to files there, and
a scrape answered by any worker adds up all of them. Without that variable
(``lookup-server serve``, the tests) each app counts in a registry of its own.

Label values come from URLs anyone can call: a name that is not a configured
source or target is counted as ``(unknown)``, so that no caller can make the
server keep a series for every name it invents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from lookup_server.telemetry import UNKNOWN_NAME, CallRecord, Telemetry
from lookup_server.webhooks import STATES, OutboxError, TargetState, WebhookOutbox

#: prometheus_client chose where its counts live when it was imported, from this
#: variable (either spelling); read at that same moment, to read them back from there.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ
#: What /metrics is served as: the text format generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: A lookup from a cache or an index takes a millisecond or two, a backend's up to
#: its timeout (5 s by default, at most a few tens).
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A delivery takes up to its target's timeout, at most 300 s.
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: The outcomes that a backend (or our guard of it) caused, counted apart.
BACKEND_FAILURES = frozenset({"backend_error", "timeout", "busy"})


class PrometheusMetrics(Telemetry):
    """Counts every call, cache use and delivery attempt; renders them for a scrape."""

    def __init__(self) -> None:
        #: (endpoint, name, outcome) -> the call counter's and histogram's children.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # In multiprocess mode the counts live in files and a registry would export
        # them twice (prometheus_client's documentation): the metrics join none.
        self._registry = None if MULTIPROCESS else CollectorRegistry()
        registry = self._registry
        self._calls = Counter(
            "lookup_server_calls",
            "HelpSpot calls answered, by endpoint, source (or target) and outcome",
            ("endpoint", "source", "outcome"),
            registry=registry,
        )
        self._call_seconds = Histogram(
            "lookup_server_call_duration_seconds",
            "Time to answer a HelpSpot call, by endpoint and source (or target)",
            ("endpoint", "source"),
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self._backend_errors = Counter(
            "lookup_server_backend_errors",
            "Calls a backend failed (backend_error), ran out of time (timeout) or had no "
            "free slot for (busy), by source (or target) and kind",
            ("source", "kind"),
            registry=registry,
        )
        self._cache_hits = Counter(
            "lookup_server_cache_hits",
            "Answers a source's result cache held",
            ("source",),
            registry=registry,
        )
        self._cache_misses = Counter(
            "lookup_server_cache_misses",
            "Answers a source's result cache did not hold, asked of the backend",
            ("source",),
            registry=registry,
        )
        self._deliveries = Counter(
            "lookup_server_webhook_deliveries",
            "Attempts to deliver a webhook, by target and result (delivered, failed)",
            ("target", "result"),
            registry=registry,
        )
        self._delivery_seconds = Histogram(
            "lookup_server_webhook_delivery_duration_seconds",
            "Time an attempt to deliver a webhook took, by target",
            ("target",),
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )

    def call(self, record: CallRecord) -> None:
        """Count the call, its time and, when a backend failed it, the failure.

        ``record.name`` is a configured name or UNKNOWN_NAME (web/calls.py folds
        the rest), so the labels stay few whatever URLs are sent.
        """
        key = (record.endpoint, record.name, record.outcome)
        children = self._children.get(key)
        if children is None:
            # labels() builds and checks a key each time: a few microseconds a lookup
            children = self._children[key] = (
                self._calls.labels(*key),
                self._call_seconds.labels(record.endpoint, record.name),
            )
        counter, histogram = children
        counter.inc()
        histogram.observe(record.duration_ms / 1000)
        if record.outcome in BACKEND_FAILURES:
            self._backend_errors.labels(record.name, record.outcome).inc()

    def cache(self, source: str, hit: bool) -> None:
        """Count a hit or a miss of ``source``'s cache."""
        (self._cache_hits if hit else self._cache_misses).labels(source).inc()

    def delivery(self, target: str, delivered: bool, seconds: float) -> None:
        """Count a delivery attempt and its time."""
        self._deliveries.labels(target, "delivered" if delivered else "failed").inc()
        self._delivery_seconds.labels(target).observe(seconds)

    def exposition(
        self, outbox: WebhookOutbox | None = None, webhook_targets: Iterable[str] = ()
    ) -> bytes:
        """Everything counted, in every process of the server, as Prometheus text.

        With an ``outbox``, also what it holds now for ``webhook_targets``.
        """
        parts: list[Collector] = [
            # mypy: prometheus_client leaves this class untyped
            MultiProcessCollector(None)  # type: ignore[no-untyped-call]
            if self._registry is None
            else self._registry
        ]
        if outbox is not None:
            parts.append(OutboxGauges(outbox, frozenset(webhook_targets)))
        return generate_latest(_Together(parts))


class OutboxGauges:
    """What the webhook outbox holds, read when a scrape asks (every process sees the same)."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        targets: Collection[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.targets = targets
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """The outbox's gauges; only ``lookup_server_outbox_up`` 0 when it cannot be read."""
        up = GaugeMetricFamily(
            "lookup_server_outbox_up", "1 when the webhook outbox could be read, else 0"
        )
        try:
            counts = self.outbox.counts()
            oldest = self.outbox.oldest_pending()
            states = {state.target: state for state in self.outbox.target_states()}
        except OutboxError:  # the delivery worker logs it; the scrape still answers
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        stored = {(state, target): 0 for state in STATES for target in sorted(self.targets)}
        for (target, state), count in counts.items():
            key = (state, _label(target, self.targets))
            stored[key] = stored.get(key, 0) + count
        webhooks = GaugeMetricFamily(
            "lookup_server_webhooks",
            "Webhooks in the outbox, by state and target",
            labels=("state", "target"),
        )
        for (state, target), count in stored.items():
            webhooks.add_metric([state, target], count)
        yield webhooks
        yield GaugeMetricFamily(
            "lookup_server_webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook not yet delivered (pending or being delivered); "
            "0 when there is none",
            value=0.0 if oldest is None else max(0.0, self.clock() - oldest),
        )
        yield from _breaker_gauges(
            [states.get(target, TargetState(target)) for target in sorted(self.targets)]
        )


def _breaker_gauges(states: Iterable[TargetState]) -> Iterator[Metric]:
    """Each target's breaker as the outbox's shared row holds it (no row yet: at rest)."""
    paused = GaugeMetricFamily(
        "lookup_server_webhook_target_paused",
        "1 while the target's circuit breaker holds its webhooks back (open), else 0",
        labels=("target",),
    )
    failures = GaugeMetricFamily(
        "lookup_server_webhook_consecutive_failures",
        "Failed attempts in a row at delivering the target's webhooks, as its breaker counts "
        "them (a delivery sets it to 0)",
        labels=("target",),
    )
    for state in states:
        paused.add_metric([state.target], 1 if state.paused else 0)
        failures.add_metric([state.target], state.consecutive_failures)
    yield paused
    yield failures


class _Together:
    """Several collectors read as one (what generate_latest takes)."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self.parts = tuple(parts)

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def _label(name: str, known: Collection[str]) -> str:
    """``name`` when it is one of ``known``, else UNKNOWN_NAME: label values stay few."""
    return name if name in known else UNKNOWN_NAME
