"""
An attack on popproxy as a fresh install is protected (issue #13): an idle
flood and a password spray from one address while a user polls its mail.

    python3 bench/attack.py [--idle 3000] [--spray 10000] [--accounts 2000]
                            [--duration 90] [--json attack.json]

It starts, on loopback high ports, a private Dovecot (L{bench._dovecot}), a
counting relay in front of it (L{bench._countingrelay}: every connection
the proxy opens upstream and every C{PASS}/C{APOP}/C{AUTH} line it sends is
counted there, so the upstream's figures do not rely on the proxy's word)
and C{twistd -n popproxy} relaying to that relay with the default
C{[limits]} except C{trusted_networks = []}: loopback is trusted by
default, and the attacker and the user must count as the Internet
addresses they stand for.  Its open-file limit is C{--proxy-fd-limit}
(1024 by default: systemd's default soft limit, under which the shipped
unit runs it), from which popproxy derives its total session limit.

Then, for C{--duration} seconds, at the same time:
  - from 127.0.0.3 (or C{--attacker-addresses N} addresses from there on,
    taken in turn) the attacker (L{bench._attacker}) opens C{--idle} idle
    connections and holds them, and sprays C{--spray} wrong passwords over
    C{--accounts} accounts (the user's own first) on
    C{--spray-connections} sessions, pipelined, reconnecting at once;
  - from 127.0.0.2 the user (L{bench._legitclient}), who logged in once
    before the attack, polls every C{--legit-interval} seconds: login, RETR
    of each message (compared byte for byte), QUIT.
The proxy's RSS and open descriptors are sampled every 0.1 s.

It prints a Markdown table on stdout (progress on stderr), the whole
report as JSON with C{--json}, and exits 1 if a goal was missed: the user
never refused and logged in within a second each time, the upstream seeing
no more attempts and connections than the limits allow.  Needs root
(Dovecot runs mail as a dedicated user).  Everything it starts is stopped
however it ends (error, Ctrl-C, SIGTERM, C{--timeout}).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python3 bench/attack.py): make the bench package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _corpus, _process, _report  # noqa: E402
from bench._attacker import AttackerResult, AttackPlan, runAttacker  # noqa: E402
from bench._countingrelay import CountingRelayProcess  # noqa: E402
from bench._dovecot import DovecotServer  # noqa: E402
from bench._legitclient import LegitPlan, LegitResult, poll, runLegitClient  # noqa: E402
from bench._load import percentile  # noqa: E402
from bench._popproxy import PopproxyProcess  # noqa: E402
from bench._report import progress  # noqa: E402
from popproxy._admission import ConnectionLimits, sessionsForDescriptors  # noqa: E402
from popproxy._loginthrottle import ThrottleSettings  # noqa: E402

USER = "127.0.0.2"

#: A line of popproxy's log about refused connections (one, or a count).
REFUSAL_LINE = r"\] (?:connection from \S+ refused|refused \d+ more connections)"
MB = 1e6

#: The proxy's configuration: the defaults, except that loopback is not trusted.
CONFIG = """\
# Written by bench/attack.py: a fresh install's [limits], loopback not trusted.
[limits]
trusted_networks = []
"""


class AttackTimeout(Exception):
    """
    The whole run took longer than C{--timeout}.
    """


class ProxyWatch:
    """
    Samples the proxy's resident memory and open descriptors (its worker
    processes included) every 0.1 s in a thread, keeping the peaks.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peakRss = 0
        self.peakDescriptors = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pids = [self.pid, *_process.descendantsOf(self.pid)]
            rss = sum(_process.memory(pid)["VmRSS"] for pid in pids)
            descriptors = sum(_process.openDescriptors(pid) for pid in pids)
            self.peakRss = max(self.peakRss, rss)
            self.peakDescriptors = max(self.peakDescriptors, descriptors)
            self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def sprayGuesses(count: int, accounts: int, first: str) -> tuple[tuple[str, str], ...]:
    """
    C{count} wrong guesses over C{accounts} accounts (C{first} among them,
    tried first), password by password over every account, as a spray goes.
    """
    names = [first] + [f"user{number:05d}" for number in range(1, accounts)]
    rounds = math.ceil(count / len(names))
    guesses = [(name, f"Guess{round_}-2026!") for round_ in range(rounds) for name in names]
    return tuple(guesses[:count])


def attackerAddresses(count: int) -> tuple[str, ...]:
    """
    The attacker's C{count} addresses: 127.0.0.3, 127.0.0.4, ...
    """
    return tuple(f"127.0.0.{3 + n}" for n in range(count))


def bounds(
    duration: float, addresses: int, fileLimit: int, sprayConnections: int
) -> dict[str, Any]:
    """
    What the default limits allow the attacker's addresses at most, from
    popproxy's own defaults, with the reasoning.
    """
    limits, throttle = ConnectionLimits(), ThrottleSettings()
    maxSessions = sessionsForDescriptors(fileLimit)
    toBlock = math.ceil(throttle.blockAfter / throttle.newAccountWeight)
    blocks = math.ceil(duration / throttle.blockFor)
    return {
        "maxSessions": maxSessions,
        "maxSessionsPerAddress": limits.perAddress,
        "connectionRate": f"{limits.connectionRate} per {limits.rateInterval:g} s",
        "failuresToBlock": toBlock,
        "blockSeconds": throttle.blockFor,
        "loginsInFlight": throttle.inFlight,
        # Each failure for a new account scores new_account_weight; the
        # block lands at block_after, when at most in_flight - 1 other
        # attempts from the address await their verdict (every later one
        # takes its place after the block is on record, and is refused).
        "attackerPasswordAttempts": addresses * blocks * (toBlock + throttle.inFlight - 1),
        "preloginUpstream": limits.preloginUpstream,
        # One upstream connection per admitted session at most, and at most
        # max_sessions_per_address admitted at once per address (and
        # max_sessions in all); of them, idle sessions hold at most
        # prelogin_upstream (the greeting's), the spray's sessions one each
        # for their logins; the user holds one.
        "peakUpstreamConnections": min(
            addresses * limits.perAddress,
            maxSessions - 1,
            limits.preloginUpstream + sprayConnections,
        )
        + 1,
    }


def startProxy(
    upstreamPort: int, config: Path, fdLimit: int, source: Path | None
) -> PopproxyProcess:
    """
    Start popproxy with C{fdLimit} as its open-file limit (the benchmark's
    own limit is put back at once).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proxy = PopproxyProcess(upstreamPort, config=config, source=source)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(fdLimit, hard), hard))
    try:
        proxy.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return proxy


def _workerSignals() -> None:
    """
    In a worker: Ctrl-C is the parent's to handle; SIGTERM ends the worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def latency(values: list[float]) -> dict[str, Any]:
    """
    Count, min, median, p95 and max of C{values} in seconds (C{None}s if empty).
    """
    if not values:
        return {"count": 0, "min": None, "median": None, "p95": None, "max": None}
    return {
        "count": len(values),
        "min": min(values),
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values),
    }


def proxyLogFigures(text: str) -> dict[str, Any]:
    """
    What popproxy's log says: refusals by reason (a line for each first
    refusal, and the counts of the lines that sum up the refusals of an
    interval: those of the last interval before the proxy stopped are not
    logged), how many lines they took, login failures and blocks, and how
    big the attack made the log.
    """
    refused: Counter[str] = Counter(re.findall(r"\] connection from \S+ refused: (\w+)", text))
    summed = re.findall(r"\] refused (\d+) more connections from .+ in the last \d+s: (\w+)", text)
    for count, reason in summed:
        refused[reason] += int(count)
    return {
        "lines": text.count("\n"),
        "bytes": len(text.encode()),
        "refusedConnections": dict(refused),
        "refusalLines": len(re.findall(REFUSAL_LINE, text)),
        "loginFailures": len(re.findall(r"login failure: client=", text)),
        "loginBlocks": re.findall(r"login block: client=(\S+ seconds=\d+ account=\S+)", text),
        "tracebacks": text.count("Traceback"),
    }


def dovecotLogFigures(text: str) -> dict[str, Any]:
    """
    What Dovecot's own log says: POP3 connections its login process ended
    (by outcome) and the failed password attempts it counted.
    """
    outcomes = Counter(re.findall(r"pop3-login: Info: (Login|Disconnected|Aborted login)", text))
    return {
        "loginProcessConnections": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "failedAttempts": sum(int(n) for n in re.findall(r"auth failed, (\d+) attempts", text)),
    }


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 bench/attack.py",
        description="An idle flood and a password spray from one address, while a user polls.",
    )
    add = parser.add_argument
    add("--idle", type=int, default=3000, help="idle connections (default: 3000)")
    add("--spray", type=int, default=10000, help="wrong passwords to try (default: 10000)")
    add("--accounts", type=int, default=2000, help="accounts sprayed (default: 2000)")
    add(
        "--attacker-addresses",
        type=int,
        default=1,
        help="attack from this many addresses, 127.0.0.3 on (default: 1)",
    )
    add("--spray-connections", type=int, default=20, help="spray sessions at once (default: 20)")
    add("--duration", type=float, default=90.0, help="seconds the attack lasts (default: 90)")
    add("--legit-interval", type=float, default=2.0, help="seconds between the user's polls")
    add("--proxy-fd-limit", type=int, default=1024, help="popproxy's RLIMIT_NOFILE (default: 1024)")
    add("--timeout", type=float, help="seconds the whole run may take (default: duration + 180)")
    add("--popproxy-source", type=Path, metavar="DIR", help="measure this checkout instead")
    add("--json", type=Path, metavar="FILE", help="write the report as JSON")
    add("--logs", type=Path, metavar="DIR", help="keep popproxy's and Dovecot's logs in DIR")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.attacker_addresses <= 200:
        parser.error("--attacker-addresses must be from 1 to 200")
    if arguments.accounts < 1 or arguments.spray < 0 or arguments.idle < 0:
        parser.error("--accounts must be at least 1, --spray and --idle at least 0")
    if arguments.duration <= 0 or arguments.legit_interval <= 0:
        parser.error("--duration and --legit-interval must be positive")
    if arguments.timeout is None:
        arguments.timeout = arguments.duration + 180.0
    return arguments


def _userMailbox() -> _corpus.Mailbox:
    rng = random.Random(13)
    sizes = (4_000, 50_000, 200_000)
    return _corpus.Mailbox(
        "user", tuple(_corpus.plainMessage(rng, n, size) for n, size in enumerate(sizes))
    )


def _plans(
    arguments: argparse.Namespace, proxyPort: int, dovecot: DovecotServer, mailbox: _corpus.Mailbox
) -> tuple[AttackPlan, LegitPlan]:
    account = dovecot.accounts[mailbox.name]
    startAt = time.monotonic() + 1.0
    stopAt = startAt + arguments.duration
    attack = AttackPlan(
        port=proxyPort,
        sources=attackerAddresses(arguments.attacker_addresses),
        idle=arguments.idle,
        guesses=sprayGuesses(arguments.spray, arguments.accounts, account.user),
        connections=arguments.spray_connections,
        startAt=startAt,
        stopAt=stopAt,
    )
    user = LegitPlan(
        port=proxyPort,
        source=USER,
        user=account.user,
        password=account.password,
        messages=mailbox.messages,
        interval=arguments.legit_interval,
        timeout=30.0,
        startAt=startAt,
        stopAt=stopAt,
    )
    return attack, user


def _run(
    arguments: argparse.Namespace, pool: Pool, dovecot: DovecotServer, directory: Path
) -> dict[str, Any]:
    """
    Start the relay and the proxy, warm up, attack; the report's figures.
    """
    relay = CountingRelayProcess(dovecot.port)
    proxy: PopproxyProcess | None = None
    watch: ProxyWatch | None = None
    config = directory / "attack.toml"
    config.write_text(CONFIG)
    try:
        relay.start()
        proxy = startProxy(relay.port, config, arguments.proxy_fd_limit, arguments.popproxy_source)
        pids = {"dovecot": dovecot.pid, "relay": relay.pid, "popproxy": proxy.pid}
        progress(
            f"dovecot on {dovecot.port}, relay on {relay.port}, popproxy on {proxy.port}; "
            + "pids "
            + " ".join(f"{name}={pid}" for name, pid in pids.items())
        )
        attackPlan, userPlan = _plans(arguments, proxy.port, dovecot, _userMailbox())
        # The user logged in before the attack (the proxy remembers where from).
        warmUp = LegitResult()
        poll(userPlan, warmUp)
        if warmUp.failures:
            raise RuntimeError(f"the user's warm-up poll failed: {warmUp.failures}\n{proxy.log()}")
        time.sleep(0.5)
        attackPlan, userPlan = _plans(arguments, proxy.port, dovecot, _userMailbox())
        before = relay.counters()
        watch = ProxyWatch(proxy.pid)
        watch.start()
        progress(
            f"attack for {arguments.duration:g} s from "
            f"{', '.join(attackerAddresses(arguments.attacker_addresses))}; "
            f"the user polls from {USER}"
        )
        attacked = pool.apply_async(runAttacker, (attackPlan,))
        polled = pool.apply_async(runLegitClient, (userPlan,))
        wait = arguments.duration + 120.0
        attacker: AttackerResult = attacked.get(timeout=wait)
        user: LegitResult = polled.get(timeout=wait)
        watch.stop()
        time.sleep(0.5)  # the proxy closes its last upstream connections
        figures = _figures(arguments, proxy, watch, relay, before, attacker, user)
        proxyLog = _readLog(proxy.directory / "twistd.log", arguments.logs)
        figures["proxyLog"] = proxyLogFigures(proxyLog)
        figures["pids"] = pids
        return figures
    except BaseException:
        if proxy is not None:
            progress(f"popproxy's log ends:\n{proxy.log()}")
        raise
    finally:
        if watch is not None:
            watch.stop()
        if proxy is not None:
            proxy.stop()
        relay.stop()


def _readLog(path: Path, keepIn: Path | None) -> str:
    """
    The whole of log C{path}, with the parts twistd rotated away
    (C{path.1} is the newest of those), oldest first; copied into
    directory C{keepIn} if given.
    """
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    text = "".join(p.read_text("utf-8", "replace") for p in [*rotated, path] if p.exists())
    if keepIn is not None:
        keepIn.mkdir(parents=True, exist_ok=True)
        (keepIn / path.name).write_text(text)
    return text


def _figures(
    arguments: argparse.Namespace,
    proxy: PopproxyProcess,
    watch: ProxyWatch,
    relay: CountingRelayProcess,
    before: dict[str, Any],
    attacker: AttackerResult,
    user: LegitResult,
) -> dict[str, Any]:
    after = relay.counters()
    fdLimit = _process.fileLimit(proxy.pid)
    attempts = after["passwordAttempts"] - before["passwordAttempts"]
    return {
        "upstream": {
            "countedBy": "a counting relay between popproxy and Dovecot (bench/_countingrelay.py)",
            "connectionsOpened": after["connections"] - before["connections"],
            "peakOpenConnections": after["peakOpen"],
            "passwordAttempts": attempts,
            "userPasswordAttempts": user.passAnswered,
            "attackerPasswordAttempts": attempts - user.passAnswered,
            "verbs": {k: v - before["verbs"].get(k, 0) for k, v in after["verbs"].items()},
        },
        "attacker": _attackerFigures(attacker),
        "user": {
            "polls": user.sessions,
            "interval": arguments.legit_interval,
            "refusedOrFailed": len(user.failures),
            "failures": user.failures[:20],
            "loginSeconds": latency(user.loginSeconds),
            "retrSeconds": latency(user.retrSeconds),
        },
        "proxy": {
            "pid": proxy.pid,
            "fileLimit": fdLimit,
            "maxSessionsDerived": sessionsForDescriptors(fdLimit) if fdLimit else None,
            "peakRssMB": watch.peakRss / MB,
            "peakOpenDescriptors": watch.peakDescriptors,
            "samples": watch.samples,
        },
    }


def _attackerFigures(attacker: AttackerResult) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for key, value in vars(attacker).items():
        if isinstance(value, Counter):
            figures[key] = dict(value)
        elif key == "idleClosedAfter":
            figures["idleClosedAfterSeconds"] = latency(value)
        elif key == "verdictTimes":
            figures["verdictSeconds"] = {
                "first": value[0] if value else None,
                "last": value[-1] if value else None,
            }
        else:
            figures[key] = value
    return figures


def goals(report: dict[str, Any]) -> dict[str, bool]:
    """
    Whether each goal of issue #13 was met.
    """
    user, upstream, bound = report["user"], report["upstream"], report["bounds"]
    slowest = user["loginSeconds"]["max"]
    return {
        "userNeverRefused": user["refusedOrFailed"] == 0 and user["polls"] > 0,
        "userLoggedInWithin1s": slowest is not None and slowest <= 1.0,
        "attackerAttemptsWithinBound": upstream["attackerPasswordAttempts"]
        <= bound["attackerPasswordAttempts"],
        "upstreamConnectionsWithinBound": upstream["peakOpenConnections"]
        <= bound["peakUpstreamConnections"],
    }


def _seconds(row: dict[str, Any]) -> str:
    if not row["count"]:
        return "none"
    return (
        f"{row['count']}: min {row['min'] * 1000:.0f} ms, median {row['median'] * 1000:.0f} ms, "
        f"p95 {row['p95'] * 1000:.0f} ms, max {row['max'] * 1000:.0f} ms"
    )


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"


def table(report: dict[str, Any]) -> str:
    """
    The report as a Markdown table.
    """
    up, at, user, proxy = report["upstream"], report["attacker"], report["user"], report["proxy"]
    bound, log = report["bounds"], report["proxyLog"]
    rows = [
        ("duration", f"{report['seconds']:.1f} s (attack {report['arguments']['duration']:g} s)"),
        (
            "upstream connections opened (relay)",
            f"{up['connectionsOpened']}, at most "
            f"{up['peakOpenConnections']} at once (bound {bound['peakUpstreamConnections']})",
        ),
        (
            "password attempts at the upstream (relay: PASS/APOP/AUTH)",
            f"{up['passwordAttempts']}:"
            f" attacker {up['attackerPasswordAttempts']}"
            f" (bound {bound['attackerPasswordAttempts']}),"
            f" user {up['userPasswordAttempts']}",
        ),
        (
            "Dovecot's log: connections / failed attempts",
            f"{report['dovecotLog']['loginProcessConnections']}"
            f" / {report['dovecotLog']['failedAttempts']} (whole run, warm-up included)",
        ),
        ("idle connections opened", f"{at['idleOpened']}: {_reasons(at['idleAnswers'])}"),
        (
            "idle sessions closed by the proxy",
            f"{_reasons(at['idleClosed'])}; held at the end {at['idleHeldAtEnd']}",
        ),
        (
            "spray: guesses with a verdict",
            f"{at['verdicts']} of {report['arguments']['spray']}"
            f" ({at['guessesLeft']} left untried)",
        ),
        (
            "spray connections refused at the door",
            f"{at['sprayConnections']} made: {_reasons(at['sprayRefusals'])}",
        ),
        ("spray logins refused or answered", _reasons(at["loginAnswers"])),
        (
            "user polls (login, RETR ×3, QUIT)",
            f"{user['polls']}, refused or failed: {user['refusedOrFailed']}",
        ),
        ("user login latency", _seconds(user["loginSeconds"])),
        ("user RETR latency", _seconds(user["retrSeconds"])),
        (
            "proxy open-file limit → default max_sessions",
            f"{proxy['fileLimit']} → {proxy['maxSessionsDerived']}",
        ),
        (
            "proxy peak RSS / open descriptors",
            f"{proxy['peakRssMB']:.1f} MB / {proxy['peakOpenDescriptors']}",
        ),
        (
            "proxy log: refusals (lines) / login failures / blocks",
            f"{_reasons(log['refusedConnections'])} ({log['refusalLines']} lines)"
            f" / {log['loginFailures']} / {len(log['loginBlocks'])};"
            f" {log['lines']} lines, {log['bytes'] / MB:.2f} MB",
        ),
        (
            "load average before → after",
            f"{report['loadAverageBefore'][0]:.2f} → {report['loadAverageAfter'][0]:.2f}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += [
        "",
        "Goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in report["goals"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = parseArguments(argv)
    if os.geteuid() != 0:
        progress("bench/attack.py needs root: its Dovecot runs mail as a dedicated system user")
        return 2
    started = time.monotonic()
    # The attacker's sockets, and Dovecot's and the relay's; popproxy gets its
    # own limit, which the hard limit raised here must allow.
    wanted = arguments.idle + arguments.spray_connections + 2000
    limit = _process.raiseFileLimit(max(wanted, arguments.proxy_fd_limit))
    progress(f"open-file limit {limit}; load average {os.getloadavg()[0]:.2f}")
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(
            ["python3", *(sys.argv if argv is None else ["bench/attack.py", *argv])]
        ),
        "machine": _report.machineInfo(),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(arguments).items()},
        "attackerAddresses": attackerAddresses(arguments.attacker_addresses),
        "userAddress": USER,
        "config": CONFIG,
        "benchmarkFileLimit": limit,
        "bounds": bounds(
            arguments.duration,
            arguments.attacker_addresses,
            arguments.proxy_fd_limit,
            arguments.spray_connections,
        ),
        "loadAverageBefore": os.getloadavg(),
    }
    # The workers fork before any thread, server or signal handler exists.
    pool = multiprocessing.get_context("fork").Pool(2, initializer=_workerSignals)
    dovecot = DovecotServer([_userMailbox()], 300)
    directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-attack-"))
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    signal.signal(signal.SIGALRM, _timedOut)
    signal.alarm(math.ceil(arguments.timeout))
    try:
        dovecot.start()
        report.update(_run(arguments, pool, dovecot, directory))
        # Read once the proxy is gone: Dovecot logs a login's attempts when
        # its connection closes.
        time.sleep(0.5)
        dovecotLog = _readLog(dovecot.directory / "dovecot.log", arguments.logs)
        report["dovecotLog"] = dovecotLogFigures(dovecotLog)
    finally:
        signal.alarm(0)
        pool.terminate()
        pool.join()
        dovecot.stop()
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()
    report["seconds"] = time.monotonic() - started
    report["loadAverageAfter"] = os.getloadavg()
    report["goals"] = goals(report)
    print(table(report))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"report written to {arguments.json}")
    return 0 if all(report["goals"].values()) else 1


def _timedOut(number: int, frame: object) -> None:
    raise AttackTimeout("bench/attack.py: --timeout reached; stopping everything")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have stopped every server by now.
        progress("interrupted")
        sys.exit(130)
