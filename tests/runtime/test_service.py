"""The core's deadline: a call past its source's timeout is aborted, and its thread comes back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from lookup_server.config.settings import SourceConfig
from lookup_server.core.models import LookupQuery
from lookup_server.plugin import (
    BackendTimeout,
    ById,
    Customer,
    NoOptions,
    SearchTerm,
    SourceBackend,
    SourceSettings,
    abort_on_timeout,
    timed_out,
)
from lookup_server.runtime.service import Busy, Source, TimedOut
from tests.support.hanging import hang_every_slot, wait_for

TIMEOUT = 0.3


class Blocking(SourceBackend[NoOptions]):
    """Blocks in ``find`` until released; what ``abort_hook`` does decides how it is aborted."""

    hang = True
    steps: list[str]

    def __init__(self, options: NoOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self.steps = []
        self.lock = threading.Lock()

    def block(self) -> None:
        """One blocking step, ended by its abort hook."""
        released = threading.Event()
        with abort_on_timeout(self.abort_hook(released)):
            if self.hang:
                released.wait(60)

    def abort_hook(self, released: threading.Event) -> Callable[[], None]:
        return released.set

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        self.block()
        return [Customer({"customer_id": "1"})]


def source_of(backend_class: type[SourceBackend[Any]]) -> Source:
    return Source(
        SourceConfig(
            SourceSettings("slow", "blocking", timeout=TIMEOUT), backend_class, NoOptions()
        )
    )


QUERY = LookupQuery(customer_id="1")


def test_a_timed_out_call_is_aborted_and_the_source_answers_again() -> None:
    source = source_of(Blocking)
    hang_every_slot(source, lambda: source.lookup(QUERY))
    assert isinstance(source.backend, Blocking)
    source.backend.hang = False
    assert [c.customer_id for c in source.lookup(QUERY)] == ["1"]


class LateHook(Blocking):
    """A hook that finds nothing to act on the first time (a socket still connecting)."""

    def abort_hook(self, released: threading.Event) -> Callable[[], None]:
        tries: list[int] = []

        def abort() -> None:
            tries.append(1)
            if len(tries) > 1:
                released.set()

        return abort


def test_the_abort_is_repeated_while_the_call_has_not_returned() -> None:
    source = source_of(LateHook)
    hang_every_slot(source, lambda: source.lookup(QUERY))


class Steps(Blocking):
    """Several blocking steps in a row, each in its own abortable block."""

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        for step in ("connect", "bind", "search"):
            released = threading.Event()
            with abort_on_timeout(released.set):
                with self.lock:
                    self.steps.append(step)
                released.wait(60)
            assert timed_out(), "only an aborted step ends"
        return []


def test_no_step_starts_once_the_call_was_aborted() -> None:
    source = source_of(Steps)
    hang_every_slot(source, lambda: source.lookup(QUERY))
    assert isinstance(source.backend, Steps)
    assert source.backend.steps == ["connect"] * 8


class FinishedHook(Blocking):
    """Leaves one abortable block, then blocks where nothing can abort it."""

    def __init__(self, options: NoOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self.stale_aborts = 0
        self.release = threading.Event()

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        def stale() -> None:
            self.stale_aborts += 1

        with abort_on_timeout(stale):
            pass  # e.g. a query that finished: its connection went back to the pool
        self.release.wait(60)
        return []


def test_a_hook_never_runs_after_its_block_ended(caplog: pytest.LogCaptureFixture) -> None:
    source = source_of(FinishedHook)
    backend: Any = source.backend
    try:
        with pytest.raises(TimedOut):
            source.lookup(QUERY)
        wait_for(lambda: "could not be aborted" in caplog.text, "the core says so in its log")
        assert backend.stale_aborts == 0
    finally:
        backend.release.set()


def test_a_call_that_cannot_be_aborted_keeps_its_slot_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = source_of(FinishedHook)
    backend: Any = source.backend
    caplog.set_level(logging.WARNING, "lookup_server.runtime.service")
    try:
        for _ in range(8):
            with pytest.raises(TimedOut):
                source.lookup(QUERY)
        with pytest.raises(Busy):
            source.lookup(QUERY)
        wait_for(lambda: caplog.text.count("could not be aborted") == 8, "8 warnings")
        assert (
            "source 'slow': a call is still running 1 s after its timeout of 0.3 s" in caplog.text
        )
    finally:
        backend.release.set()
    runner = source._runner
    assert runner is not None
    wait_for(lambda: runner.in_flight == 0, "the released calls returned their slots")


def test_outside_the_core_nothing_is_aborted() -> None:
    with abort_on_timeout(lambda: pytest.fail("no deadline applies here")):
        assert not timed_out()
    backend = Blocking(NoOptions(), SourceSettings("s", "blocking"))
    backend.hang = False
    assert backend.find(ById("1"), 1)


def test_a_block_entered_after_the_abort_raises_backend_timeout() -> None:
    from lookup_server.core.calls import RunningCall

    call = RunningCall()
    call.abort()
    with call.bound(), pytest.raises(BackendTimeout), abort_on_timeout(lambda: None):
        pytest.fail("the block must not run")
