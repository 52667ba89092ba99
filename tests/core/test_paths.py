"""Where files nobody configured go: state survives, cache may be deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookup_server.config.settings import default_outbox
from lookup_server.core.paths import cache_dir, state_dir


def test_absolute_xdg_folders_are_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert state_dir() == tmp_path / "state" / "lookup-server"
    assert cache_dir() == tmp_path / "cache" / "lookup-server"


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_unset_empty_or_relative_xdg_folders_mean_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", value)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert state_dir() == tmp_path / ".local" / "state" / "lookup-server"
    assert cache_dir() == tmp_path / ".cache" / "lookup-server"


def test_the_outbox_is_kept_next_to_the_config_when_it_can_be(tmp_path: Path) -> None:
    assert default_outbox(tmp_path) == tmp_path / "lookup-server-outbox.sqlite3"


def test_the_outbox_falls_back_to_the_state_folder_never_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The outbox holds webhooks that exist nowhere else: a cache cleaner must not
    # be allowed to delete them.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    unwritable = tmp_path / "no-such-folder"
    assert default_outbox(unwritable) == tmp_path / "state" / "lookup-server" / "outbox.sqlite3"
