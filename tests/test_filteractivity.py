"""
Tests for popproxy._filteractivity: verdicts and times counted per minute
and filter, added up over an hour in minutes and a day in quarters of an
hour; medians and 95th percentiles estimated from the histogram, never
above the slowest time; minutes older than a day and names beyond the
bound forgotten.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from popproxy._activity import FilterRun
from popproxy._filteractivity import MAX_FILTERS, FilterActivity, quantile
from popproxy._metrics import LATENCY_BUCKETS

START = 1_800_000_000.0  # a whole minute


def activityAt(start: float = START) -> tuple[Clock, FilterActivity]:
    clock = Clock()
    clock.advance(start)
    return clock, FilterActivity(clock.seconds)


def test_aMinutesVerdictsAndTimes() -> None:
    """
    Three messages in one minute: their verdicts counted, their times
    added up, the median in the bucket of the middle one.
    """
    clock, activity = activityAt()
    activity.record([FilterRun("scan", "deliver", 0.004), FilterRun("strip", "rewrite", 0.2)])
    activity.record([FilterRun("scan", "deliver", 0.008)])
    activity.record([FilterRun("scan", "replace", 0.040)])
    series = activity.series("scan", 3600, 60)
    assert len(series.points) == 60 and series.step == 60.0
    last = series.points[-1]
    assert last.start == START and last.verdicts == (("deliver", 2), ("replace", 1))
    assert last.count == 3 and abs(last.total - 0.052) < 1e-9
    assert last.median is not None and 0.005 < last.median <= 0.01
    assert last.p95 is not None and 0.025 < last.p95 <= 0.040
    assert last.slowest == 0.040 and activity.names() == ("scan", "strip")
    assert all(point.count == 0 for point in series.points[:-1])


def test_stepsAddUpMinutes() -> None:
    """
    Over a day in 15-minute steps, minutes of one step add up into it and
    the whole span into its overall point.
    """
    clock, activity = activityAt()
    for _ in range(30):
        activity.record([FilterRun("scan", "deliver", 0.01)])
        clock.advance(60)
    series = activity.series("scan", 86400, 900)
    assert len(series.points) == 96 and series.step == 900.0
    assert sum(point.count for point in series.points) == 30
    assert series.overall.count == 30 and series.overall.verdicts == (("deliver", 30),)
    assert max(point.count for point in series.points) <= 15
    hour = activity.series("scan", 3600, 60)
    assert [point.count for point in hour.points[-31:]] == [1] * 30 + [0]


def test_oldMinutesAreForgotten() -> None:
    """
    What happened more than a day ago is in no span, and not kept.
    """
    clock, activity = activityAt()
    activity.record([FilterRun("scan", "deliver", 0.01)])
    clock.advance(86400)
    activity.record([FilterRun("scan", "error", 0.01)])
    assert activity.series("scan", 86400, 900).overall.verdicts == (("error", 1),)
    assert len(activity._minutes) == 1


def test_quantilesStayWithinWhatWasSeen() -> None:
    """
    An estimate never exceeds the slowest time; times beyond the last
    bucket give the slowest; nothing counted gives None.
    """
    histogram = [0] * (len(LATENCY_BUCKETS) + 1)
    assert quantile(histogram, 0.5, 0.0) is None
    histogram[LATENCY_BUCKETS.index(1.0)] = 1
    assert quantile(histogram, 0.95, 0.6) == 0.6
    beyond = [0] * len(LATENCY_BUCKETS) + [2]
    assert quantile(beyond, 0.5, 75.0) == 75.0


def test_namesAreBounded() -> None:
    """
    A sender of endless names (a broken worker) cannot grow the series:
    names beyond the bound are not kept.
    """
    clock, activity = activityAt()
    activity.record(FilterRun(f"f{n}", "deliver", 0.0) for n in range(MAX_FILTERS + 10))
    assert len(activity.names()) == MAX_FILTERS
    assert activity.series("f70", 3600, 60).overall.count == 0


def test_unknownFilterHasAnEmptySeries() -> None:
    """
    A filter with no messages has a series of empty points.
    """
    clock, activity = activityAt()
    series = activity.series("nothing", 3600, 60)
    assert len(series.points) == 60 and series.overall.count == 0
    assert series.overall.median is None and series.overall.mean is None
