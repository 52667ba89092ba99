"""The console's activity store: recent calls and per-minute figures, shared by processes."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from lookup_server.telemetry import CallRecord, outcome_for
from lookup_server.telemetry.activity import (
    BOUNDS_MS,
    KEEP_CALLS,
    Activity,
    percentile,
)

NOW = 1_800_000_000.0


def record(
    at: float = NOW, duration_ms: float = 5.0, outcome: str = "found", **kw: object
) -> CallRecord:
    values: dict[str, object] = {
        "at": at,
        "endpoint": "livelookup",
        "name": "crm",
        "outcome": outcome,
        "status": 200,
        "duration_ms": duration_ms,
        "count": 1,
    }
    values.update(kw)
    return CallRecord(**values)  # type: ignore[arg-type]


def test_calls_come_back_newest_first_and_filtered(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    for i in range(3):
        activity.call(record(at=NOW + i, path=f"/livelookup/crm?n={i}"))
    activity.call(record(at=NOW + 9, endpoint="ajax", name="products", outcome="none"))
    activity.flush()
    assert [c.path for c in activity.recent(endpoint="livelookup")] == [
        "/livelookup/crm?n=2",
        "/livelookup/crm?n=1",
        "/livelookup/crm?n=0",
    ]
    assert [c.name for c in activity.recent(outcome="none")] == ["products"]
    assert activity.recent(limit=1)[0].endpoint == "ajax"


def test_only_the_last_calls_are_kept(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    for i in range(KEEP_CALLS + 20):
        activity.call(record(at=NOW + i))
    activity.flush()
    kept = activity.recent(limit=10 * KEEP_CALLS)
    assert len(kept) == KEEP_CALLS and kept[-1].at == NOW + 20


def test_figures_count_calls_errors_and_percentiles_per_minute(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    for i in range(99):
        activity.call(record(at=NOW - 120 + i % 60, duration_ms=2.0))
    activity.call(record(at=NOW, duration_ms=900.0, outcome="timeout", status=504, detail="slow"))
    activity.flush()
    figures = activity.figures("source", ["crm", "other"], now=NOW)
    crm = figures["crm"]
    assert (crm.calls, crm.errors) == (100, 1)
    assert crm.p50_ms is not None and 1.6 <= crm.p50_ms <= 2.4  # within one bucket
    assert crm.p99_ms is not None and crm.p99_ms <= 2.4  # 99 of 100 took 2 ms
    assert len(crm.per_minute) == 60 and crm.per_minute[-1] == (1, 1)
    assert sum(c for c, _ in crm.per_minute) == 100
    assert figures["other"].calls == 0 and figures["other"].p50_ms is None
    assert activity.last_errors("source")["crm"].detail == "slow"
    assert activity.last_errors("target") == {}


def test_figures_older_than_the_hour_are_left_out(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    activity.call(record(at=NOW - 3 * 3600))
    activity.call(record(at=NOW))
    activity.flush()
    assert activity.figures("source", ["crm"], now=NOW)["crm"].calls == 1


def test_a_source_and_a_target_of_one_name_are_counted_apart(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    activity.call(record(endpoint="livelookup"))
    activity.call(record(endpoint="webhook", outcome="accepted", status=202, count=None))
    activity.call(record(endpoint="push", outcome="backend_error", status=502, count=None))
    activity.flush()
    assert activity.figures("source", ["crm"], now=NOW)["crm"].calls == 1
    target = activity.figures("target", ["crm"], now=NOW)["crm"]
    assert (target.calls, target.errors) == (2, 1)


def _write_calls(path: str, count: int) -> None:
    activity = Activity(Path(path))
    for _ in range(count):
        activity.call(record())
    activity.flush()


def test_every_process_of_a_server_adds_to_the_same_figures(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_calls, args=(str(path), 50)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert Activity(path).figures("source", ["crm"], now=NOW)["crm"].calls == 150


def test_the_writer_thread_writes_without_being_asked(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3", flush_seconds=0.05)
    activity.call(record())
    import time

    deadline = time.monotonic() + 10
    while not activity.recent() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(activity.recent()) == 1


def test_the_file_is_for_the_servers_user_only(tmp_path: Path) -> None:
    activity = Activity(tmp_path / "a.sqlite3")
    activity.call(record())
    activity.flush()
    assert stat.S_IMODE(os.stat(tmp_path / "a.sqlite3").st_mode) == 0o600


def test_a_file_that_cannot_be_written_loses_figures_not_calls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    activity = Activity(tmp_path / "file" / "a.sqlite3")
    for _ in range(3):
        activity.call(record())
        activity.flush()  # must not raise
    assert len([r for r in caplog.records if "cannot be written" in r.getMessage()]) == 1


def test_percentiles_interpolate_within_a_bucket() -> None:
    histogram = [0] * (len(BOUNDS_MS) + 1)
    assert percentile(histogram, 0.5) is None
    histogram[10] = 4  # (BOUNDS_MS[9], BOUNDS_MS[10]]
    middle = percentile(histogram, 0.5)
    assert middle is not None and BOUNDS_MS[9] < middle < BOUNDS_MS[10]


@pytest.mark.parametrize(
    ("status", "count", "outcome"),
    [
        (200, 2, "found"),
        (200, 0, "none"),
        (200, None, "ok"),
        (202, None, "accepted"),
        (403, None, "refused"),
        (404, None, "unknown"),
        (414, None, "too_long"),
        (502, None, "backend_error"),
        (503, None, "busy"),
        (504, None, "timeout"),
        (500, None, "error"),
        (418, None, "bad_request"),
    ],
)
def test_outcomes_follow_the_status(status: int, count: int | None, outcome: str) -> None:
    assert outcome_for(status, count) == outcome
