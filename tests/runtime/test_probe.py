"""``lookup-server check`` as a function: one line per source, target and the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lookup_server.config.settings import Config, config_from_mapping
from lookup_server.core.registry import SOURCES_GROUP, TARGETS_GROUP, Registry
from lookup_server.plugin import (
    BackendError,
    Customer,
    NoOptions,
    Option,
    OptionsQuery,
    SearchTerm,
    SourceBackend,
    TargetBackend,
    Webhook,
)
from lookup_server.runtime.probe import breaker_lines, probe_all
from lookup_server.webhooks import TargetPolicy, open_outbox
from tests.support.postgres import OUTBOX_KINDS, outbox_of_kind
from tests.webhooks.conftest import T0

HERE = "tests.runtime.test_probe"


@dataclass(frozen=True)
class ProbeOptions:
    check: str = "ok"  # ok | warn | fail | hang
    options: list[str] = field(default_factory=list)


class Probed(SourceBackend[ProbeOptions]):
    """A source whose check() passes, warns, fails or hangs, and offers ``options``."""

    Options = ProbeOptions
    closed: ClassVar[list[str]] = []
    release = threading.Event()

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        return []

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        return [Option(value, f"{value} described") for value in self.options.options]

    def check(self) -> list[str]:
        if self.options.check == "fail":
            raise BackendError("the directory refused the bind")
        if self.options.check == "hang":
            Probed.release.wait(30)
        return ["cleartext bind"] if self.options.check == "warn" else []

    def close(self) -> None:
        Probed.closed.append(self.source.name)


class Hook(TargetBackend[NoOptions]):
    Options = NoOptions

    def deliver(self, webhook: Webhook) -> None:
        pass


def config(tmp_path: Path, raw: dict[str, Any]) -> Config:
    registry = Registry(
        [
            EntryPoint("probed", f"{HERE}:Probed", SOURCES_GROUP),
            EntryPoint("hook", f"{HERE}:Hook", TARGETS_GROUP),
        ]
    )
    return config_from_mapping(raw, tmp_path, registry=registry)


def lines(config: Config) -> list[str]:
    return [line for line, _ in probe_all(config)]


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    Probed.closed.clear()
    Probed.release.clear()
    yield
    Probed.release.set()


def test_each_source_gets_a_line_with_its_capabilities_and_warnings(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"sources": {"a": {"backend": "probed", "check": "warn"}}})
    assert list(probe_all(cfg)) == [
        ("ok   sources.a (probed: ajax, livelookup)", True),
        ("     warning: cleartext bind", True),
    ]
    assert Probed.closed == ["a"]


def test_a_failing_check_fails_and_the_backend_is_still_closed(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"sources": {"a": {"backend": "probed", "check": "fail"}}})
    assert list(probe_all(cfg)) == [
        ("FAIL sources.a (probed: ajax, livelookup): the directory refused the bind", False)
    ]
    assert Probed.closed == ["a"]


def test_a_check_that_hangs_fails_at_the_sources_timeout(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, {"sources": {"a": {"backend": "probed", "check": "hang", "timeout": 0.2}}}
    )
    assert lines(cfg) == ["FAIL sources.a (probed: ajax, livelookup): no answer within 0.2 s"]


def test_ajax_options_helpspot_would_mangle_are_warned_about(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, {"sources": {"a": {"backend": "probed", "options": ["0", "Zürich", "ok"]}}}
    )
    found = lines(cfg)
    assert found[0].startswith("ok   sources.a")
    assert "option '0 described' has the value 0" in found[1]
    assert "option value 'Zürich' is not ASCII" in found[2]
    assert "option description 'Zürich described' is not ASCII; set ascii = true" in found[3]
    assert len(found) == 4


def test_a_shared_key_that_opens_ajax_fields_is_warned_about(tmp_path: Path) -> None:
    sources = {"a": {"backend": "probed"}}
    shared = config(tmp_path, {"server": {"shared_key": "k" * 32}, "sources": sources})
    assert "set [server] ajax_key" in lines(shared)[0]
    own = {"shared_key": "k" * 32, "ajax_key": "a" * 32}
    assert not any(
        "ajax_key" in line for line in lines(config(tmp_path, {"server": own, "sources": sources}))
    )


def test_the_outbox_is_probed_only_when_a_target_takes_webhooks(tmp_path: Path) -> None:
    sources = {"a": {"backend": "probed"}}
    assert not any("outbox" in line for line in lines(config(tmp_path, {"sources": sources})))
    cfg = config(tmp_path, {"sources": sources, "targets": {"t": {"backend": "hook"}}})
    found = lines(cfg)
    assert found[1] == "ok   targets.t (hook: webhook)"
    assert found[2].startswith("ok   server.outbox ")


def test_each_breaker_shows_its_state_and_a_paused_target_is_no_failure(tmp_path: Path) -> None:
    targets = {
        "t": {"backend": "hook", "breaker_failures": 2, "breaker_probe_seconds": 60},
        "u": {"backend": "hook", "breaker_failures": 1},
        "off": {"backend": "hook"},
    }
    cfg = config(tmp_path, {"targets": targets})
    assert not any("targets.u:" in line for line in lines(cfg))  # no outbox yet...
    assert not Path(cfg.server.outbox_location).exists()  # ...and check made none
    outbox = open_outbox(
        cfg.server.outbox_location, policies={"t": TargetPolicy(breaker_failures=2)}
    )
    for moment in (T0, T0 + 1):
        outbox.store("t", {"xRequest": "1"}, now=moment)
        entry = outbox.claim("w", now=moment + 100)
        assert entry is not None
        outbox.mark_failed(entry.id, "HTTP 503", owner="w", now=moment + 100)
    results = list(probe_all(cfg))
    assert all(ok for _, ok in results)
    found = [line for line, _ in results]
    assert (
        "     warning: targets.t: paused since 2027-01-15 08:01:41 UTC after 2 consecutive "
        "failed attempts; next probe 2027-01-15 08:02:41 UTC"
    ) in found
    assert "     targets.u: delivering (breaker closed, 0 consecutive failed attempts)" in found
    assert not any("targets.off:" in line for line in found)


@pytest.fixture(params=OUTBOX_KINDS)
def outbox_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The outbox read: a SQLite file, or a PostgreSQL database (a schema of its own)."""
    with outbox_of_kind(request.param, tmp_path) as location:
        yield location


def test_each_target_shows_its_breaker_failures_limits_and_next_claim(
    tmp_path: Path, outbox_location: str
) -> None:
    targets = {
        "paced": {"backend": "hook", "max_per_second": 0.5, "max_concurrent": 2, "ordered": True},
        "shaky": {"backend": "hook", "breaker_failures": 3, "max_concurrent": 1},
        "free": {"backend": "hook"},
    }
    cfg = config(tmp_path, {"server": {"outbox": outbox_location}, "targets": targets})
    policies = {
        "paced": TargetPolicy(max_per_second=0.5, max_concurrent=2, ordered=True),
        "shaky": TargetPolicy(breaker_failures=3, max_concurrent=1),
    }
    outbox = open_outbox(cfg.server.outbox_location, policies=policies)
    try:
        for target in ("paced", "shaky"):
            outbox.store(target, {"xRequest": "1"}, now=T0)
        claimed = [outbox.claim("w", now=T0 + 100) for _ in range(2)]
        for entry in claimed:
            assert entry is not None
            outbox.mark_failed(entry.id, "HTTP 503", owner="w", now=T0 + 100)
    finally:
        getattr(outbox, "close", lambda: None)()
    found = [line for line, _ in breaker_lines(cfg, now=T0 + 101)]
    assert found == [
        "     targets.paced: delivering (no breaker, 1 consecutive failed attempts); "
        "limits: max_concurrent = 2, max_per_second = 0.5, ordered = true; "
        "rate-limited, next claim 2027-01-15 08:01:42 UTC",
        "     targets.shaky: delivering (breaker closed, 1 consecutive failed attempts); "
        "limits: max_concurrent = 1",
    ]
    # once the rate allows a claim again, no next claim is shown
    later = [line for line, _ in breaker_lines(cfg, now=T0 + 103)]
    assert later[0].endswith("ordered = true")
