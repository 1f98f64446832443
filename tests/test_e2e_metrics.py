"""
Metrics and health end to end: `twistd -n popproxy` with workers = 2 and a
[metrics] listener, real POP3 sessions over sockets spread over both
processes, then GET /metrics parsed with prometheus_client's own text
parser and checked against exactly what the sessions did (every session,
login, retrieval, verdict and octet counted once, by whichever process
served it); the counts survive a worker that dies; GET /healthz names the
chain's scanner; the private multiprocess directory is gone after the stop.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.metricsamples import Samples, family, parseSamples, value
from tests.peers.ports import freePort
from tests.peers.proxy import ProxyProcess

JUDGE = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Deliver, Rewrite, TempFail

@implementer(IMessageFilter)
class Judge:
    name = "judge"
    def filterMessage(self, message, context):
        subject = message.headers.get("Subject") or ""
        if subject == "tag":
            return Rewrite(message.withHeaderAdded("X-Tagged", "yes"))
        if subject == "tempfail":
            return TempFail("try later")
        return Deliver()

def makeFilter(settings):
    return Judge()
"""

SCANNER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, IScannerStatus, Deliver, ScannerStatus

@implementer(IMessageFilter, IScannerStatus)
class Scanner:
    name = "scanner"
    def filterMessage(self, message, context):
        return Deliver()
    def scannerStatus(self):
        return ScannerStatus("clamd", "tcp:127.0.0.1:9", False, 1700000000.0, "refused")

def makeFilter(settings):
    return Scanner()
"""

MESSAGES = [
    b"From: a@example.org\r\nSubject: plain\r\n\r\nHello.\r\n",
    b"From: a@example.org\r\nSubject: tag\r\n\r\nTag me.\r\n",
    b"From: a@example.org\r\nSubject: tempfail\r\n\r\nNot now.\r\n",
]
GOOD_SESSIONS = 8
BAD_SESSIONS = 2
#: The start-up check that the proxy listens connects once and hangs up.
PROBES = 1
#: What the proxy says first to a client, when it speaks first itself.
PROXY_GREETING = b"+OK popproxy ready\r\n"
T = TypeVar("T")
#: Rounds of concurrent sessions at most, until both processes have served some.
ROUNDS = 5
LISTENER = "proxy.listen[0]"


@dataclass
class Traffic:
    """
    The octets one client session sent and received.
    """

    sent: int = 0
    received: int = 0


class Client:
    """
    A raw POP3 client that counts every octet.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.traffic = Traffic()

    def line(self) -> bytes:
        data = self.file.readline()
        self.traffic.received += len(data)
        return data

    def command(self, line: bytes, multiLine: bool = False) -> bytes:
        self.sock.sendall(line + b"\r\n")
        self.traffic.sent += len(line) + 2
        status = self.line()
        if multiLine and status.startswith(b"+OK"):
            while self.line() != b".\r\n":
                pass
        return status

    def finish(self) -> Traffic:
        """
        Read to the end of the connection (the proxy closes it).
        """
        while data := self.file.read(4096):
            self.traffic.received += len(data)
        self.sock.close()
        return self.traffic


def goodSession(port: int, together: threading.Barrier) -> Traffic:
    """
    Log in, retrieve the three messages (delivered as is, tagged,
    tempfailed) and quit; every session greeted before any goes on, so
    both processes take some.
    """
    client = Client(port)
    assert client.line().startswith(b"+OK")
    together.wait(30)
    assert client.command(b"USER u").startswith(b"+OK")
    assert client.command(b"PASS p").startswith(b"+OK")
    assert client.command(b"RETR 1", True).startswith(b"+OK")
    assert client.command(b"RETR 2", True).startswith(b"+OK")
    assert client.command(b"RETR 3", True).startswith(b"-ERR [SYS/TEMP]")
    assert client.command(b"QUIT").startswith(b"+OK")
    return client.finish()


def badSession(port: int) -> Traffic:
    """
    A wrong password, then QUIT.
    """
    client = Client(port)
    assert client.line().startswith(b"+OK")
    assert client.command(b"USER u").startswith(b"+OK")
    assert client.command(b"PASS wrong").startswith(b"-ERR")
    assert client.command(b"QUIT").startswith(b"+OK")
    return client.finish()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def waitFor(
    condition: Callable[[], Any], what: str, proxy: ProxyProcess, timeout: float = 20
) -> Any:
    """
    Poll C{condition} until it is true (bounded), failing with the log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{proxy.log()}")


def servingProcesses(proxy: ProxyProcess, sessions: int) -> set[str]:
    """
    Which processes ("main", "worker") served the C{sessions} sessions that
    ended with QUIT so far, once the log shows them all (a client sees the
    end of its connection a moment before the proxy logs it).
    """
    waitFor(
        lambda: proxy.log().count("closed: client quit") >= sessions, "the sessions' ends", proxy
    )
    return {
        "worker" if "worker 1:" in line else "main"
        for line in proxy.log().splitlines()
        if "closed: client quit" in line
    }


def onBothProcesses(
    proxy: ProxyProcess, session: Callable[[int, threading.Barrier], T], count: int
) -> list[T]:
    """
    Rounds of C{count} concurrent C{session}s (each greeted before any goes
    on) until the main process and its worker have both served some; return
    every session's result.  The processes share one listening socket and
    the first one awake accepts every connection queued, so on a loaded
    machine one process may take a whole round (seen: all six on the worker).
    """
    results: list[T] = []
    for _ in range(ROUNDS):
        together = threading.Barrier(count)
        with ThreadPoolExecutor(max_workers=count) as pool:
            runs = [pool.submit(session, proxy.port, together) for _ in range(count)]
            results += [run.result(60) for run in runs]
        if servingProcesses(proxy, len(results)) == {"main", "worker"}:
            return results
    raise AssertionError(f"{ROUNDS} rounds all served by one process:\n{proxy.log()}")


def scrapeWhenSettled(metricsPort: int, sessions: int, proxy: ProxyProcess) -> Samples:
    """
    The metrics once every session has been counted as ended (a client
    sees the end of its connection a moment before the proxy counts it).
    """

    def settled() -> Samples | None:
        samples = parseSamples(get(metricsPort, "/metrics")[1].decode("utf-8"))
        ended = sum(family(samples, "popproxy_sessions_total").values())
        open = value(samples, "popproxy_sessions_open", listener=LISTENER)
        return samples if ended == sessions and open == 0 else None

    return waitFor(settled, f"{sessions} sessions counted", proxy)


def workerPids(configPath: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"popproxy._workers.*{configPath}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def multiprocessDirectory(pid: int) -> Path:
    """
    The metrics directory a worker was given (its environment).
    """
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (entry,) = [e for e in environment if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


def startProxy(tmp_path: Path, upstreamPort: int, extra: str, chain: str = "") -> ProxyProcess:
    """
    twistd with two processes and the judge and scanner filters, started
    once its worker listens; C{chain} is added to its C{[chain]} table and
    C{extra} (more tables) to the end of its configuration.
    """
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "judge.py").write_text(JUDGE)
    (plugins / "scanner.py").write_text(SCANNER)
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    proxy = ProxyProcess(
        workdir,
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
workers = 2
login_failure_delay = 0
[upstream]
default = "tcp:127.0.0.1:{upstreamPort}"
[chain]
plugin_dirs = ["{plugins}"]
{chain}
[[filter]]
plugin = "judge"
[[filter]]
plugin = "scanner"
{extra}
""",
    )
    proxy.start()
    # The worker has adopted the listening socket once its factory starts.
    waitFor(
        lambda: re.search(r"worker 1: .*SessionFactory starting on", proxy.log()),
        "worker 1 to listen",
        proxy,
    )
    return proxy


def checkCounts(samples: Samples, traffic: list[Traffic], good: int) -> None:
    """
    Every count is exactly what the clients did (C{good} sessions retrieved).
    """
    assert family(samples, "popproxy_sessions_total") == {
        frozenset({("listener", LISTENER), ("ending", "quit")}): good + BAD_SESSIONS,
        frozenset({("listener", LISTENER), ("ending", "client_closed")}): PROBES,
    }
    assert family(samples, "popproxy_logins_total") == {
        frozenset({("method", "user"), ("result", "ok")}): good,
        frozenset({("method", "user"), ("result", "failed")}): BAD_SESSIONS,
    }
    assert family(samples, "popproxy_retrievals_total") == {
        frozenset({("command", "RETR"), ("outcome", outcome)}): good
        for outcome in ("filtered_unchanged", "rewritten", "tempfail")
    }
    assert family(samples, "popproxy_filter_verdicts_total") == {
        frozenset({("filter", "judge"), ("verdict", "deliver")}): good,
        frozenset({("filter", "judge"), ("verdict", "rewrite")}): good,
        frozenset({("filter", "judge"), ("verdict", "tempfail")}): good,
        # The chain stops at the temporary failure: the scanner sees two.
        frozenset({("filter", "scanner"), ("verdict", "deliver")}): 2 * good,
    }
    assert value(samples, "popproxy_chain_seconds_count") == 3 * good
    assert value(samples, "popproxy_filter_seconds_count", filter="judge") == 3 * good
    assert value(samples, "popproxy_filter_seconds_count", filter="scanner") == 2 * good
    assert value(samples, "popproxy_client_received_bytes_total", listener=LISTENER) == sum(
        t.sent for t in traffic
    )
    # The probe (the readiness check, which hangs up at once) is greeted or
    # not, depending on whether its admission was answered before its end
    # was seen; the sessions' own octets are exact.
    sentToClients = value(samples, "popproxy_client_sent_bytes_total", listener=LISTENER)
    assert sentToClients is not None
    probesGreeted = sentToClients - sum(t.received for t in traffic)
    assert probesGreeted in {n * len(PROXY_GREETING) for n in range(PROBES + 1)}
    assert family(samples, "popproxy_upstream_errors_total") == {}
    assert family(samples, "popproxy_scanner_reachable") == {
        frozenset({("filter", "scanner"), ("daemon", "clamd")}): 0
    }


def test_metricsAddUpOverWorkers(rawPop3: Any, tmp_path: Path) -> None:
    """
    Rounds of eight sessions until both the main process and its worker
    served some, and two failing ones, are each counted once, with exact
    login, retrieval, verdict and byte counts; a worker killed and
    restarted loses none of them; /healthz says 200 and names the scanner;
    the multiprocess directory is removed at stop.
    """
    server = rawPop3(messages=MESSAGES, user="u", password="p")
    metricsPort = freePort()
    proxy = startProxy(
        tmp_path, server.port, f'[metrics]\nlisten = "tcp:{metricsPort}:interface=127.0.0.1"\n'
    )
    try:
        (worker,) = waitFor(lambda: workerPids(proxy.configPath), "the worker", proxy)
        directory = multiprocessDirectory(worker)
        traffic = onBothProcesses(proxy, goodSession, GOOD_SESSIONS)
        good = len(traffic)
        traffic += [badSession(proxy.port) for _ in range(BAD_SESSIONS)]
        ended = good + BAD_SESSIONS + PROBES
        checkCounts(scrapeWhenSettled(metricsPort, ended, proxy), traffic, good)

        subprocess.run(["kill", "-KILL", str(worker)], check=True)
        waitFor(lambda: "worker 1 ended" in proxy.log(), "the worker's end", proxy)
        checkCounts(scrapeWhenSettled(metricsPort, ended, proxy), traffic, good)

        code, body = get(metricsPort, "/healthz")
        health = json.loads(body)
        assert (code, health["status"]) == (200, "serving")
        assert [(s["filter"], s["daemon"], s["state"]) for s in health["scanners"]] == [
            ("scanner", "clamd", "unreachable")
        ]
        assert directory.is_dir()
    finally:
        proxy.stop()
    assert not directory.exists()
