"""``lookup-server check``: probe every configured source and target, and the outbox.

Each source and target is probed within its own timeout; the webhook outbox
is checked too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lookup_server.config.settings import Config, SourceConfig, TargetConfig
from lookup_server.core.backend import Backend, BackendError
from lookup_server.core.models import OptionsQuery
from lookup_server.core.sources import SourceBackend, SourceSettings
from lookup_server.runtime.service import (
    DeadlineRunner,
    Plugged,
    ServiceError,
    create_backend,
)
from lookup_server.webhooks import (
    OutboxError,
    TargetStatus,
    is_postgres,
    open_outbox,
    target_statuses,
)
from lookup_server.webhooks import probe as probe_outbox
from lookup_server.webhooks.intake import policy_of

log = logging.getLogger(__name__)


def probe_all(config: Config) -> Iterator[tuple[str, bool]]:
    """Report lines for every source and target, each with whether it can serve.

    The outbox gets a line too when a target takes webhooks.
    """
    yield from key_warnings(config)
    for kind, configs in (("sources", config.sources), ("targets", config.targets)):
        for name, backend_config in configs.items():
            yield from _probe_one(f"{kind}.{name}", backend_config)
    if any("webhook" in t.backend_class.capabilities() for t in config.targets.values()):
        ok, detail = probe_outbox(config.server.outbox_location)
        yield (f"ok   server.outbox {detail}" if ok else f"FAIL server.outbox: {detail}"), ok
        if ok:
            yield from breaker_lines(config)


def breaker_lines(config: Config, now: float | None = None) -> Iterator[tuple[str, bool]]:
    """Each target's breaker and limits as the outbox holds them (a paused target is no failure).

    Only targets with a breaker or a limit get a line: the others are never held back.
    """
    location = config.server.outbox_location
    if not is_postgres(location) and not Path(location).exists():
        return  # no webhook yet: nothing to say, and check creates nothing
    policies = {
        name: policy_of(target.settings)
        for name, target in config.targets.items()
        if "webhook" in target.backend_class.capabilities()
    }
    shown = [name for name, policy in policies.items() if policy.shared or policy.ordered]
    if not shown:
        return
    outbox = open_outbox(location, lazy=True)
    try:
        statuses = target_statuses(shown, policies, outbox.target_states())
    except OutboxError as exc:
        yield f"FAIL server.outbox: {exc}", False
        return
    finally:
        close = getattr(outbox, "close", None)  # PostgreSQL's pool
        if close is not None:
            close()
    moment = time.time() if now is None else now
    for status in statuses:
        yield delivery_line(status, moment), True


def delivery_line(status: TargetStatus, now: float) -> str:
    """One target's breaker, consecutive failures, limits and next claim, as ``check`` says it."""
    state, name = status.state, status.target
    if status.paused:
        line = (
            f"     warning: targets.{name}: paused since {_when(state.paused_since)} after "
            f"{state.consecutive_failures} consecutive failed attempts; next probe "
            f"{_when(state.next_probe_at)}"
        )
    else:
        breaker = "breaker closed" if status.has_breaker else "no breaker"
        line = (
            f"     targets.{name}: delivering ({breaker}, "
            f"{state.consecutive_failures} consecutive failed attempts)"
        )
    if status.limits():
        line += "; limits: " + ", ".join(status.limits())
    next_claim = status.next_claim_at(now)
    if next_claim is not None:
        line += f"; rate-limited, next claim {_when(next_claim)}"
    return line


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def key_warnings(config: Config) -> Iterator[tuple[str, bool]]:
    """A key that staff can read and that opens more than AJAX fields."""
    server = config.server
    ajax_sources = [
        name
        for name, source in config.sources.items()
        if "ajax" in source.backend_class.capabilities()
    ]
    if ajax_sources and "ajax" not in server.endpoint_keys and server.shared_key is not None:
        yield (
            (
                "warning: AJAX fields open with [server] shared_key, which HelpSpot writes "
                "into every request page, so every staff member can read the key that opens "
                "Live Lookup, pushes and webhooks too; set [server] ajax_key"
            ),
            True,
        )


def _probe_one(path: str, config: SourceConfig | TargetConfig) -> Iterator[tuple[str, bool]]:
    capabilities = config.backend_class.capabilities()
    label = f"{path} ({config.settings.backend}: {', '.join(sorted(capabilities))})"
    backend = create_backend(config)
    timeout = config.settings.timeout
    findings = partial(_findings, backend)
    try:
        if config.backend_class.waits_on_network:
            warnings = DeadlineRunner(config.settings.name, max_in_flight=1).run(findings, timeout)
        else:  # called inline when serving too; a CSV may first need indexing, for seconds
            warnings = findings()
    except TimeoutError:
        yield f"FAIL {label}: no answer within {timeout:g} s", False
        yield from _status_lines(backend)
        return
    except (BackendError, ServiceError) as exc:
        yield f"FAIL {label}: {exc}", False
        yield from _status_lines(backend)
        return
    finally:
        backend.close()
    yield f"ok   {label}", True
    yield from _status_lines(backend)
    for warning in warnings:
        yield f"     warning: {warning}", True


def _status_lines(backend: Backend[Any]) -> Iterator[tuple[str, bool]]:
    """What the backend says of its own state (a mirror's age): facts, not failures."""
    for line in backend_status(backend):
        yield f"     {line}", True


def backend_status(backend: Backend[Any]) -> list[str]:
    """``backend.status()``; a backend that cannot say is logged, not a failed check."""
    try:
        return backend.status()
    except Exception:  # a plugin's bug must not hide the check's own verdict
        log.exception("%s: status() failed", type(backend).__name__)
        return []


@dataclass(frozen=True)
class Health:
    """What a running source's or target's check() said, and when."""

    ok: bool
    at: float
    #: Why it cannot serve, when not ok.
    problem: str = ""
    warnings: tuple[str, ...] = ()
    #: What the backend says of its own state (a mirror's age), whether ok or not.
    notes: tuple[str, ...] = ()


def check_live(item: Plugged[Any]) -> Health:
    """Check a source or target of the running server (the console), within its timeout.

    Unlike ``lookup-server check`` it uses the backend that serves HelpSpot,
    so it sees that backend's connections and state.
    """
    at = time.time()
    notes = tuple(backend_status(item.backend))
    try:
        warnings = item.check(_findings)
    except ServiceError as exc:
        return Health(False, at, exc.reason, notes=notes)
    except BackendError as exc:
        return Health(False, at, str(exc), notes=notes)
    return Health(True, at, warnings=tuple(warnings), notes=notes)


def _findings(backend: Backend[Any]) -> list[str]:
    warnings = backend.check()
    if isinstance(backend, SourceBackend) and "ajax" in backend.capabilities():
        warnings += ajax_warnings(backend, backend.source)
    return warnings


def ajax_warnings(backend: SourceBackend[Any], settings: SourceSettings) -> list[str]:
    """What HelpSpot would get wrong in the options an empty search returns."""
    try:
        options = backend.find_options(OptionsQuery(), settings.max_results)
    except BackendError:
        return []  # a Live Lookup-only source: nothing to warn about
    warnings = []
    for option in options:
        if option.value == "0":
            warnings.append(
                f"option {option.description!r} has the value 0, which HelpSpot "
                "turns into an empty value; use another value"
            )
        if not option.value.isascii():
            warnings.append(
                f"option value {option.value!r} is not ASCII; HelpSpot reads "
                "AJAX answers as ISO-8859-1 and will store it mangled"
            )
        if not option.description.isascii() and not settings.ascii:
            warnings.append(
                f"option description {option.description!r} is not ASCII; set "
                "ascii = true to transliterate descriptions"
            )
    return warnings
