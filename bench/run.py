"""
The benchmark's one command: popproxy against nginx's mail proxy and Dovecot.

    python3 bench/run.py [--quick] [--json results.json] [options]

It starts everything on 127.0.0.1 high ports: a private Dovecot serving the
generated mailboxes ("direct"), nginx's mail proxy in front of it ("nginx",
the reference), and popproxy with an empty filter chain ("popproxy", plus
any C{--variant}, e.g. with a filter chain or another checkout); on request
also a bare Twisted byte forwarder ("forward", C{--targets
direct,nginx,forward,popproxy}), the floor of any Twisted relay, and
popproxy instances behind HAProxy (C{haproxy2}: two instances of the
C{popproxy} target, C{haproxy1}: one, the balancer's own cost;
C{haproxy2-chain}: two of the variant C{chain}; see docs/scaling.md).  It prints
Markdown tables (throughput medians, the ratios popproxy/nginx and
popproxy/direct from the same run, memory) on stdout, progress on stderr,
and everything as JSON with C{--json}.  See docs/performance.md.  Needs
root: Dovecot runs mail as a dedicated system user.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python3 bench/run.py): make the bench package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _corpus, _cpushare, _pinning, _process, _profile, _report  # noqa: E402
from bench._dovecot import DovecotServer  # noqa: E402
from bench._load import LoadGenerator  # noqa: E402
from bench._loadedmemory import loadedMemoryTable, measureLoadedMemory  # noqa: E402
from bench._memory import measureMemory  # noqa: E402
from bench._popproxy import PopproxyProcess  # noqa: E402
from bench._report import progress  # noqa: E402
from bench._settings import (  # noqa: E402
    REFERENCES,
    THROUGHPUT_MAILBOXES,
    Settings,
    Variant,
    parseBalanced,
    parseVariant,
)
from bench._throughput import runRounds  # noqa: E402

MB = 1e6

#: What --quick changes (about a minute instead of about three).
QUICK_REPEATS = 1
QUICK_MIN_MEGABYTES = 40.0


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item for item in text.split(",") if item)


def parseArguments(argv: list[str] | None = None) -> tuple[Settings, Path | None]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python3 bench/run.py",
        description="Benchmark popproxy against nginx's mail proxy and Dovecot, on loopback.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="about a minute: one round of smaller runs")
    add(
        "--mode",
        choices=("all", "throughput", "memory", "loaded"),
        default="all",
        help="what to measure (default: all = throughput and memory; loaded: memory while "
        "--load-sessions fetch --load-mailbox, only when asked)",
    )
    add("--sessions", default="1,10,50", help="concurrent clients N (default: 1,10,50)")
    add("--repeats", type=int, help=f"rounds over all targets (default: {defaults.repeats})")
    add(
        "--min-megabytes",
        type=float,
        help="clients repeat their session until a run moves about this many MB "
        f"(default: {defaults.minMegabytes:g})",
    )
    add("--messages", type=int, default=defaults.messages, help="messages in the 50k mailbox")
    add("--message-size", type=int, default=defaults.messageSize, help="their size in bytes")
    add(
        "--mixed-scale",
        type=float,
        default=1.0,
        help="scale the mixed mailbox (~15 MB, largest message 5 MB, at 1.0)",
    )
    add("--mailboxes", default="50k,mixed", help="throughput mailboxes (default: 50k,mixed)")
    add(
        "--targets",
        default="direct,nginx,popproxy",
        help="default: direct,nginx,popproxy; also forward (a bare Twisted byte forwarder), "
        "haproxyN (N popproxy instances behind HAProxy) and haproxyN-VARIANT (N of a --variant)",
    )
    add(
        "--popproxy-source",
        type=Path,
        metavar="DIR",
        help="measure the popproxy in this checkout (PYTHONPATH) instead of the installed one",
    )
    add(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[,config=FILE][,source=DIR]",
        help="another popproxy target: with --config FILE (e.g. a filter chain) and/or with "
        "PYTHONPATH=DIR (another checkout); repeatable",
    )
    add("--nginx-workers", default="1", help="nginx worker_processes (default: 1, like popproxy)")
    add("--load-processes", type=int, default=4, help="load generator processes (default: 4)")
    add("--timeout", type=float, default=120.0, help="seconds to wait for any one answer")
    add("--idle-sessions", type=int, default=1000, help="idle sessions (memory part)")
    add("--big-mb", type=float, default=20.0, help="size of the big message (default: 20)")
    add(
        "--slow-rate-mb",
        type=float,
        default=4.0,
        help="MB/s of the slow client reading the big message (default: 4; 0 skips it)",
    )
    add("--profile", type=Path, metavar="DIR", help="also profile popproxy with py-spy into DIR")
    add("--profile-sessions", type=int, default=10, help="clients while profiling (default: 10)")
    add("--profile-seconds", type=float, default=15.0, help="seconds per profiled mailbox")
    add("--json", type=Path, metavar="FILE", help="write every result as JSON")
    add(
        "--pin",
        metavar="auto|PROXY:REST",
        help="run the proxy under test on CPUs PROXY, Dovecot and the load generator on REST "
        "(taskset lists, e.g. 0:1 or 0-1:2-3; auto: split this machine's CPUs in halves)",
    )
    add("--load-sessions", type=int, default=50, help="sessions of --mode loaded (default: 50)")
    add("--load-mailbox", default="mixed", help="mailbox of --mode loaded (default: mixed)")
    add(
        "--scaling",
        action="append",
        default=[],
        metavar="TARGET/TARGET",
        help="also print this throughput ratio, e.g. chain-workers2/chain; repeatable",
    )
    arguments = parser.parse_args(argv)
    try:
        pin = _pinning.parsePinning(arguments.pin) if arguments.pin else None
        scaling = tuple(_cpushare.parseScaling(pair) for pair in arguments.scaling)
    except ValueError as e:
        parser.error(str(e))

    repeats: int = arguments.repeats or (QUICK_REPEATS if arguments.quick else defaults.repeats)
    minMegabytes: float = arguments.min_megabytes or (
        QUICK_MIN_MEGABYTES if arguments.quick else defaults.minMegabytes
    )
    sessionCounts = tuple(int(n) for n in _csv(arguments.sessions))
    mailboxes = _csv(arguments.mailboxes)
    targets = list(_csv(arguments.targets))
    variants = {"popproxy": Variant(None, arguments.popproxy_source)}
    for item in arguments.variant:
        try:
            name, variant = parseVariant(item, arguments.popproxy_source)
        except ValueError as e:
            parser.error(f"--variant {item!r}: {e}")
        if name in REFERENCES or name in variants:
            parser.error(f"--variant {item!r}: the name {name!r} is taken")
        variants[name] = variant
        if name not in targets:  # "--targets nginx,x --variant x,..." measures x once
            targets.append(name)
    if {*mailboxes, arguments.load_mailbox} - set(THROUGHPUT_MAILBOXES):
        parser.error(f"mailboxes are {', '.join(THROUGHPUT_MAILBOXES)}")
    for name in targets:
        balanced = parseBalanced(name)
        if balanced is not None and balanced.variant not in variants:
            parser.error(f"target {name!r}: no variant {balanced.variant!r} (give --variant)")
        if name not in REFERENCES and name not in variants and balanced is None:
            parser.error(f"unknown target {name!r}")
    if not sessionCounts or min(sessionCounts) < 1 or repeats < 1:
        parser.error("session counts and repeats must be at least 1")
    return Settings(
        mode=arguments.mode,
        sessionCounts=sessionCounts,
        repeats=repeats,
        minMegabytes=minMegabytes,
        messages=arguments.messages,
        messageSize=arguments.message_size,
        mixedScale=arguments.mixed_scale,
        mailboxes=mailboxes,
        targets=tuple(targets),
        variants=variants,
        nginxWorkers=arguments.nginx_workers,
        loadProcesses=arguments.load_processes,
        timeout=arguments.timeout,
        idleSessions=arguments.idle_sessions,
        bigMegabytes=arguments.big_mb,
        slowRateMegabytes=arguments.slow_rate_mb,
        profileDirectory=arguments.profile,
        profileSessions=arguments.profile_sessions,
        profileSeconds=arguments.profile_seconds,
        pin=pin,
        loadSessions=arguments.load_sessions,
        loadMailbox=arguments.load_mailbox,
        scaling=scaling,
    ), arguments.json


def main(argv: list[str] | None = None) -> int:
    settings, jsonPath = parseArguments(argv)
    if os.geteuid() != 0:
        progress("bench/run.py needs root: its Dovecot runs mail as a dedicated system user")
        return 2
    started = time.monotonic()
    limit = _process.raiseFileLimit(max(65536, settings.idleSessions * 4 + 1000))
    progress(f"open-file limit {limit}; load average {os.getloadavg()[0]:.2f}")
    mailboxes = [
        _corpus.mailbox50k(settings.messages, settings.messageSize),
        _corpus.mixedMailbox(settings.mixedScale),
        _corpus.bigMailbox(int(settings.bigMegabytes * MB)),
        _corpus.idleMailbox(),
    ]
    for mailbox in mailboxes:
        progress(f"mailbox {mailbox.name}: {mailbox.describe()}")
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python3", *sys.argv]),
        "machine": _report.machineInfo(),
        "loadAverageBefore": os.getloadavg(),
        "settings": settings.describe(),
        "mailboxes": {
            m.name: {
                "messages": len(m.messages),
                "bytes": m.totalBytes,
                "description": m.describe(),
            }
            for m in mailboxes
        },
    }
    if settings.pin is not None:
        # Inherited by the load generator's workers and Dovecot; each proxy
        # is moved to the proxy's CPUs once started (bench._targets).
        _pinning.pinProcess(os.getpid(), settings.pin.rest)
        results["pinning"] = settings.pin.describe()
    # The pool forks before any thread or signal handler exists, sharing the
    # mailboxes copy-on-write.
    generator = LoadGenerator(mailboxes, settings.loadProcesses)
    dovecot = DovecotServer(
        mailboxes, max(max(settings.sessionCounts) * 2, settings.idleSessions + 100)
    )
    # SIGTERM unwinds like Ctrl-C, so every finally block stops its servers.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    failed = False
    try:
        dovecot.start()
        progress(f"dovecot on 127.0.0.1:{dovecot.port}")
        if settings.pin is not None:
            results["pinning"]["dovecotAffinity"] = _pinning.affinity(dovecot.pid)
            progress(f"pinned: {results['pinning']}")
        results["popproxy"] = _whereFrom(settings, dovecot.port)
        results["revision"] = _gitRevision(Path(__file__).resolve().parent.parent)
        if settings.mode in ("all", "throughput"):
            progress("throughput:")
            runs, profiles = runRounds(settings, generator, dovecot)
            failed = failed or any(run["errors"] for run in runs)
            print(_throughputReport(settings, runs, profiles, results, mailboxes))
        if settings.mode in ("all", "memory"):
            progress("memory:")
            memory = measureMemory(settings, generator, dovecot)
            results["memory"] = memory
            failed = failed or any(row["errors"] for row in memory["idle"]["targets"].values())
            failed = failed or any(
                not case["ok"]
                for cases in memory["big"]["targets"].values()
                for case in cases.values()
            )
            print("## Memory\n")
            print(_report.memoryTables(memory))
        if settings.mode == "loaded":
            progress("memory under load:")
            results["loadedMemory"] = loaded = measureLoadedMemory(settings, generator, dovecot)
            failed = failed or any(row["errors"] for row in loaded["targets"].values())
            print("## Memory under load\n")
            print(loadedMemoryTable(loaded))
        results["dovecotErrors"] = dovecot.errors()[:20]
    finally:
        generator.close()
        dovecot.stop()
    results["seconds"] = time.monotonic() - started
    results["loadAverageAfter"] = os.getloadavg()
    results["failed"] = failed
    if jsonPath is not None:
        jsonPath.write_text(json.dumps(_withoutNaN(results), indent=2) + "\n")
        progress(f"results written to {jsonPath}")
    progress(f"done in {results['seconds']:.0f} s" + (" WITH ERRORS" if failed else ""))
    return 1 if failed else 0


def _throughputReport(
    settings: Settings,
    runs: list[dict[str, Any]],
    profiles: dict[str, Any],
    results: dict[str, Any],
    mailboxes: list[_corpus.Mailbox],
) -> str:
    """
    The throughput tables, ratios and profiles as Markdown; the same data
    goes into C{results}.
    """
    table = _report.medians(runs)
    described = [(m.name, m.describe()) for m in mailboxes if m.name in settings.mailboxes]
    singles = {
        name: settings.variantOf(name)
        for name in settings.popproxyTargets
        if parseBalanced(name) is not None
    }
    ratioText, ratios = _report.ratioTables(
        table, described, settings.sessionCounts, settings.popproxyTargets, singles
    )
    results["runs"] = runs
    results["medians"] = [
        {"mailbox": key[0], "sessions": key[1], "target": key[2], **row}
        for key, row in table.items()
    ]
    results["ratios"] = ratios
    results["profile"] = profiles
    cpuText, results["cpu"] = _cpushare.cpuTable(
        runs, settings.targets, settings.pin, os.cpu_count() or 1
    )
    parts = [
        "## Throughput (medians)\n",
        _report.throughputTables(table, described, settings.sessionCounts, settings.targets),
        "## Ratios (from the medians above, same run)\n",
        ratioText,
        "## CPU by process (medians; seconds per GB relayed)\n",
        cpuText,
    ]
    if settings.scaling:
        scalingText, results["scaling"] = _cpushare.scalingTable(runs, settings.scaling)
        parts += ["## Scaling (ratios of median MB/s)\n", scalingText]
    for key, found in profiles.items():
        for listing, title in (
            ("hottestSelf", "hottest functions by self time"),
            ("popproxyInclusive", "popproxy's own functions by total time"),
        ):
            parts.append(
                _report.profileTable(
                    found["samples"],
                    [_profile.HotFunction(**function) for function in found[listing]],
                    f"py-spy, {key}, N={found['sessions']}: {title}",
                )
            )
    return "\n".join(parts)


def _whereFrom(settings: Settings, upstreamPort: int) -> dict[str, dict[str, str]]:
    """
    Where each popproxy target imports popproxy from, and a digest of that
    code (equal digests: the same code was measured).
    """
    found = {}
    for name in settings.popproxyTargets:
        probe = PopproxyProcess(
            upstreamPort, source=settings.variants[settings.variantOf(name)].source
        )
        try:
            path = probe.whichPopproxy()
        finally:
            probe.stop()
        found[name] = {"path": path, "digest": _digest(Path(path))}
        progress(f"{name}: popproxy from {path} (code digest {found[name]['digest']})")
    return found


def _digest(package: Path) -> str:
    """
    The first 12 hex digits of a SHA-256 over the package's Python files.
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _gitRevision(directory: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "?"
    return result.stdout.strip() or "?"


def _withoutNaN(value: Any) -> Any:
    """
    C{value} with every NaN (a figure that does not apply) as C{None}, so
    the file is strict JSON.
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _withoutNaN(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_withoutNaN(item) for item in value]
    return value


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have stopped every server by now.
        progress("interrupted")
        sys.exit(130)
