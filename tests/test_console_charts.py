"""
Tests for popproxy.console._charts: bars stack each step's verdicts in a
fixed order and fit the plot under a round top value; latency lines break
where no message was judged; the summaries say the totals in words.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from popproxy._activity import FilterRun
from popproxy._filteractivity import FilterActivity
from popproxy.console._charts import (
    BOTTOM,
    HEIGHT,
    TOP,
    duration,
    latencyChart,
    niceTop,
    verdictChart,
)


def series(runs: list[list[FilterRun]]) -> object:
    """
    The hour of a filter "scan" given one list of runs per minute, the
    last minute now.
    """
    clock = Clock()
    clock.advance(1_800_000_000 - 60 * len(runs))
    activity = FilterActivity(clock.seconds)
    for minute in runs:
        clock.advance(60)
        activity.record(minute)
    return activity.series("scan", 3600, 60)


def test_barsStackInOrder() -> None:
    """
    One step with 3 deliver and 1 replace: the deliver bar at the bottom,
    the replace bar on top of it, together as high as 4 messages under a
    top of 5.
    """
    runs = [FilterRun("scan", "deliver", 0.01)] * 3 + [FilterRun("scan", "replace", 0.01)]
    chart = verdictChart(series([runs]))  # type: ignore[arg-type]
    deliver, replace = chart.bars
    assert (deliver.verdict, replace.verdict) == ("deliver", "replace")
    assert deliver.y + deliver.height == HEIGHT - BOTTOM
    assert abs(replace.y + replace.height - deliver.y) < 0.02
    plot = HEIGHT - TOP - BOTTOM
    assert abs(deliver.height + replace.height - plot * 4 / 5) < 0.05
    assert chart.top == "5" and chart.summary == "scan: 4 messages (3 deliver, 1 replace)"
    assert "UTC: 3 deliver" in deliver.label


def test_linesBreakWhereNothingWasJudged() -> None:
    """
    Minutes with messages, a minute without, then one more: two stretches
    per line (the lone point a short dash), and the summary in ms.
    """
    judged = [FilterRun("scan", "deliver", 0.02)]
    chart = latencyChart(series([judged, judged, [], judged]))  # type: ignore[arg-type]
    medians = [line for line in chart.lines if line.kind == "median"]
    assert len(medians) == 2 and len(medians[0].points.split()) == 2
    assert len(medians[1].points.split()) == 2
    assert chart.summary.startswith("scan: median ") and "ms" in chart.summary


def test_emptyCharts() -> None:
    """
    A filter without messages draws nothing and says so.
    """
    empty = series([[]])
    assert verdictChart(empty).empty and latencyChart(empty).empty  # type: ignore[arg-type]
    assert latencyChart(empty).summary == "scan: no messages"  # type: ignore[arg-type]


def test_niceTopsAndDurations() -> None:
    """
    Tops are 1, 2, 2.5 or 5 times a power of ten; times read in ms or s.
    """
    assert [niceTop(v) for v in (0, 1, 3, 7, 11, 240, 999)] == [1, 1, 5, 10, 20, 250, 1000]
    assert duration(0.0123) == "12.3 ms" and duration(2.5) == "2.5 s"
