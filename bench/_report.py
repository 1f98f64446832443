"""
What the benchmark prints: progress lines, the machine it ran on, and the
results as Markdown tables.

Runs are kept raw; the tables show, per mailbox, sessions and target, the
median of the repeated runs (errors are summed, never averaged away), then
the ratios popproxy/nginx and popproxy/direct (and popproxy/forward when the
bare Twisted forwarder was measured) from those medians, all taken in the
same run.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

_STARTED = time.monotonic()


def progress(text: str) -> None:
    """
    One line on stderr, with the seconds since the benchmark began.
    """
    print(f"[{time.monotonic() - _STARTED:5.0f}s] {text}", file=sys.stderr, flush=True)


#: Metrics whose median the tables show.
_MEDIAN_KEYS = (
    "mbPerSecond",
    "messagesPerSecond",
    "retrP50Ms",
    "retrP99Ms",
    "loginP50Ms",
    "seconds",
    "proxyPeakRssMB",
    "proxyCpuCores",
    "proxyUserCores",
    "proxySystemCores",
    "loadCpuCores",
)


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except OSError as e:
        return f"unknown ({e})"
    return (
        (result.stdout + result.stderr).strip().splitlines()[0]
        if result.stdout or result.stderr
        else "?"
    )


def machineInfo() -> dict[str, str]:
    """
    What the benchmark ran on: cores, CPU, kernel, and the software versions.
    """
    import twisted

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        if found:
            memory = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "machine": platform.machine(),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "dovecot": _version(["dovecot", "--version"]),
    }


def medians(runs: Iterable[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, float]]:
    """
    Per (mailbox, sessions, target): the median of every metric over the
    repeats, the summed errors and the number of repeats.
    """
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["mailbox"], run["sessions"], run["target"]), []).append(run)
    result = {}
    for key, group in grouped.items():
        row: dict[str, float] = {}
        for metric in _MEDIAN_KEYS:
            values = [run[metric] for run in group if not _missing(run.get(metric))]
            row[metric] = statistics.median(values) if values else math.nan
        row["errors"] = sum(run["errors"] for run in group)
        row["repeats"] = len(group)
        result[key] = row
    return result


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: float, digits: int = 1) -> str:
    if _missing(value):
        return "–"
    return f"{value:,.{digits}f}"


def throughputTables(
    table: dict[tuple[str, int, str], dict[str, float]],
    mailboxes: Sequence[tuple[str, str]],
    sessionCounts: Sequence[int],
    targets: Sequence[str],
) -> str:
    """
    One Markdown table per mailbox: a row per sessions x target.
    """
    out = []
    for name, description in mailboxes:
        out.append(f"### Mailbox `{name}`: {description}\n")
        out.append(
            "| N | target | MB/s | msg/s | RETR p50 ms | RETR p99 ms | login p50 ms | errors "
            "| proxy peak RSS MB | proxy CPU cores (user+sys) | proxy CPU s/GB "
            "| load gen CPU cores |"
        )
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for sessions in sessionCounts:
            for target in targets:
                row = table.get((name, sessions, target))
                if row is None:
                    continue
                out.append(
                    f"| {sessions} | {target} | {_number(row['mbPerSecond'])} "
                    f"| {_number(row['messagesPerSecond'], 0)} "
                    f"| {_number(row['retrP50Ms'], 2)} | {_number(row['retrP99Ms'], 2)} "
                    f"| {_number(row['loginP50Ms'], 1)} | {int(row['errors'])} "
                    f"| {_number(row['proxyPeakRssMB'])} | {_cores(row)} "
                    f"| {_number(row['proxyCpuCores'] / row['mbPerSecond'] * 1e3, 2)} "
                    f"| {_number(row['loadCpuCores'], 2)} |"
                )
        out.append("")
    return "\n".join(out)


def _cores(row: dict[str, float]) -> str:
    if _missing(row["proxyCpuCores"]):
        return "–"
    return f"{row['proxyCpuCores']:.2f} ({row['proxyUserCores']:.2f}+{row['proxySystemCores']:.2f})"


def ratioTables(
    table: dict[tuple[str, int, str], dict[str, float]],
    mailboxes: Sequence[tuple[str, str]],
    sessionCounts: Sequence[int],
    subjects: Sequence[str],
    singles: Mapping[str, str] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """
    Throughput ratios of each popproxy target to nginx, to direct and, if
    it was measured, to the bare Twisted forwarder (its own column, left
    out otherwise), and its added median RETR latency, per mailbox and N;
    as Markdown and as records for the JSON.  C{singles} maps each target of
    instances behind a balancer to the target of one instance without it
    (C{haproxy2} -> C{popproxy}): their ratio gets a column of its own.
    """
    singles = singles or {}
    withForward = any(target == "forward" for _, _, target in table)
    forwardHeader = " MB/s ÷ forward |" if withForward else ""
    singleHeader = " MB/s ÷ one instance |" if singles else ""
    out = [
        f"| mailbox | N | target | MB/s ÷ nginx | MB/s ÷ direct |{forwardHeader}{singleHeader} "
        "RETR p50 over direct ms | RETR p50 over nginx ms |",
        "|---|---:|---|---:|---:|"
        + ("---:|" if withForward else "")
        + ("---:|" if singles else "")
        + "---:|---:|",
    ]
    records = []
    for name, _ in mailboxes:
        for sessions in sessionCounts:
            nginx = table.get((name, sessions, "nginx"))
            direct = table.get((name, sessions, "direct"))
            forward = table.get((name, sessions, "forward"))
            if nginx is None and direct is None and forward is None and not singles:
                continue
            for subject in subjects:
                row = table.get((name, sessions, subject))
                if row is None:
                    continue
                record: dict[str, Any] = {
                    "mailbox": name,
                    "sessions": sessions,
                    "target": subject,
                    "vsNginx": _ratio(row, nginx),
                    "vsDirect": _ratio(row, direct),
                    "retrP50OverDirectMs": _over(row, direct),
                    "retrP50OverNginxMs": _over(row, nginx),
                }
                forwardCell = ""
                if withForward:
                    record["vsForward"] = _ratio(row, forward)
                    forwardCell = f" {_times(record['vsForward'])} |"
                singleCell = ""
                if singles:
                    single = table.get((name, sessions, singles.get(subject, "")))
                    record["vsOneInstance"] = _ratio(row, single)
                    singleCell = f" {_times(record['vsOneInstance'])} |"
                records.append(record)
                out.append(
                    f"| {name} | {sessions} | {subject} | {_times(record['vsNginx'])} "
                    f"| {_times(record['vsDirect'])} |{forwardCell}{singleCell} "
                    f"{_signed(record['retrP50OverDirectMs'])} "
                    f"| {_signed(record['retrP50OverNginxMs'])} |"
                )
    return "\n".join(out) + "\n", records


def _ratio(row: dict[str, float], reference: dict[str, float] | None) -> float:
    if reference is None or not reference["mbPerSecond"]:
        return math.nan
    return row["mbPerSecond"] / reference["mbPerSecond"]


def _over(row: dict[str, float], reference: dict[str, float] | None) -> float:
    if reference is None:
        return math.nan
    return row["retrP50Ms"] - reference["retrP50Ms"]


def _times(value: float) -> str:
    return "–" if _missing(value) else f"{value:.2f}×"


def _signed(value: float) -> str:
    return "–" if _missing(value) else f"{value:+.2f}"


def memoryTables(memory: dict[str, Any]) -> str:
    """
    The idle-sessions and big-RETR measurements as Markdown.
    """
    out = []
    idle = memory.get("idle")
    if idle:
        out.append(f"### {idle['sessions']} concurrent idle authenticated sessions\n")
        out.append(
            "| target | RSS before MB | RSS with sessions MB | per session KB "
            "| sessions open | login errors | seconds to open |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for target, row in idle["targets"].items():
            out.append(
                f"| {target} | {_number(row['rssBeforeMB'])} | {_number(row['rssWithSessionsMB'])} "
                f"| {_number(row['perSessionKB'])} | {row['opened']} | {row['errors']} "
                f"| {_number(row['seconds'])} |"
            )
        out.append("")
    big = memory.get("big")
    if big:
        out.append(f"### One RETR of a {big['sizeMB']:.1f} MB message\n")
        out.append(
            "| target | client | RSS before MB | peak RSS increase MB | increase ÷ message size "
            "| seconds | verified |"
        )
        out.append("|---|---|---:|---:|---:|---:|---|")
        for target, cases in big["targets"].items():
            for client, row in cases.items():
                out.append(
                    f"| {target} | {client} | {_number(row['rssBeforeMB'])} "
                    f"| {_number(row['peakIncreaseMB'])} | {_number(row['increaseRatio'], 2)}× "
                    f"| {_number(row['seconds'], 2)} | {_verified(row)} |"
                )
        out.append("")
    return "\n".join(out)


def _verified(row: dict[str, Any]) -> str:
    return "yes" if row["ok"] else f"NO: {row['detail']}"


def profileTable(samples: int, functions: Sequence[Any], title: str) -> str:
    out = [
        f"### {title} ({samples} busy samples)\n",
        "| function | self % | total % |",
        "|---|---:|---:|",
    ]
    for function in functions:
        name = function.name.replace("|", "\\|")
        out.append(f"| `{name}` | {function.selfPercent:.1f} | {function.totalPercent:.1f} |")
    return "\n".join(out) + "\n"
