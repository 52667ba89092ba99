"""How each target's webhooks are let through: its circuit breaker, decided the same by both stores.

After ``breaker_failures`` consecutive retryable failures the target is
*paused*: its webhooks wait, unclaimed and so uncounted, and every
``breaker_probe_seconds`` one of them is let through as a probe (only while
none of the target's webhooks is in flight). A delivery resumes the target; a
retryable failure keeps it paused. A final failure (the peer refused that one
webhook) says nothing about the target and changes nothing.

The state lives in the outbox (a row per target), so every process and server
sharing the outbox sees the same breaker: two workers never each hammer a dead
target. A target may also cap its deliveries in flight (``max_concurrent``),
counted from the live leases at each claim, and a rate (``max_per_second``):
each claim of one of its webhooks puts the target's next claim 1/rate seconds
on (``next_claim_at`` in its row). An ``ordered`` target's webhooks of one
HelpSpot request go in the order they arrived: the stores' claims skip one
while an earlier one of its request is pending or delivering (a failed one, a
dead letter, no longer holds the rest back). The stores run the SQL; this
module decides.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

#: What became of one attempt, as the breaker counts it.
Outcome = Literal["delivered", "retryable", "final"]


@dataclass(frozen=True)
class TargetPolicy:
    """The delivery settings of one target (from its ``[targets.NAME]`` table)."""

    #: Consecutive retryable failures that pause the target; 0: never paused.
    breaker_failures: int = 0
    #: While paused, one webhook is let through this often to see if it is back.
    breaker_probe_seconds: float = 60.0
    #: Deliveries of this target in flight at once, across the whole outbox; 0: any.
    max_concurrent: int = 0
    #: Claims of this target's webhooks per second, across the whole outbox; 0: any.
    max_per_second: float = 0.0
    #: Webhooks of one HelpSpot request delivered in the order they arrived.
    ordered: bool = False

    @property
    def shared(self) -> bool:
        """Whether claims must read and write the target's shared state."""
        return self.breaker_failures > 0 or self.max_concurrent > 0 or self.max_per_second > 0


@dataclass(frozen=True)
class TargetState:
    """One target's row in the outbox's shared state."""

    target: str
    consecutive_failures: int = 0
    #: When the breaker opened (epoch s); 0 while it is closed.
    paused_since: float = 0.0
    #: While paused: when the next probe may be claimed.
    next_probe_at: float = 0.0
    #: With max_per_second: the target's webhooks are not claimed before this (epoch s).
    next_claim_at: float = 0.0

    @property
    def paused(self) -> bool:
        """Whether the breaker is open."""
        return self.paused_since > 0


def blocked_targets(
    policies: Mapping[str, TargetPolicy],
    states: Mapping[str, TargetState],
    in_flight: Mapping[str, int],
    now: float,
) -> set[str]:
    """The targets none of whose webhooks may be claimed at ``now``."""
    blocked = set()
    for target, policy in policies.items():
        state = states.get(target, TargetState(target))
        busy = in_flight.get(target, 0)
        if state.paused and (state.next_probe_at > now or busy > 0):
            blocked.add(target)
        if 0 < policy.max_concurrent <= busy:
            blocked.add(target)
        if policy.max_per_second > 0 and state.next_claim_at > now:
            blocked.add(target)
    return blocked


def claimable_at(
    policies: Mapping[str, TargetPolicy], states: Mapping[str, TargetState], now: float
) -> float | None:
    """When the first target held back by its rate may be claimed again; None if none is."""
    waits = [
        state.next_claim_at
        for target, state in states.items()
        if policies.get(target, TargetPolicy()).max_per_second > 0 and state.next_claim_at > now
    ]
    return min(waits, default=None)


def sooner(at: float | None, next_claim_at: float, now: float) -> float | None:
    """The earlier of ``at`` and a target's ``next_claim_at`` (when still to come)."""
    if next_claim_at <= now:
        return at
    return next_claim_at if at is None else min(at, next_claim_at)


def until_claimable(timeout: float, at: float | None, now: float) -> float:
    """``timeout``, shortened so that a wait ends when a rate-limited target is claimable."""
    if at is None:
        return timeout
    return max(0.0, min(timeout, at - now))


def after_claim(state: TargetState, policy: TargetPolicy, now: float) -> TargetState:
    """The state once one of its webhooks was claimed (a probe, while paused)."""
    if state.paused:
        state = dataclasses.replace(state, next_probe_at=now + policy.breaker_probe_seconds)
    if policy.max_per_second > 0:
        state = dataclasses.replace(state, next_claim_at=now + 1.0 / policy.max_per_second)
    return state


def after_attempt(
    state: TargetState, policy: TargetPolicy, outcome: Outcome, now: float
) -> TargetState:
    """The state once an attempt had ``outcome``."""
    if outcome == "delivered":
        return dataclasses.replace(
            state, consecutive_failures=0, paused_since=0.0, next_probe_at=0.0
        )
    if outcome == "final":
        return state
    failures = state.consecutive_failures + 1
    if state.paused or (0 < policy.breaker_failures <= failures):
        return dataclasses.replace(
            state,
            consecutive_failures=failures,
            paused_since=state.paused_since or now,
            next_probe_at=now + policy.breaker_probe_seconds,
        )
    return dataclasses.replace(state, consecutive_failures=failures)


def log_change(before: TargetState, after: TargetState, policy: TargetPolicy) -> None:
    """One line when the breaker opens or closes, never one per attempt."""
    if after.paused and not before.paused:
        log.warning(
            "webhook target %r paused after %s consecutive failed attempts; its webhooks "
            "wait, and one is let through every %g s to see whether it is back",
            after.target,
            after.consecutive_failures,
            policy.breaker_probe_seconds,
        )
    elif before.paused and not after.paused:
        log.warning(
            "webhook target %r resumed: a delivery succeeded after %s failed attempts",
            after.target,
            before.consecutive_failures,
        )


@dataclass(frozen=True)
class TargetStatus:
    """One target's delivery as the console, ``check`` and /metrics show it: breaker and limits."""

    policy: TargetPolicy
    state: TargetState

    @property
    def target(self) -> str:
        """The target's name."""
        return self.state.target

    @property
    def has_breaker(self) -> bool:
        """Whether the target is ever paused (``breaker_failures`` set)."""
        return self.policy.breaker_failures > 0

    @property
    def paused(self) -> bool:
        """Whether its breaker holds its webhooks back now (open)."""
        return self.state.paused

    def limits(self) -> list[str]:
        """The limits configured, as the config writes them (none: an empty list)."""
        policy, shown = self.policy, []
        if policy.max_concurrent > 0:
            shown.append(f"max_concurrent = {policy.max_concurrent}")
        if policy.max_per_second > 0:
            shown.append(f"max_per_second = {policy.max_per_second:g}")
        if policy.ordered:
            shown.append("ordered = true")
        return shown

    def next_claim_at(self, now: float) -> float | None:
        """While its rate holds it back: when its next webhook may be claimed; else None."""
        if self.policy.max_per_second > 0 and self.state.next_claim_at > now:
            return self.state.next_claim_at
        return None


def target_statuses(
    names: Iterable[str], policies: Mapping[str, TargetPolicy], states: Iterable[TargetState]
) -> list[TargetStatus]:
    """The status of each named target, by name, from the outbox's rows (none yet: at rest)."""
    rows = {state.target: state for state in states}
    return [
        TargetStatus(policies.get(name, TargetPolicy()), rows.get(name, TargetState(name)))
        for name in sorted(names)
    ]
