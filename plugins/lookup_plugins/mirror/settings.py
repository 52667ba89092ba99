"""How often a mirror refreshes, how old it may grow, and where it lives."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from lookup_server.plugin import state_dir

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: ``mirror_max_age`` when none is configured: a stale mirror is never served silently.
DEFAULT_MAX_AGE = 86400.0
#: The shortest refresh interval: each pass reads at least the list of keys.
MIN_INTERVAL = 1.0


def parse_duration(text: str) -> float:
    """Seconds of ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` (a bare number is seconds)."""
    match = _DURATION.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f'{text!r} is not a duration like "30s", "5m", "1h" or "1d"')
    return float(match[1]) * _UNITS[match[2].lower()]


def duration_text(seconds: float) -> str:
    """A duration as people read it: ``42 s``, ``3 min``, ``2.5 h``, ``1.5 d``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


@dataclass(frozen=True)
class MirrorSettings:
    """One source's mirror: refresh interval, the age limit, its folder (all seconds)."""

    source: str
    interval: float
    max_age: float
    folder: Path


def mirror_problems(mirror: str, max_age: str) -> list[tuple[str, str]]:
    """What is wrong with a source's ``mirror`` and ``mirror_max_age`` keys."""
    if not mirror:
        return [("mirror_max_age", 'only applies with mirror = "<interval>"')] if max_age else []
    try:
        interval = parse_duration(mirror)
    except ValueError as exc:
        return [("mirror", str(exc))]
    if interval < MIN_INTERVAL:
        return [("mirror", "must be at least 1 s")]
    if not max_age:
        return []
    try:
        limit = parse_duration(max_age)
    except ValueError as exc:
        return [("mirror_max_age", str(exc))]
    if limit <= interval:
        return [
            (
                "mirror_max_age",
                f"must be longer than mirror ({mirror}): the copy would be an error "
                "between refreshes",
            )
        ]
    return []


def mirror_settings(
    source: str, mirror: str, max_age: str, folder: Path | None, identity: str
) -> MirrorSettings:
    """The settings of a mirrored source (its keys already validated).

    Without ``mirror_path`` the mirror lives in the user's state folder, named
    by the source and a digest of what it copies, so that pointing a source
    elsewhere starts a new mirror rather than serving the old one.
    """
    if folder is None:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        folder = state_dir() / "mirrors" / f"{safe}-{digest}"
    interval = parse_duration(mirror)
    limit = parse_duration(max_age) if max_age else max(DEFAULT_MAX_AGE, 2 * interval)
    return MirrorSettings(source, interval, limit, folder)
