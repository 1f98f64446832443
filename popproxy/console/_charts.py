"""
The administrators' charts, as geometry: a filter's verdicts over a span
as stacked bars, and its latency (median and 95th percentile) as lines,
computed from an L{ActivitySeries} into frozen shapes in a fixed view box.
The template (templates/admin/_chart.html) draws them as inline SVG with
no script and no inline style (colours come from the style sheet, by the
verdict's class), so the console's Content-Security-Policy holds and every
text is escaped like the rest of the page.  Nothing here does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from popproxy._filteractivity import ActivitySeries

#: Verdicts in the order they stack, bottom first (others after them).
VERDICTS = ("deliver", "rewrite", "replace", "tempfail", "error", "timeout")

#: The view box, and the plot's margins in it.
WIDTH = 600.0
HEIGHT = 150.0
LEFT = 46.0
RIGHT = 6.0
TOP = 8.0
BOTTOM = 20.0


@dataclass(frozen=True, slots=True)
class Bar:
    """
    One verdict's part of one step's bar.
    """

    x: float
    y: float
    width: float
    height: float
    verdict: str
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    """
    A polyline (C{points}: C{"x,y x,y …"}); one per stretch with data.
    """

    kind: str
    points: str


@dataclass(frozen=True, slots=True)
class Chart:
    """
    What the template draws.

    @ivar summary: the chart in words (its accessible name).
    @ivar top: the value of the plot's top edge, as written on it.
    @ivar ticks: (x, text) labels under the plot.
    """

    summary: str
    top: str
    ticks: tuple[tuple[float, str], ...]
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT
    bottom: float = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not self.bars and not self.lines


def ordered(verdicts: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """
    C{verdicts} in stacking order.
    """
    rank = {verdict: index for index, verdict in enumerate(VERDICTS)}
    return sorted(verdicts, key=lambda pair: (rank.get(pair[0], len(VERDICTS)), pair[0]))


def niceTop(value: float) -> float:
    """
    The smallest of 1, 2, 2.5, 5 times a power of ten at least C{value}.
    """
    if value <= 0:
        return 1.0
    power = 10.0 ** len(str(int(value))) / 10.0 if value >= 1 else 1e-3
    while True:
        for factor in (1.0, 2.0, 2.5, 5.0):
            if factor * power >= value:
                return factor * power
        power *= 10.0


def duration(seconds: float) -> str:
    """
    A latency as people read it: milliseconds under a second.
    """
    if seconds < 1.0:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def _ticks(series: ActivitySeries, plotWidth: float) -> tuple[tuple[float, str], ...]:
    points = series.points
    if not points:
        return ()
    step = plotWidth / len(points)
    every = max(1, len(points) // 4)
    ticks = []
    for index in range(0, len(points), every):
        stamp = time.strftime("%H:%M", time.gmtime(points[index].start))
        ticks.append((LEFT + index * step, stamp))
    return tuple(ticks)


def verdictChart(series: ActivitySeries) -> Chart:
    """
    Stacked bars: per step, how many messages got each verdict.
    """
    plotWidth, plotHeight = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    highest = max((point.count for point in series.points), default=0)
    top = niceTop(highest)
    step = plotWidth / max(1, len(series.points))
    bars = []
    for index, point in enumerate(series.points):
        base = HEIGHT - BOTTOM
        for verdict, count in ordered(point.verdicts):
            height = plotHeight * count / top
            base -= height
            stamp = time.strftime("%H:%M", time.gmtime(point.start))
            bars.append(
                Bar(
                    round(LEFT + index * step + step * 0.1, 2),
                    round(base, 2),
                    round(step * 0.8, 2),
                    round(height, 2),
                    verdict,
                    f"{stamp} UTC: {count} {verdict}",
                )
            )
    totals = ", ".join(f"{count} {verdict}" for verdict, count in ordered(series.overall.verdicts))
    summary = f"{series.name}: {series.overall.count} messages ({totals or 'none'})"
    return Chart(summary, f"{top:g}", _ticks(series, plotWidth), bars=tuple(bars))


def latencyChart(series: ActivitySeries) -> Chart:
    """
    Lines: per step with messages, the median and 95th percentile time.
    """
    plotWidth, plotHeight = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    highest = max((point.p95 or 0.0 for point in series.points), default=0.0)
    top = niceTop(highest * 1000.0) / 1000.0 if highest > 0 else 0.001
    step = plotWidth / max(1, len(series.points))
    lines: list[Line] = []
    for kind in ("median", "p95"):
        stretch: list[tuple[float, float]] = []
        for index, point in enumerate(series.points):
            value = getattr(point, kind)
            if value is None:
                lines.extend(_line(kind, stretch))
                stretch = []
                continue
            x = LEFT + index * step + step / 2
            stretch.append((x, HEIGHT - BOTTOM - plotHeight * min(value, top) / top))
        lines.extend(_line(kind, stretch))
    overall = series.overall
    if overall.median is None or overall.p95 is None:
        summary = f"{series.name}: no messages"
    else:
        summary = (
            f"{series.name}: median {duration(overall.median)}, "
            f"95th percentile {duration(overall.p95)}, slowest {duration(overall.slowest)}"
        )
    return Chart(summary, duration(top), _ticks(series, plotWidth), lines=tuple(lines))


def _line(kind: str, stretch: list[tuple[float, float]]) -> list[Line]:
    """
    The line through C{stretch} (none if empty; a short dash for a single
    point, which a polyline would not show).
    """
    if len(stretch) == 1:
        x, y = stretch[0]
        stretch = [(x - 2.0, y), (x + 2.0, y)]
    if not stretch:
        return []
    return [Line(kind, " ".join(f"{x:.1f},{y:.1f}" for x, y in stretch))]
