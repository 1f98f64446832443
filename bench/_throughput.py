"""
The throughput part: every mailbox x session count x target, in rounds.

Within a round each (mailbox, N) runs every target once, in an order that
rotates from one (mailbox, N) to the next, so a machine that slows down or
speeds up during the benchmark does not favour one target; the rounds are
repeated and the report takes medians.  Each run also records the proxy's
peak RSS (VmHWM, reset before the run) and the CPU its processes used (user
and system separately).  L{profileTargets} then runs each popproxy target
under py-spy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bench import _cpushare, _pinning, _profile
from bench._corpus import Mailbox
from bench._dovecot import Account, DovecotServer
from bench._load import LoadGenerator, LoadResult
from bench._report import progress
from bench._settings import Settings
from bench._targets import Targets

MB = 1e6


def roundsFor(sessions: int, mailbox: Mailbox, minMegabytes: float) -> int:
    """
    Sessions each client runs in a row, so that a run moves about
    C{minMegabytes} (a lone client would otherwise finish in milliseconds).
    """
    return max(1, round(minMegabytes * MB / (sessions * mailbox.totalBytes)))


@dataclass(frozen=True)
class Run:
    """
    One measured run: what the clients saw, and the proxy's resources.
    """

    result: LoadResult
    proxyPeakRssMB: float
    proxyUserCores: float
    proxySystemCores: float
    #: CPU seconds per process role (L{bench._cpushare.ROLES}).
    cpuSeconds: dict[str, float]
    #: The CPUs the proxy's processes may run on (all of them together).
    proxyAffinity: list[int]

    def record(self, **labels: object) -> dict[str, Any]:
        """
        The run as a flat dict for the JSON file and the medians.
        """
        wall = self.result.wallSeconds
        return {
            **labels,
            **self.result.summary(),
            "proxyPeakRssMB": self.proxyPeakRssMB,
            "proxyCpuCores": self.proxyUserCores + self.proxySystemCores,
            "proxyUserCores": self.proxyUserCores,
            "proxySystemCores": self.proxySystemCores,
            "loadCpuCores": self.result.cpuSeconds / wall,
            "errorSamples": self.result.errorSamples,
            **_cpushare.record(self.cpuSeconds, self.result.messageBytes / MB, wall),
            "proxyAffinity": self.proxyAffinity,
        }


def measureRun(
    generator: LoadGenerator,
    targets: Targets,
    target: str,
    account: Account,
    sessions: int,
    rounds: int,
    timeout: float,
) -> Run:
    """
    One run against one target.
    """
    targets.resetPeak(target)
    userBefore, systemBefore = targets.cpuTimes(target)
    clock = _cpushare.CpuClock(lambda: targets.cpuPids(target), targets.dovecot.pid)
    result = generator.run(
        targets.port(target),
        account.user,
        account.password,
        account.mailbox.name,
        sessions,
        rounds,
        timeout,
    )
    userAfter, systemAfter = targets.cpuTimes(target)
    wall = result.wallSeconds
    pids = targets.cpuPids(target)
    measured = bool(pids)
    return Run(
        result,
        targets.peak(target) / MB if measured else math.nan,
        (userAfter - userBefore) / wall if measured else math.nan,
        (systemAfter - systemBefore) / wall if measured else math.nan,
        clock.elapsed(result.cpuSeconds),
        sorted({cpu for pid in pids for cpu in _pinning.affinity(pid)}),
    )


def runRounds(
    settings: Settings, generator: LoadGenerator, dovecot: DovecotServer
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """
    Start the targets, check each serves every mailbox byte for byte, run
    all rounds, profile if asked; return the runs and the profiles.
    """
    targets = Targets(dovecot, settings)
    runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    names = settings.targets
    try:
        targets.start(names, max(settings.sessionCounts) + 100)
        for mailboxName in settings.mailboxes:
            for name in names:
                check = measureRun(
                    generator, targets, name, dovecot.accounts[mailboxName], 1, 1, settings.timeout
                )
                if check.result.errorCount:
                    raise SystemExit(
                        f"{name} fails the {mailboxName} mailbox: {check.result.errorSamples[:3]}"
                    )
        turn = 0
        for repeat in range(1, settings.repeats + 1):
            for mailboxName in settings.mailboxes:
                account = dovecot.accounts[mailboxName]
                for sessions in settings.sessionCounts:
                    rounds = roundsFor(sessions, account.mailbox, settings.minMegabytes)
                    shift = turn % len(names)
                    turn += 1
                    for name in names[shift:] + names[:shift]:
                        run = measureRun(
                            generator, targets, name, account, sessions, rounds, settings.timeout
                        )
                        runs.append(
                            run.record(
                                repeat=repeat,
                                mailbox=mailboxName,
                                sessions=sessions,
                                rounds=rounds,
                                target=name,
                            )
                        )
                        _report(run, repeat, settings.repeats, mailboxName, sessions, name)
                        time.sleep(0.2)
        if settings.profileDirectory is not None:
            profiles = profileTargets(settings, generator, targets, dovecot)
    finally:
        targets.stop()
    return runs, profiles


def _report(run: Run, repeat: int, repeats: int, mailbox: str, sessions: int, name: str) -> None:
    summary = run.result.summary()
    progress(
        f"  round {repeat}/{repeats} {mailbox:5} N={sessions:<3} {name:12} "
        f"{summary['mbPerSecond']:7.1f} MB/s  RETR p50 {summary['retrP50Ms']:6.2f} ms  "
        f"errors {summary['errors']}"
    )
    for sample in run.result.errorSamples[:3]:
        progress(f"    error: {sample}")


def profileTargets(
    settings: Settings, generator: LoadGenerator, targets: Targets, dovecot: DovecotServer
) -> dict[str, Any]:
    """
    Load each popproxy target under py-spy for a while, once per mailbox;
    the raw stacks go to the profile directory, the hottest functions into
    the results.
    """
    directory = settings.profileDirectory
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    sessions = settings.profileSessions
    for name, proxy in targets.popproxies.items():
        for mailboxName in settings.mailboxes:
            account = dovecot.accounts[mailboxName]
            output = directory / f"{name}-{mailboxName}-N{sessions}.txt"
            rounds = roundsFor(sessions, account.mailbox, settings.minMegabytes)
            progress(
                f"  profiling {name} on {mailboxName}, N={sessions}, "
                f"{settings.profileSeconds:g} s (py-spy)"
            )
            recorder = _profile.SpyRecorder(proxy.pid, output)
            time.sleep(1.0)  # py-spy needs a moment to attach
            try:
                until = time.monotonic() + settings.profileSeconds
                while time.monotonic() < until:
                    generator.run(
                        proxy.port,
                        account.user,
                        account.password,
                        mailboxName,
                        sessions,
                        rounds,
                        settings.timeout,
                    )
            finally:
                printed = recorder.stop()
            if not output.exists():
                progress(f"  py-spy wrote nothing: {printed.strip()[-300:]}")
                continue
            samples, hottest = _profile.hottest(output, 20)
            own = _profile.hottestInclusive(output, "popproxy/", 15)
            results[f"{name}/{mailboxName}"] = {
                "file": str(output),
                "sessions": sessions,
                "samples": samples,
                "hottestSelf": [vars(function) for function in hottest],
                "popproxyInclusive": [vars(function) for function in own],
            }
    return results
