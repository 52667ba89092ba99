"""Skip-or-fail for tests that need a real server or tool.

On a laptop without slapd, a database or php-cli, those tests skip with the
reason. Under ``CI=true`` a missing server is a failure: CI must never go
green by skipping what it was meant to test.
"""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    """True when running in CI (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def need(available: bool, reason: str) -> None:
    """Skip (or, under CI, fail) the calling test unless ``available``."""
    if available:
        return
    if under_ci():
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)")
    pytest.skip(reason)
