"""
Memory under load (C{--mode loaded}, issue #16): a proxy's peak RSS while
N sessions (C{--load-sessions}, 50) fetch a mailbox (C{--load-mailbox},
C{mixed}) at once, against the bytes in flight, and popproxy's per-session
cache against its budget.

Each target is started afresh and runs one session through the mailbox
first (so lazily imported code and first allocations are in the
baseline); then the baseline RSS is read, the peak reset (C{VmHWM}) and
the N sessions run once each, every byte checked.  A sampler thread reads
the RSS every 20 ms meanwhile, to say when the peak came.

B{Bytes in flight} at a moment: the sum of the sizes of the messages whose
C{RETR} has been sent and whose last octet has not yet reached its client
(from the load generator's spans, L{bench._load.LoadResult.retrSpans}, on
the system-wide monotonic clock).  The report gives its maximum over the
run, its value at the sampled RSS peak, its time-weighted mean, and the
bound N x the largest message; the goal compares the peak RSS increase
with the maximum.  The cache figures come from the line each popproxy
session logs as it closes (C{session S cache: peak P of B bytes}).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from bench._dovecot import Account, DovecotServer
from bench._load import LoadGenerator
from bench._report import progress
from bench._settings import Settings
from bench._targets import Targets, startedTarget

MB = 1e6

#: What a popproxy session logs about its cache as it closes.
CACHE_LINE = re.compile(rb"session \S+ cache: peak (\d+) of (\d+) bytes")

#: Seconds between RSS samples.
SAMPLE_INTERVAL = 0.02


def inFlight(spans: list[tuple[float, float, int]]) -> tuple[list[float], list[int]]:
    """
    The bytes in flight as a step function: at C{times[i]} it becomes
    C{bytes[i]} (a message leaves before one at the same instant arrives).
    """
    events = sorted(
        [(start, 1, size) for start, _, size in spans] + [(end, 0, -size) for _, end, size in spans]
    )
    times: list[float] = []
    levels: list[int] = []
    level = 0
    for at, _, change in events:
        level += change
        times.append(at)
        levels.append(level)
    return times, levels


def levelAt(times: list[float], levels: list[int], at: float) -> int:
    """
    The step function's value at C{at} (0 before its first step).
    """
    found = 0
    for when, level in zip(times, levels, strict=True):
        if when > at:
            break
        found = level
    return found


def meanLevel(times: list[float], levels: list[int]) -> float:
    """
    The time-weighted mean of the step function from its first step to its
    last.
    """
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    area = sum(
        level * (later - at) for at, later, level in zip(times, times[1:], levels, strict=False)
    )
    return area / (times[-1] - times[0])


class RssSampler:
    """
    A thread reading a target's RSS every L{SAMPLE_INTERVAL} seconds until
    stopped; the samples are (monotonic time, bytes).
    """

    def __init__(self, targets: Targets, name: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._targets = targets
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.samples.append((time.monotonic(), self._targets.rss(self._name)))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def cacheLines(logs: list[Path], skip: int) -> list[tuple[int, int]]:
    """
    The (peak, budget) of every cache line in popproxy's logs (one per
    instance behind a balancer) after the first C{skip}.
    """
    found = []
    for log in logs:
        try:
            text = log.read_bytes()
        except FileNotFoundError:
            continue
        found += [(int(m.group(1)), int(m.group(2))) for m in CACHE_LINE.finditer(text)]
    return found[skip:]


def waitForCacheLines(
    logs: list[Path], skip: int, wanted: int, timeout: float = 10.0
) -> list[tuple[int, int]]:
    """
    The cache lines after the first C{skip}, once C{wanted} are there or
    C{timeout} seconds have passed (a session that cached nothing logs none).
    """
    deadline = time.monotonic() + timeout
    found = cacheLines(logs, skip)
    while len(found) < wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        found = cacheLines(logs, skip)
    return found


def measureLoadedMemory(
    settings: Settings, generator: LoadGenerator, dovecot: DovecotServer
) -> dict[str, Any]:
    """
    For every target but C{direct}, freshly started: the peak RSS while
    C{settings.loadSessions} sessions fetch C{settings.loadMailbox}, the
    bytes in flight, and popproxy's cache lines.
    """
    account = dovecot.accounts[settings.loadMailbox]
    largest = max(len(message) for message in account.mailbox.messages)
    results: dict[str, Any] = {
        "sessions": settings.loadSessions,
        "mailbox": settings.loadMailbox,
        "mailboxMB": account.mailbox.totalBytes / MB,
        "largestMessageMB": largest / MB,
        "boundMB": settings.loadSessions * largest / MB,
        "targets": {},
    }
    for name in settings.targets:
        if name == "direct":
            continue
        with startedTarget(settings, dovecot, name, settings.loadSessions + 100) as targets:
            results["targets"][name] = _loaded(settings, generator, targets, name, account)
    return results


def _loaded(
    settings: Settings,
    generator: LoadGenerator,
    targets: Targets,
    name: str,
    account: Account,
) -> dict[str, Any]:
    port = targets.port(name)
    logs = _popproxyLogs(targets, name)
    run = generator.run
    run(port, account.user, account.password, account.mailbox.name, 1, 1, settings.timeout)
    time.sleep(0.5)
    skip = len(cacheLines(logs, 0))
    baseline = targets.rss(name)
    targets.resetPeak(name)
    progress(f"  memory under load: {settings.loadSessions} sessions through {name}")
    with RssSampler(targets, name) as sampler:
        result = run(
            port,
            account.user,
            account.password,
            account.mailbox.name,
            settings.loadSessions,
            1,
            settings.timeout,
        )
    peak = targets.peak(name)
    times, levels = inFlight(result.retrSpans)
    sampledAt, sampledPeak = max(sampler.samples or [(0.0, 0)], key=lambda sample: sample[1])
    row: dict[str, Any] = {
        "rssBaselineMB": baseline / MB,
        "rssPeakMB": peak / MB,
        "peakIncreaseMB": max(peak - baseline, 0) / MB,
        "inFlightMaxMB": max(levels, default=0) / MB,
        "inFlightAtSampledPeakMB": levelAt(times, levels, sampledAt) / MB,
        "inFlightMeanMB": meanLevel(times, levels) / MB,
        "sampledPeakMB": sampledPeak / MB,
        "samples": len(sampler.samples),
        "mbPerSecond": result.messageBytes / MB / result.wallSeconds,
        "seconds": result.wallSeconds,
        "messages": result.messages,
        "errors": result.errorCount,
        "errorSamples": result.errorSamples[:5],
    }
    row["increaseOverInFlightMax"] = row["peakIncreaseMB"] / max(row["inFlightMaxMB"], 1e-9)
    if logs:
        row["cache"] = _cacheFigures(waitForCacheLines(logs, skip, settings.loadSessions))
    progress(
        f"    {name}: RSS {baseline / MB:.1f} MB -> peak {peak / MB:.1f} MB; in flight at most "
        f"{row['inFlightMaxMB']:.1f} MB; errors {row['errors']}"
    )
    return row


def _popproxyLogs(targets: Targets, name: str) -> list[Path]:
    """
    The log of each popproxy process of target C{name} (none for nginx).
    """
    if name in targets.popproxies:
        return [targets.popproxies[name].directory / "twistd.log"]
    if name in targets.balanced:
        return [instance.directory / "twistd.log" for instance in targets.balanced[name].instances]
    return []


def _cacheFigures(lines: list[tuple[int, int]]) -> dict[str, Any]:
    """
    What the sessions' cache lines add up to.
    """
    budgets = sorted({budget for _, budget in lines})
    return {
        "sessionsReporting": len(lines),
        "budgetBytes": budgets[-1] if budgets else None,
        "maxPeakBytes": max((peak for peak, _ in lines), default=0),
        "sumOfPeaksMB": sum(peak for peak, _ in lines) / MB,
        "overBudget": sum(1 for peak, budget in lines if peak > budget),
    }


def loadedMemoryTable(memory: dict[str, Any]) -> str:
    """
    The memory-under-load figures as Markdown.
    """
    out = [
        f"### {memory['sessions']} sessions fetching `{memory['mailbox']}` at once "
        f"({memory['mailboxMB']:.1f} MB each, largest message {memory['largestMessageMB']:.1f} "
        f"MB; N x largest = {memory['boundMB']:.0f} MB)\n",
        "| target | RSS baseline MB | peak RSS MB | peak increase MB | in flight: max MB "
        "| at sampled RSS peak MB | mean MB | increase ÷ max in flight | MB/s | errors "
        "| cache: sessions | max peak / budget bytes | over budget | sum of peaks MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in memory["targets"].items():
        cache = row.get("cache")
        cacheCells = (
            f"{cache['sessionsReporting']} | {cache['maxPeakBytes']:,} / "
            f"{cache['budgetBytes'] or 0:,} | {cache['overBudget']} | {cache['sumOfPeaksMB']:.1f}"
            if cache
            else "– | – | – | –"
        )
        out.append(
            f"| {name} | {row['rssBaselineMB']:.1f} | {row['rssPeakMB']:.1f} "
            f"| {row['peakIncreaseMB']:.1f} | {row['inFlightMaxMB']:.1f} "
            f"| {row['inFlightAtSampledPeakMB']:.1f} | {row['inFlightMeanMB']:.1f} "
            f"| {row['increaseOverInFlightMax']:.2f}× | {row['mbPerSecond']:.1f} | {row['errors']} "
            f"| {cacheCells} |"
        )
    return "\n".join(out) + "\n"
