"""The durable webhook outbox: store before answering, deliver later, never lose one.

HelpSpot sends each webhook once, discards the answer and never retries
(HELPSPOT.md §6). So ``POST /webhook/<target>`` stores the webhook here and
answers 202 only after :meth:`Outbox.store` returned: by then it is committed
and synced to disk. A :class:`DeliveryWorker` thread in every server process
then hands it to the target, retrying with exponential backoff.

- :mod:`.interface` — what the rest of the server uses of an outbox
  (:class:`WebhookOutbox`), and :func:`open_outbox`, which picks the store.
- :mod:`.records` — what either store holds and returns, and its limits.
- :mod:`.database` — the SQLite file: opened on first use, errors that say
  what to do, healed after a failure, probed by ``lookup-server check``.
- :mod:`.store` — the webhooks and refusals in it: store, claim under a
  lease, record the outcome with its attempt, list a page at a time, count
  for the console, retry, purge.
- :mod:`.pgdatabase`, :mod:`.postgres` — the same in PostgreSQL, for several
  servers on several hosts: claims with SKIP LOCKED, NOTIFY on store.
- :mod:`.policy` — each target's circuit breaker, limits and order, decided
  the same for both stores, their state kept in the outbox for every process.
- :mod:`.leases` — who holds a lease, and whether that process is gone.
- :mod:`.delivery` — the worker thread, the lease renewal while a delivery
  runs, and the retention purge.

Delivery is at-least-once: a duplicate can only follow a crash (or a process
frozen for longer than its lease) between sending and recording, and it
carries the same idempotency key.
"""

from lookup_server.webhooks.database import OutboxError
from lookup_server.webhooks.delivery import (
    Deliver,
    DeliveryWorker,
    LeaseRenewal,
    safe_error,
)
from lookup_server.webhooks.interface import WebhookOutbox, is_postgres, open_outbox, probe
from lookup_server.webhooks.policy import TargetPolicy, TargetState, TargetStatus, target_statuses
from lookup_server.webhooks.records import (
    BACKOFF_CAP,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    STATES,
    Attempt,
    OutboxEntry,
    OutboxSummary,
    Purged,
    Refusal,
    State,
    backoff_delay,
    parse_moment,
)
from lookup_server.webhooks.store import Outbox

__all__ = [
    "BACKOFF_CAP",
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "STATES",
    "Attempt",
    "Deliver",
    "DeliveryWorker",
    "LeaseRenewal",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxSummary",
    "Purged",
    "Refusal",
    "State",
    "TargetPolicy",
    "TargetState",
    "TargetStatus",
    "WebhookOutbox",
    "backoff_delay",
    "is_postgres",
    "open_outbox",
    "parse_moment",
    "probe",
    "safe_error",
    "target_statuses",
]
