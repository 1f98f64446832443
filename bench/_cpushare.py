"""
Where a throughput run's CPU went: the seconds each process role used,
and what that says about the limit.

The roles are the proxy's main process, its other processes (popproxy's
C{[proxy] workers}, nginx's workers; for C{haproxyN}, HAProxy is the main
process and the popproxy instances the others), Dovecot (every process, including
the pop3 processes that ended during the run: their time is in the
master's C{cutime}/C{cstime}) and the load generator (its workers' own
C{os.times}).  L{CpuClock} reads C{/proc/PID/stat} before and after a run;
L{cpuTable} prints the medians as CPU seconds per GB relayed and as cores,
and, when the run was pinned (L{bench._pinning}), how busy each CPU set
was: a set near 100 % is what limits the run.  L{scalingTable} gives one
target's throughput over another's (C{workers = 2} over one worker).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench import _process
from bench._pinning import Pinning

#: The roles, in the order the tables show them.
ROLES = ("proxyMain", "proxyOthers", "dovecot", "loadGenerator")

_TITLES = {
    "proxyMain": "proxy main",
    "proxyOthers": "proxy others",
    "dovecot": "Dovecot",
    "loadGenerator": "load gen",
}


def _treeSeconds(pids: Iterable[int]) -> float:
    """
    CPU seconds of C{pids} and of the children they have waited for.
    """
    total = 0.0
    for pid in pids:
        user, system = _process.cpuTimes(pid)
        total += user + system + _process.reapedCpuSeconds(pid)
    return total


class CpuClock:
    """
    The CPU seconds of the proxy's processes and of Dovecot's, from one
    reading to the next.

    @param proxyPids: the proxy's processes, main process first (read
        again at every reading: workers may start late).
    @param dovecotPid: Dovecot's master process.
    """

    def __init__(self, proxyPids: Callable[[], list[int]], dovecotPid: int) -> None:
        self._proxyPids = proxyPids
        self._dovecotPid = dovecotPid
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        pids = self._proxyPids()
        dovecot = [self._dovecotPid, *_process.descendantsOf(self._dovecotPid)]
        return {
            "proxyMain": _treeSeconds(pids[:1]),
            "proxyOthers": _treeSeconds(pids[1:]),
            "dovecot": _treeSeconds(dovecot),
        }

    def elapsed(self, loadGeneratorSeconds: float) -> dict[str, float]:
        """
        CPU seconds per role since this clock was made (NaN for the proxy's
        roles of a target without processes of its own, C{direct}).
        """
        after = self._read()
        used = {role: after[role] - self._before[role] for role in after}
        if not self._proxyPids():
            used["proxyMain"] = used["proxyOthers"] = math.nan
        used["loadGenerator"] = loadGeneratorSeconds
        return used


def record(seconds: dict[str, float], megabytes: float, wall: float) -> dict[str, float]:
    """
    The flat figures of one run for its record: C{cpuSeconds.ROLE} and
    C{cpuSecondsPerGB.ROLE}.
    """
    flat = {}
    for role in ROLES:
        flat[f"cpuSeconds.{role}"] = seconds[role]
        flat[f"cpuSecondsPerGB.{role}"] = seconds[role] / max(megabytes / 1e3, 1e-12)
    flat["cpuWallSeconds"] = wall
    return flat


def _grouped(runs: Iterable[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    """
    The runs by (mailbox, sessions, target), in the order they came.
    """
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["mailbox"], run["sessions"], run["target"]), []).append(run)
    return grouped


def _median(group: Sequence[dict[str, Any]], key: str) -> float:
    values = [run[key] for run in group if isinstance(run.get(key), float | int)]
    values = [value for value in values if not math.isnan(value)]
    return statistics.median(values) if values else math.nan


def _sum(*values: float) -> float:
    """
    The sum of the figures that apply (NaN: the role has no process).
    """
    return sum(value for value in values if not math.isnan(value))


def _cell(value: float, digits: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def cpuTable(
    runs: Sequence[dict[str, Any]],
    targets: Sequence[str],
    pinning: Pinning | None,
    machineCores: int,
) -> tuple[str, list[Any]]:
    """
    Per mailbox, N and target (in the order of C{targets}): the medians of
    MB/s, CPU seconds per GB of each role and in all, the cores all of them
    used, the ceiling (the MB/s at which that CPU cost takes all C{machineCores}
    of the machine: no spreading over processes goes beyond it), and
    (pinned) how busy the proxy's CPUs and the others' were; as Markdown
    and as records.
    """
    grouped = _grouped(runs)
    order = {target: position for position, target in enumerate(targets)}
    pinned = " proxy CPUs busy | other CPUs busy |" if pinning else ""
    out = [
        "| mailbox | N | target | MB/s | "
        + " | ".join(f"{_TITLES[role]} CPU s/GB" for role in ROLES)
        + f" | all CPU s/GB | cores used | ceiling MB/s |{pinned}",
        "|---|---:|---|" + "---:|" * (len(ROLES) + 4) + ("---:|---:|" if pinning else ""),
    ]
    records = []
    for (mailbox, sessions, target), group in sorted(
        grouped.items(), key=lambda item: (item[0][0], item[0][1], order.get(item[0][2], 0))
    ):
        perGB = {role: _median(group, f"cpuSecondsPerGB.{role}") for role in ROLES}
        cores = {role: _median(group, f"cpuSeconds.{role}") for role in ROLES}
        wall = _median(group, "cpuWallSeconds")
        rate = _median(group, "mbPerSecond")
        total = _sum(*perGB.values())
        used = _sum(*cores.values()) / wall
        row: dict[str, Any] = {
            "mailbox": mailbox,
            "sessions": sessions,
            "target": target,
            "mbPerSecond": rate,
            "cpuSecondsPerGB": perGB,
            "allCpuSecondsPerGB": total,
            "coresUsed": used,
            "ceilingMBps": machineCores * 1e3 / total if total else math.nan,
        }
        cells = " | ".join(_cell(perGB[role]) for role in ROLES)
        busy = ""
        if pinning:
            proxyCores = _sum(cores["proxyMain"], cores["proxyOthers"])
            otherCores = _sum(cores["dovecot"], cores["loadGenerator"])
            row["proxyCpusBusy"] = proxyCores / wall / len(pinning.proxy)
            row["otherCpusBusy"] = otherCores / wall / len(pinning.rest)
            busy = f" {row['proxyCpusBusy']:.0%} | {row['otherCpusBusy']:.0%} |"
        records.append(row)
        out.append(
            f"| {mailbox} | {sessions} | {target} | {_cell(rate, 1)} | {cells} "
            f"| {_cell(total)} | {_cell(used)} | {_cell(row['ceilingMBps'], 0)} |{busy}"
        )
    return "\n".join(out) + "\n", records


def scalingTable(
    runs: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]]
) -> tuple[str, list[Any]]:
    """
    For each C{(numerator, denominator)} pair of targets, per mailbox and
    N: the ratio of their median MB/s (C{chain-workers2} over C{chain}).
    """
    grouped = _grouped(runs)
    rates = {key: _median(group, "mbPerSecond") for key, group in grouped.items()}
    out = ["| mailbox | N | targets | MB/s | MB/s | ratio |", "|---|---:|---|---:|---:|---:|"]
    records = []
    for numerator, denominator in pairs:
        for mailbox, sessions in sorted({(key[0], key[1]) for key in rates}):
            top = rates.get((mailbox, sessions, numerator), math.nan)
            bottom = rates.get((mailbox, sessions, denominator), math.nan)
            ratio = top / bottom if bottom else math.nan
            records.append(
                {
                    "mailbox": mailbox,
                    "sessions": sessions,
                    "numerator": numerator,
                    "denominator": denominator,
                    "ratio": ratio,
                }
            )
            out.append(
                f"| {mailbox} | {sessions} | {numerator} ÷ {denominator} "
                f"| {_cell(top, 1)} | {_cell(bottom, 1)} | {_cell(ratio)}× |"
            )
    return "\n".join(out) + "\n", records


def parseScaling(text: str) -> tuple[str, str]:
    """
    C{"chain-workers2/chain"} -> C{("chain-workers2", "chain")}.

    @raise ValueError: not two names around one slash.
    """
    numerator, slash, denominator = text.partition("/")
    if not slash or not numerator or not denominator or "/" in denominator:
        raise ValueError("expected NUMERATOR/DENOMINATOR, two target names")
    return numerator, denominator
