"""Small bar charts drawn as inline SVG: no script, readable without colour.

Each minute is a bar of calls; the part of it that failed is drawn hatched
on top, so errors show by pattern as well as by shade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The drawing's size in SVG units (the page scales it).
WIDTH, HEIGHT = 240, 40


@dataclass(frozen=True)
class Bar:
    """One bar: its left edge, width, the height of all calls and of the failed ones."""

    x: float
    width: float
    total: float
    failed: float


@dataclass(frozen=True)
class Chart:
    """Bars to draw, the largest value (the chart's scale), and a text summary of it."""

    bars: tuple[Bar, ...]
    peak: int
    summary: str
    width: int = WIDTH
    height: int = HEIGHT


def chart(series: Sequence[tuple[int, int]], unit: str = "minute") -> Chart:
    """A chart of (total, failed) pairs, oldest first."""
    peak = max((total for total, _ in series), default=0)
    step = WIDTH / max(len(series), 1)
    scale = (HEIGHT - 2) / peak if peak else 0.0
    bars = tuple(
        Bar(i * step, max(step - 1, 1), total * scale, failed * scale)
        for i, (total, failed) in enumerate(series)
        if total
    )
    failed = sum(f for _, f in series)
    summary = (
        f"{sum(t for t, _ in series)} in {len(series)} {unit}s, at most {peak} a {unit}, "
        f"{failed} failed"
    )
    return Chart(bars, peak, summary)
