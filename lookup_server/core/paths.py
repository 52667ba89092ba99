"""Where lookup-server keeps files nobody configured a path for (XDG base directories).

Two kinds, kept apart on purpose: *state* must survive (the webhook outbox, the
record of pushes), *cache* may be deleted at any time and is rebuilt (a CSV's
index). Both live in a ``lookup-server`` folder of the user's base directory.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "lookup-server"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/lookup-server`` (``~/.local/state/lookup-server`` by default)."""
    return _base("XDG_STATE_HOME", Path(".local") / "state") / APP


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lookup-server`` (``~/.cache/lookup-server`` by default)."""
    return _base("XDG_CACHE_HOME", Path(".cache")) / APP


def _base(variable: str, under_home: Path) -> Path:
    # The XDG spec: an unset, empty or relative value means the default.
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / under_home
