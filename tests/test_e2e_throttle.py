"""
Brute-force throttling end to end: `twistd -n popproxy` in front of a
small POP3 server that records every command.  A client on 127.0.0.1
sprays wrong passwords over several accounts, one session each, hanging
up after each answer; once the address is blocked, none of its further
passwords reaches the upstream, while a client on 127.0.0.2 still logs in.
fail2ban's own C{fail2ban-regex} then reads the proxy's log with the
shipped filter and finds each failure and the block, for 127.0.0.1 only.
Parallel sessions' first passwords reach the upstream at most
C{[limits.logins] in_flight} at a time, across worker processes too.
"""

from __future__ import annotations

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.peers.rawpop3 import RawPop3Server

FILTER = Path(__file__).resolve().parents[1] / "contrib" / "fail2ban" / "filter.d" / "popproxy.conf"

CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
login_failure_delay = 0
workers = %d
[upstream]
default = "tcp:127.0.0.1:%d"
[tls]
require = "never"
[limits.logins]
delay = 0.2
max_delay = 0.4
block_after = 10
new_account_weight = 5
"""


def exchange(port: int, lines: list[bytes], source: str = "127.0.0.1") -> list[bytes]:
    """
    Connect from C{source}, send C{lines} one at a time, and return the
    greeting and each answer; hang up without QUIT.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        reader = s.makefile("rb")
        answers = [reader.readline()]
        for line in lines:
            s.sendall(line + b"\r\n")
            answers.append(reader.readline())
        return answers


def banned(log: Path) -> list[str]:
    """
    The address of each line of C{log} that fail2ban's own
    C{fail2ban-regex} matches with the shipped filter, in order.
    """
    result = subprocess.run(
        ["fail2ban-regex", "-o", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def waitForWorker(proxy: Any, timeout: float = 20.0) -> None:
    """
    Wait until the worker process says it serves the listener.
    """
    deadline = time.monotonic() + timeout
    while "worker serving" not in proxy.log():
        assert time.monotonic() < deadline, proxy.log()
        time.sleep(0.05)


def assertBlocked(port: int, number: int) -> None:
    """
    A login as C{user<number>} from 127.0.0.1 is refused at USER as
    blocked and the session closed.
    """
    answers = exchange(port, [b"USER user%d" % number, b"PASS wrong"])
    assert answers[1:] == [
        b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n",
        b"",
    ], answers


def throttledOn(proxy: Any, sessions: int) -> set[str]:
    """
    Which processes ("main", "worker") closed the C{sessions} blocked
    sessions so far, once the log shows them all (a client sees its
    connection end a moment before the proxy logs it).
    """
    deadline = time.monotonic() + 10
    while (log := proxy.log()).count(" closed: throttled after failed logins;") < sessions:
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    return {
        "worker" if "worker 1: " in line else "main"
        for line in log.splitlines()
        if " closed: throttled after failed logins;" in line
    }


def blockedOnBothProcesses(proxy: Any, sessions: int) -> None:
    """
    Blocked attempts after the first C{sessions}, one after another
    (bounded), until the main process and its worker have each refused
    one.  The processes share one listening socket and whichever is awake
    accepts first, so on a loaded machine one may take every session; a
    pause between attempts lets the other reach its accept.
    """
    while (processes := throttledOn(proxy, sessions)) != {"main", "worker"}:
        assert sessions < 120, f"{sessions} blocked sessions all on {processes}:\n{proxy.log()}"
        time.sleep(0.1)
        assertBlocked(proxy.port, sessions)
        sessions += 1


@pytest.mark.parametrize("workers", [1, 2])
def test_blockedAddressPasswordsNeverReachUpstream(
    rawPop3: Any, popproxyFactory: Any, workers: int
) -> None:
    """
    Two failures over two accounts block 127.0.0.1: its next 20 attempts
    are refused at USER and the session closed, and the upstream sees only
    the first two logins; 127.0.0.2 logs in meanwhile; fail2ban-regex matches the
    two failures and the block in the proxy's log.  With two processes,
    the block holds in both (blocked attempts go on, bounded, until each
    process has refused some): they share the main process's counters.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    proxy = popproxyFactory(CONFIG % (workers, server.port))
    if workers > 1:
        waitForWorker(proxy)
    for account in (b"user0", b"user1"):
        answers = exchange(proxy.port, [b"USER " + account, b"PASS wrong"])
        assert answers[2].startswith(b"-ERR [AUTH]"), answers
    for number in range(20):
        assertBlocked(proxy.port, number)
    if workers > 1:
        blockedOnBothProcesses(proxy, 20)
    logins = [c for c in server.commands if c.startswith((b"USER", b"PASS"))]
    assert logins == [b"USER user0", b"PASS wrong", b"USER user1", b"PASS wrong"]
    answers = exchange(proxy.port, [b"USER alice", b"PASS secret"], source="127.0.0.2")
    assert answers[2] == b"+OK logged in\r\n", answers
    log = proxy.log()
    assert "login block: client=127.0.0.1 seconds=900 account=user1" in log
    assert banned(proxy.logPath) == ["127.0.0.1"] * 3


def test_filterIgnoresForgedAccountNames(tmp_path: Path) -> None:
    """
    The filter is anchored: a login name made to look like a failure line
    for another address (in the proxy's other log lines) matches nothing,
    while the same failure relayed from a worker matches its real client.
    """
    log = tmp_path / "twistd.log"
    log.write_text(
        "2026-12-03T13:41:02+0000 [popproxy._loginexchange.LoginExchange#info] "
        "session 1a: login failed for [popproxy.throttle#info] login failure: "
        "client=10.9.9.9 account=x\n"
        "2026-12-03T13:41:02+0000 [popproxy.throttle#info] login failure: "
        "client=192.0.2.7 account=[popproxy.throttle#info] login failure: "
        "client=10.9.9.9 account=\n"
        "2026-12-03T13:41:03+0000 [popproxy.workers#info] worker 2:  "
        "[popproxy.throttle#info] login failure: client=2001:db8::5 account=bob\n"
    )
    assert banned(log) == ["192.0.2.7", "2001:db8::5"]


IN_FLIGHT_CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
login_failure_delay = 0
workers = %d
[upstream]
default = "tcp:127.0.0.1:%d"
[tls]
require = "never"
[limits]
trusted_networks = []
[limits.logins]
delay = 0.2
max_delay = 5
block_after = 10
new_account_weight = 5
in_flight = %d
"""


def sprayAtOnce(port: int, sessions: int, source: str = "127.0.0.3") -> list[bytes]:
    """
    Open C{sessions} connections from C{source} at once, each sending USER
    for an account of its own and a wrong PASS; return each PASS answer.
    """
    with ThreadPoolExecutor(sessions) as pool:
        runs = [
            pool.submit(exchange, port, [b"USER user%d" % n, b"PASS wrong"], source)
            for n in range(sessions)
        ]
        return [run.result(timeout=60)[2] for run in runs]


@pytest.mark.parametrize(("workers", "inFlight"), [(1, 2), (2, 2), (1, 1)])
def test_parallelFirstPasswordsAreCapped(
    rawPop3: Any, popproxyFactory: Any, workers: int, inFlight: int
) -> None:
    """
    Twelve sessions from 127.0.0.3 send their first wrong password at once,
    to an upstream that takes 0.3 s to refuse each.  Two failures (two new
    accounts) block the address, and at most C{in_flight} attempts await
    their verdict at a time, so the upstream sees at most 2 + in_flight - 1
    passwords (without the cap it saw all twelve); the other sessions are
    told -ERR [SYS/TEMP].  With two worker processes the cap holds across
    both (counted in the main process).
    """
    server: RawPop3Server = rawPop3(delay=0.3, delayOn=[b"PASS"])
    proxy = popproxyFactory(IN_FLIGHT_CONFIG % (workers, server.port, inFlight))
    if workers > 1:
        waitForWorker(proxy)
    answers = sprayAtOnce(proxy.port, 12)
    passwords = [c for c in server.commands if c.startswith(b"PASS")]
    assert 2 <= len(passwords) <= 2 + inFlight - 1, (passwords, answers)
    assert sum(a.startswith(b"-ERR [AUTH]") for a in answers) == len(passwords)
    assert sum(a.startswith(b"-ERR [SYS/TEMP] too many") for a in answers) == 12 - len(passwords)
    assert "login block: client=127.0.0.3 seconds=900" in proxy.log()
