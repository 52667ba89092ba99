"""gunicorn.conf.py's folder for the workers' metrics: made, cleaned, removed.

gunicorn runs the file in its master; here it is run the same way (runpy) and its
hooks are called as gunicorn calls them. The environment is restored after each test.
"""

from __future__ import annotations

import os
import runpy
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import ROOT

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
MADE = "LOOKUP_SERVER_MADE_METRICS_DIR"


def read_settings() -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_without_the_variable_a_fresh_private_folder_is_made_and_removed_at_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv(MADE, raising=False)
    settings = read_settings()
    folder = Path(os.environ[VARIABLE])
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # a configuration reload runs the file again: the same folder, still removed at exit
    read_settings()
    assert os.environ[VARIABLE] == str(folder)
    settings["on_starting"](None)
    settings["on_exit"](None)
    assert not folder.exists()


def test_a_named_folder_is_used_cleaned_of_old_counts_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE, str(tmp_path))
    monkeypatch.delenv(MADE, raising=False)
    (tmp_path / "counter_123.db").write_bytes(b"from an earlier run")
    (tmp_path / "notes.txt").write_text("not ours\n")
    settings = read_settings()
    assert os.environ[VARIABLE] == str(tmp_path)
    settings["on_starting"](None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    settings["on_exit"](None)
    assert tmp_path.is_dir()


def test_a_named_folder_that_is_missing_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE, str(tmp_path / "metrics"))
    read_settings()["on_starting"](None)
    assert (tmp_path / "metrics").is_dir()


def test_an_ended_worker_is_marked_dead_for_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VARIABLE, str(tmp_path))
    # the files prometheus_client keeps per live process (a livesum gauge's)
    (tmp_path / "gauge_livesum_4321.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_999.db").write_bytes(b"")
    (tmp_path / "counter_4321.db").write_bytes(b"")
    read_settings()["child_exit"](None, SimpleNamespace(pid=4321))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_4321.db",  # what the worker counted still counts
        "gauge_livesum_999.db",
    ]
