"""
Each filter's verdicts and latency over the last day, for the console's
charts: a small time series in the main process's memory, one bucket per
minute and filter holding the count of each verdict and the latency's
count, sum, slowest value and histogram (the bounds of the Prometheus
histogram, L{popproxy._metrics.LATENCY_BUCKETS}).  Histograms add up, so
a chart's point over any span of minutes (an hour in minutes, a day in
quarters of an hour) has its median and 95th percentile estimated as
Prometheus's C{histogram_quantile} does: within the bucket the rank falls
in, linearly, never above the slowest time seen.

Fed L{FilterRun}s as they happen (from this process's chain, and from the
workers' over their socket pairs: see L{popproxy._activity}); time is the
main process's clock when they arrive.  Bounded: L{KEEP} minutes and
L{MAX_FILTERS} names.  Nothing here does I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from popproxy._activity import FilterRun
from popproxy._metrics import LATENCY_BUCKETS

#: Minutes kept: one day.
KEEP = 24 * 60
#: The most filter names kept (a chain has a handful).
MAX_FILTERS = 64


@dataclass
class _Bucket:
    """
    One minute of one filter (mutable while its minute lasts).
    """

    verdicts: dict[str, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    slowest: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def add(self, run: FilterRun) -> None:
        self.verdicts[run.verdict] = self.verdicts.get(run.verdict, 0) + 1
        seconds = max(0.0, run.seconds)
        self.count += 1
        self.total += seconds
        self.slowest = max(self.slowest, seconds)
        self.histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def merge(self, other: _Bucket) -> None:
        for verdict, count in other.verdicts.items():
            self.verdicts[verdict] = self.verdicts.get(verdict, 0) + count
        self.count += other.count
        self.total += other.total
        self.slowest = max(self.slowest, other.slowest)
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]


def quantile(histogram: list[int], q: float, slowest: float) -> float | None:
    """
    The C{q} quantile (0 to 1) of the times counted in C{histogram}
    (counts per L{LATENCY_BUCKETS} bound, then beyond the last), at most
    C{slowest}; C{None} when it counts nothing.
    """
    count = sum(histogram)
    if count == 0:
        return None
    rank = q * count
    below = 0
    for index, inBucket in enumerate(histogram):
        if inBucket and below + inBucket >= rank:
            if index == len(LATENCY_BUCKETS):
                return slowest
            low = LATENCY_BUCKETS[index - 1] if index else 0.0
            high = LATENCY_BUCKETS[index]
            return min(slowest, low + (high - low) * (rank - below) / inBucket)
        below += inBucket
    return slowest


@dataclass(frozen=True, slots=True)
class ActivityPoint:
    """
    One filter over one step of a chart.

    @ivar start: the step's start (POSIX seconds).
    @ivar verdicts: (verdict, count) pairs, by verdict.
    @ivar count: how many messages it judged.
    @ivar total: the seconds they took together.
    @ivar median: the estimated median time (C{None}: none judged).
    @ivar p95: the estimated 95th percentile time.
    @ivar slowest: the longest time.
    """

    start: float
    verdicts: tuple[tuple[str, int], ...]
    count: int
    total: float
    median: float | None
    p95: float | None
    slowest: float

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True, slots=True)
class ActivitySeries:
    """
    One filter over a span, in steps, oldest first, and the span as a
    whole (L{overall}).
    """

    name: str
    step: float
    points: tuple[ActivityPoint, ...]
    overall: ActivityPoint


def _point(start: float, bucket: _Bucket) -> ActivityPoint:
    return ActivityPoint(
        start,
        tuple(sorted(bucket.verdicts.items())),
        bucket.count,
        bucket.total,
        quantile(bucket.histogram, 0.5, bucket.slowest),
        quantile(bucket.histogram, 0.95, bucket.slowest),
        bucket.slowest,
    )


class FilterActivity:
    """
    The filters' last day, by minute.

    @param clock: the time now (POSIX seconds).
    """

    def __init__(self, clock: Callable[[], float], keep: int = KEEP) -> None:
        self._clock = clock
        self._keep = keep
        #: minute number (seconds // 60) -> filter name -> bucket.
        self._minutes: dict[int, dict[str, _Bucket]] = {}
        self._names: dict[str, None] = {}

    def record(self, runs: Iterable[FilterRun]) -> None:
        """
        Count C{runs} in the minute now.
        """
        minute = int(self._clock() // 60)
        buckets = self._minutes.get(minute)
        if buckets is None:
            buckets = self._minutes[minute] = {}
            self._forget(minute)
        for run in runs:
            if run.name not in self._names:
                if len(self._names) >= MAX_FILTERS:
                    continue
                self._names[run.name] = None
            bucket = buckets.get(run.name)
            if bucket is None:
                bucket = buckets[run.name] = _Bucket()
            bucket.add(run)

    def _forget(self, minute: int) -> None:
        for old in [m for m in self._minutes if m <= minute - self._keep]:
            del self._minutes[old]

    def names(self) -> tuple[str, ...]:
        """
        The filters seen, in the order first seen.
        """
        return tuple(self._names)

    def series(self, name: str, span: float, step: float) -> ActivitySeries:
        """
        Filter C{name} over the last C{span} seconds in steps of C{step}
        seconds (both whole minutes; the last step holds the minute now).
        """
        steps = max(1, int(span // step))
        stepMinutes = max(1, int(step // 60))
        now = int(self._clock() // 60)
        first = now - steps * stepMinutes + 1
        merged = [_Bucket() for _ in range(steps)]
        overall = _Bucket()
        for minute in range(max(first, now - self._keep + 1), now + 1):
            bucket = self._minutes.get(minute, {}).get(name)
            if bucket is not None:
                merged[(minute - first) // stepMinutes].merge(bucket)
                overall.merge(bucket)
        points = tuple(
            _point((first + index * stepMinutes) * 60.0, bucket)
            for index, bucket in enumerate(merged)
        )
        return ActivitySeries(name, stepMinutes * 60.0, points, _point(first * 60.0, overall))
