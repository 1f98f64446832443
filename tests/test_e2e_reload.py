"""
Reloading a running `twistd popproxy` with SIGHUP, as an administrator
does (`kill -HUP`, `systemctl reload`): under load, the configuration
changes three times and no client sees an error or loses its session,
sessions in flight keep the chain they started with and new ones get the
new chain, with one process and with workers = 2; listeners are added and
removed without touching the unchanged one or the sessions of a removed
one; a broken file logs one line and changes nothing.

The chain is the documented example plugin (docs/examples/attachment_count.py)
whose header name, changed by each reload, says which configuration
filtered a message: C{X-Gen<N>: <count>}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.peers.dovecot import RawPop3Client
from tests.peers.ports import freePort
from tests.peers.proxy import ProxyProcess
from tests.test_workers import workerPids

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

#: Six messages, two of them with attachments (the example filter counts them).
MESSAGES = [
    b"From: a@example.org\r\nSubject: plain %d\r\n\r\n" % n + b"line of text\r\n" * (200 * n)
    for n in range(1, 5)
] + [
    b"From: b@example.org\r\nSubject: with attachment\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
    b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="%d.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" % n + b"JVBERi0xLjQK\r\n" * 300 + b"--b--\r\n"
    for n in range(2)
]

GENERATION_HEADER = re.compile(rb"^X-Gen(\d+): \d+\r\n", re.MULTILINE)

CLIENTS = 20


def configText(
    generation: int,
    upstreamPort: int,
    listen: list[str],
    workers: int = 1,
    retireAfter: float = 600,
) -> str:
    """
    The proxy's file in its C{generation}-th version: the chain stamps
    C{X-Gen<generation>}.
    """
    listeners = ", ".join(f'"{description}"' for description in listen)
    return f"""
[proxy]
listen = [{listeners}]
workers = {workers}
idle_timeout = {600 + generation}
retire_after = {retireAfter}
[upstream]
default = "tcp:127.0.0.1:{upstreamPort}"
[chain]
plugin_dirs = ["{EXAMPLES}"]
[[filter]]
plugin = "attachment_count"
settings = {{ header = "X-Gen{generation}" }}
"""


def generationOf(message: bytes, original: bytes) -> int:
    """
    Which configuration filtered C{message}; it must be C{original} with
    exactly the one header line the chain adds.
    """
    found = GENERATION_HEADER.findall(message)
    assert len(found) == 1, message[:300]
    assert GENERATION_HEADER.sub(b"", message, count=1) == original
    return int(found[0])


def retrieveAll(client: RawPop3Client, messages: list[bytes] = MESSAGES) -> list[int]:
    """
    Pipeline a RETR of every message in one write, read the answers, check
    them against C{messages} and return the generation of each.
    """
    commands = [b"RETR %d" % number for number in range(1, len(messages) + 1)]
    client.sendLines(commands)
    generations = []
    for command, original in zip(commands, messages, strict=True):
        generations.append(generationOf(b"".join(client.readMultiline(command)), original))
    return generations


@dataclass
class Session:
    """
    One client session of the load: when it connected, was greeted and
    ended, and the generation of each message it retrieved.
    """

    connecting: float
    greeted: float
    ended: float
    generations: list[int]


@dataclass
class Load:
    """
    C{CLIENTS} threads, each running one session after another until
    stopped: log in, pipeline a RETR of every message, QUIT.
    """

    port: int
    sessions: list[Session] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(CLIENTS):
            thread = threading.Thread(target=self._run, name=f"client {number}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                session = self._session()
            except Exception as e:  # every client error is counted, none ends the load
                with self.lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
                continue
            with self.lock:
                self.sessions.append(session)

    def _session(self) -> Session:
        connecting = time.monotonic()
        with RawPop3Client("127.0.0.1", self.port, timeout=60) as client:
            greeted = time.monotonic()
            client.login("u", "p")
            generations = retrieveAll(client)
            client.okCommand(b"QUIT")
        return Session(connecting, greeted, time.monotonic(), generations)

    def completedSince(self, moment: float) -> int:
        """
        How many sessions that connected after C{moment} have ended.
        """
        with self.lock:
            return sum(1 for session in self.sessions if session.connecting > moment)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)
            assert not thread.is_alive()


def waitFor(condition: Callable[[], bool], what: str, proxy: ProxyProcess, timeout: float) -> None:
    """
    Return once C{condition()} holds; fail with the proxy's log after
    C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proxy.log()}")
        time.sleep(0.05)


def reloadedLines(proxy: ProxyProcess) -> list[str]:
    return [line for line in proxy.log().splitlines() if "reloaded " in line]


@pytest.fixture
def proxies(request: pytest.FixtureRequest) -> Iterator[list[ProxyProcess]]:
    """
    The proxies a test starts (L{startProxy}); all are stopped at teardown
    (no process left behind), their log printed if the test failed.
    """
    started: list[ProxyProcess] = []
    yield started
    report = getattr(request.node, "rep_call", None)
    for proxy in started:
        proxy.stop()
        if report is None or report.failed:
            print(f"--- popproxy log ({proxy.workdir}) ---\n{proxy.log()}")


def startProxy(
    proxies: list[ProxyProcess], workdir: Path, text: str, port: int, workers: int = 1
) -> ProxyProcess:
    """
    Start twistd on C{text} and return once it (and each worker) serves.
    """
    proxy = ProxyProcess(workdir, text, port)
    proxies.append(proxy)
    proxy.start()
    waitFor(
        lambda: proxy.log().count("worker serving ") == workers - 1,
        "the workers",
        proxy,
        30,
    )
    return proxy


def reload(proxy: ProxyProcess, text: str, expected: int) -> tuple[float, float]:
    """
    Write C{text} as the new file, send SIGHUP and wait until C{expected}
    reloads in all have been logged; return when the file was written and
    when the reload was seen done.
    """
    proxy.configPath.write_text(text, "utf-8")
    written = time.monotonic()
    os.kill(proxy.pid, signal.SIGHUP)
    waitFor(lambda: len(reloadedLines(proxy)) == expected, "the reload", proxy, 30)
    return written, time.monotonic()


def waitForSessions(load: Load, since: float, proxy: ProxyProcess) -> None:
    """
    Wait until the load has run two sessions per client since C{since}.
    """
    waitFor(lambda: load.completedSince(since) >= 2 * CLIENTS, "sessions", proxy, 120)


class HeldSession:
    """
    A session opened in one generation and kept open across the reloads
    that follow: it retrieves every message at its start and at the end.
    """

    def __init__(self, port: int, messages: list[bytes] = MESSAGES) -> None:
        self.messages = messages
        self.client = RawPop3Client("127.0.0.1", port, timeout=60)
        self.client.login("u", "p")
        self.first = retrieveAll(self.client, messages)

    def finish(self) -> list[int]:
        last = retrieveAll(self.client, self.messages)
        assert self.client.okCommand(b"QUIT").startswith(b"+OK")
        self.client.close()
        return last


def runLoadWithReloads(
    proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any, workers: int
) -> dict[str, Any]:
    """
    The reload-under-load scenario; returns what the checks need.
    """
    server = rawPop3(MESSAGES, user="u", password="p")
    port = freePort()
    listen = [f"tcp:{port}:interface=127.0.0.1"]
    text = configText(1, server.port, listen, workers)
    proxy = startProxy(proxies, tmp_path, text, port, workers)
    load = Load(port)
    started = time.monotonic()
    load.start()
    held: list[HeldSession] = []
    windows: list[tuple[int, float, float]] = []  # generation, from, until
    reloads: list[tuple[float, float]] = []  # file written, reload seen done
    confirmed = started
    try:
        for generation in (2, 3, 4):
            # Every client has run sessions of the running generation first.
            waitForSessions(load, confirmed, proxy)
            held.append(HeldSession(port))
            text = configText(generation, server.port, listen, workers)
            written, seen = reload(proxy, text, (generation - 1) * workers)
            windows.append((generation - 1, confirmed, written))
            reloads.append((written, seen))
            confirmed = seen
        waitForSessions(load, confirmed, proxy)
    finally:
        load.stop()
    windows.append((4, confirmed, time.monotonic()))
    elapsed = time.monotonic() - started
    finished = [(session.first, session.finish()) for session in held]
    return {
        "proxy": proxy,
        "load": load,
        "held": finished,
        "windows": windows,
        "reloads": reloads,
        "elapsed": elapsed,
    }


def waitForQuits(proxy: ProxyProcess, sessions: int) -> None:
    """
    Wait until the log shows C{sessions} sessions ended with QUIT (a client
    sees its connection end a moment before the proxy logs it).
    """
    waitFor(
        lambda: proxy.log().count(" closed: client quit;") == sessions, "the sessions", proxy, 10
    )


def servingProcesses(proxy: ProxyProcess) -> set[str]:
    """
    Which processes ("main", "worker") served the sessions ended with QUIT.
    """
    return {
        "worker" if "worker 1: " in line else "main"
        for line in proxy.log().splitlines()
        if " closed: client quit;" in line
    }


def onBothProcesses(proxy: ProxyProcess, served: int) -> int:
    """
    Sessions of the last generation, one after another (bounded), until the
    main process and its worker have each served one; return how many ran.
    The processes share one listening socket and whichever is awake
    accepts first, so on a loaded machine one may take every session of
    the load; a pause between sessions lets the other reach its accept.
    """
    extra = 0
    while (processes := servingProcesses(proxy)) != {"main", "worker"}:
        assert extra < 100, f"{served + extra} sessions all served by {processes}:\n{proxy.log()}"
        if extra:
            time.sleep(0.1)
        assert sessionGenerations(proxy.port, MESSAGES) == [4] * 6
        extra += 1
        waitForQuits(proxy, served + extra)
    return extra


def checkLoadWithReloads(outcome: dict[str, Any], workers: int) -> None:
    """
    The checks of the reload-under-load scenario, and its figures printed.
    """
    proxy: ProxyProcess = outcome["proxy"]
    load: Load = outcome["load"]
    assert load.errors == []
    # Each session saw one chain only: the one running when it connected.
    for session in load.sessions:
        assert len(set(session.generations)) == 1, session
    for generation, since, until in outcome["windows"]:
        inside = [s for s in load.sessions if s.connecting > since and s.greeted < until]
        assert len(inside) >= 2 * CLIENTS
        assert {s.generations[0] for s in inside} == {generation}
    # Sessions held open through the later reloads finished with their own chain.
    assert outcome["held"] == [([1] * 6, [1] * 6), ([2] * 6, [2] * 6), ([3] * 6, [3] * 6)]
    served = len(load.sessions) + len(outcome["held"])
    # No session was dropped: every one the proxy opened for a client of
    # the test ended with its QUIT (the one other is start-up's port probe);
    # the last ones are logged as their connections close.
    waitForQuits(proxy, served)
    extra = ""
    if workers > 1:
        assert sum("worker 1: " in line for line in reloadedLines(proxy)) == 3
        more = onBothProcesses(proxy, served)
        served += more
        extra = f", {more} more until both processes served"
    log = proxy.log()
    assert len(re.findall(r"session [0-9a-f]+ opened by", log)) == served + 1
    assert "Traceback" not in log and "reload failed" not in log
    assert len(reloadedLines(proxy)) == 3 * workers
    retrievals = served * len(MESSAGES) + len(outcome["held"]) * len(MESSAGES)
    spanning = sum(
        1
        for session in load.sessions
        if any(
            session.greeted < written and session.ended > seen
            for written, seen in outcome["reloads"]
        )
    )
    print(
        f"\nreload under load (workers = {workers}): {CLIENTS} clients, 3 reloads, "
        f"{served} sessions ({spanning} of the load's and {len(outcome['held'])} held ones "
        f"in flight across a reload{extra}), {retrievals} RETRs, {len(load.errors)} client errors, "
        f"0 dropped, {outcome['elapsed']:.1f} s"
    )


def test_reloadUnderLoad(proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any) -> None:
    """
    Twenty clients pipelining RETRs through the chain while the file
    changes three times (SIGHUP each time): no client error, no session
    dropped, every session filtered by the chain that ran when it
    connected (sessions in flight keep theirs, also when held open across
    reloads), and the new chain for every session opened afterwards.
    """
    checkLoadWithReloads(runLoadWithReloads(proxies, tmp_path, rawPop3, workers=1), workers=1)


def test_reloadUnderLoadWithWorkers(
    proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any
) -> None:
    """
    The same with workers = 2: the main process passes SIGHUP on, the
    worker reloads the same file too, and sessions served by either
    process get the new chain.
    """
    checkLoadWithReloads(runLoadWithReloads(proxies, tmp_path, rawPop3, workers=2), workers=2)


def freshMessages(tag: bytes) -> list[bytes]:
    """
    Messages no other upstream of a test serves, to tell upstreams apart.
    """
    return [b"Subject: %s %d\r\n\r\nbody\r\n" % (tag, n) for n in range(1, 4)]


def test_listenersAndRoutesChange(
    proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any
) -> None:
    """
    A reload that adds a listener opens it (with the new chain and the new
    upstream) while the unchanged listener keeps serving; a reload that
    removes it refuses new clients there, and the session already on it
    finishes with its own settings; a session held on the unchanged
    listener keeps its upstream and chain through both.
    """
    first = freshMessages(b"first")
    second = freshMessages(b"second")
    firstServer = rawPop3(first, user="u", password="p")
    secondServer = rawPop3(second, user="u", password="p")
    kept, added = freePort(), freePort()
    while added == kept:
        added = freePort()
    keptListener = f"tcp:{kept}:interface=127.0.0.1"
    addedListener = f"tcp:{added}:interface=127.0.0.1"
    proxy = startProxy(proxies, tmp_path, configText(1, firstServer.port, [keptListener]), kept)
    onKept = HeldSession(kept, first)

    reload(proxy, configText(2, secondServer.port, [keptListener, addedListener]), 1)
    assert reloadedLines(proxy)[-1].endswith(
        f"listeners added: {addedListener}; removed: none; unchanged: {keptListener}"
    )
    onAdded = HeldSession(added, second)
    assert onAdded.first == [2, 2, 2]
    assert sessionGenerations(kept, second) == [2, 2, 2]

    reload(proxy, configText(3, secondServer.port, [keptListener]), 2)
    assert reloadedLines(proxy)[-1].endswith(
        f"listeners added: none; removed: {addedListener}; unchanged: {keptListener}"
    )
    with pytest.raises(ConnectionRefusedError):
        RawPop3Client("127.0.0.1", added, timeout=10)
    assert sessionGenerations(kept, second) == [3, 3, 3]
    assert onAdded.finish() == [2, 2, 2]
    assert onKept.first == onKept.finish() == [1, 1, 1]


def sessionGenerations(port: int, messages: list[bytes]) -> list[int]:
    """
    One session on C{port}: log in, retrieve every message (checked
    against C{messages}), QUIT; the generation of each message.
    """
    with RawPop3Client("127.0.0.1", port, timeout=30) as client:
        client.login("u", "p")
        generations = retrieveAll(client, messages)
        client.okCommand(b"QUIT")
    return generations


def loggedSoFar(proxy: ProxyProcess, failures: int, closed: int) -> bool:
    """
    Whether the log shows C{failures} failed reloads and C{closed} ended
    sessions.
    """
    log = proxy.log()
    return log.count("reload failed") == failures and log.count(" closed: ") == closed


def test_brokenConfigOnReload(proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any) -> None:
    """
    A reload of a broken file (bad key, bad TOML, a plugin that does not
    exist, a new listener on a port in use) logs exactly one line, naming
    the problem, and changes nothing: the proxy keeps running with its
    chain, listener and sessions; mending the file and reloading again
    applies it.
    """
    server = rawPop3(MESSAGES, user="u", password="p")
    port, busyPort = freePort(), freePort()
    listen = [f"tcp:{port}:interface=127.0.0.1"]
    proxy = startProxy(proxies, tmp_path, configText(1, server.port, listen), port)
    held = HeldSession(port)
    busy = socket.socket()
    busy.bind(("127.0.0.1", busyPort))
    busy.listen()
    withBusyListener = configText(2, server.port, [*listen, f"tcp:{busyPort}:interface=127.0.0.1"])
    cases = [
        ("[proxy]\nlisen = 1\n", "[proxy] lisen: unknown key"),
        ("[proxy\n", "not valid TOML"),
        (
            configText(2, server.port, listen).replace("attachment_count", "no_such_plugin"),
            "[filter #1] plugin: ",
        ),
        (withBusyListener, f"cannot listen on tcp:{busyPort}:interface=127.0.0.1: "),
    ]
    try:
        for failures, (text, fragment) in enumerate(cases):
            # The start-up probe and one session per case so far have ended.
            waitFor(partial(loggedSoFar, proxy, failures, failures + 1), "quiet", proxy, 30)
            before = proxy.log().splitlines()
            proxy.configPath.write_text(text, "utf-8")
            os.kill(proxy.pid, signal.SIGHUP)
            waitFor(partial(loggedSoFar, proxy, failures + 1, failures + 1), "the error", proxy, 30)
            new = proxy.log().splitlines()[len(before) :]
            assert len(new) == 1, new
            assert "[popproxy#error] reload failed, the running configuration stays: " in new[0]
            assert fragment in new[0], new[0]
            assert sessionGenerations(port, MESSAGES) == [1] * 6
    finally:
        busy.close()
    assert proxy.log().count("Traceback") == 0
    assert held.finish() == [1] * 6
    reload(proxy, configText(2, server.port, listen), 1)
    assert sessionGenerations(port, MESSAGES) == [2] * 6


def processServing(proxy: ProxyProcess, clientPort: int) -> str:
    """
    Which process took the connection from C{clientPort}: C{"main"} or
    C{"worker N"}, read from the log line of its session's opening.
    """
    opened = re.compile(rf" opened by 127\.0\.0\.1:{clientPort}$", re.MULTILINE)
    waitFor(lambda: opened.search(proxy.log()) is not None, "the session's line", proxy, 10)
    line = [line for line in proxy.log().splitlines() if opened.search(line)][-1]
    worker = re.search(r"\] (worker \d+): ", line)
    return worker.group(1) if worker else "main"


def holdUntilAWorkerServes(
    proxy: ProxyProcess, port: int, messages: list[bytes]
) -> list[HeldSession]:
    """
    Open sessions on C{port} (each retrieves every message and stays
    open), four at once, in bounded rounds until a worker took one: the
    processes share the socket and whichever is awake accepts.
    """
    held: list[HeldSession] = []
    for _ in range(8):
        with ThreadPoolExecutor(max_workers=4) as pool:
            held += pool.map(partial(HeldSession, port), [messages] * 4)
        if any(processServing(proxy, h.client.localPort()) != "main" for h in held):
            return held
    raise AssertionError(f"no worker took any of {len(held)} sessions:\n{proxy.log()}")


def sessionOn(port: int, messages: list[bytes]) -> tuple[list[int], int]:
    """
    One session on C{port} (L{sessionGenerations}); the generation of each
    message and the client's port.
    """
    with RawPop3Client("127.0.0.1", port, timeout=30) as client:
        client.login("u", "p")
        generations = retrieveAll(client, messages)
        client.okCommand(b"QUIT")
        return generations, client.localPort()


def serveUntilBoth(proxy: ProxyProcess, port: int, messages: list[bytes]) -> set[str]:
    """
    Sessions on C{port}, eight at once, in bounded rounds until the main
    process and a worker have both served one; each gets the second
    generation's chain.  Which processes served.
    """
    served: set[str] = set()
    for _ in range(8):
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(partial(sessionOn, messages=messages), [port] * 8))
        for generations, clientPort in results:
            assert generations == [2] * len(messages)
            served.add(processServing(proxy, clientPort))
        if len(served) >= 2:
            break
    return served


def test_addedListenerServedByTheWorkers(
    proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any
) -> None:
    """
    With workers = 2, a reload that adds a listener brings a worker onto
    it: a new worker adopts every listener and, once it serves, the old
    one accepts no more and exits once its last session has ended.  The
    main process and the new worker both serve the new listener (new
    chain); sessions held open on the old listener across the reload, one
    at least by the old worker, finish their RETRs and QUIT without error;
    never more than two worker processes; the old one is not started again.
    """
    messages = freshMessages(b"handover")
    server = rawPop3(messages, user="u", password="p")
    kept, added = freePort(), freePort()
    while added == kept:
        added = freePort()
    listeners = [f"tcp:{kept}:interface=127.0.0.1", f"tcp:{added}:interface=127.0.0.1"]
    first = configText(1, server.port, listeners[:1], workers=2)
    proxy = startProxy(proxies, tmp_path, first, kept, workers=2)
    marker = str(proxy.configPath)
    held = holdUntilAWorkerServes(proxy, kept, messages)
    written, _ = reload(proxy, configText(2, server.port, listeners, workers=2), 2)
    waitFor(lambda: "exits once its connections have ended" in proxy.log(), "hand-over", proxy, 30)
    handOver = time.monotonic() - written
    # The replaced worker still serves a held session; its successor runs beside it.
    assert len(workerPids(marker)) == 2
    assert proxy.log().count("worker serving ") == 2
    assert serveUntilBoth(proxy, added, messages) == {"main", "worker 1"}
    assert sessionGenerations(kept, messages) == [2] * 3
    assert [session.finish() for session in held] == [[1] * 3] * len(held)
    waitFor(lambda: "worker 1 replaced (pid " in proxy.log(), "the old worker's end", proxy, 30)
    assert len(workerPids(marker)) == 1
    log = proxy.log()
    assert "its last connection has ended" in log
    assert "starting it again" not in log
    assert "closed: proxy stopping" not in log
    assert "Traceback" not in log
    print(
        f"\nlistener added with workers = 2: new worker serving {handOver:.1f} s after SIGHUP, "
        f"{len(held)} sessions held across the hand-over, none cut"
    )


def test_retiredWorkerStopsItsSessionsAtTheCap(
    proxies: list[ProxyProcess], tmp_path: Path, rawPop3: Any
) -> None:
    """
    With workers = 2, a reload that adds a listener and sets [proxy]
    retire_after = 2: the old worker waits 2 s for the sessions held idle
    through it, then stops them gracefully (each is told the proxy is
    stopping, then closed) and ends, saying how many it stopped; the
    sessions the main process serves carry on and QUIT.
    """
    messages = freshMessages(b"retirecap")
    server = rawPop3(messages, user="u", password="p")
    kept, added = freePort(), freePort()
    listeners = [f"tcp:{kept}:interface=127.0.0.1", f"tcp:{added}:interface=127.0.0.1"]
    proxy = startProxy(proxies, tmp_path, configText(1, server.port, listeners[:1], 2), kept, 2)
    held = holdUntilAWorkerServes(proxy, kept, messages)
    onWorker = [h for h in held if processServing(proxy, h.client.localPort()) == "worker 1"]
    assert onWorker
    reload(proxy, configText(2, server.port, listeners, workers=2, retireAfter=2), 2)
    waitFor(lambda: "worker 1 replaced (pid " in proxy.log(), "the old worker's end", proxy, 30)
    for session in onWorker:
        assert session.client.readLine() == b"-ERR [SYS/TEMP] the proxy is stopping\r\n"
        with pytest.raises(ConnectionError):
            session.client.readLine()
        session.client.close()
    others = [h for h in held if h not in onWorker]
    assert [session.finish() for session in others] == [[1] * 3] * len(others)
    log = proxy.log()
    assert (
        f"{len(onWorker)} connections still open after 2 s ([proxy] retire_after); "
        "stopping them" in log
    )
    assert log.count("closed: proxy stopping;") == len(onWorker)
    assert "its last connection has ended" not in log
    assert "starting it again" not in log
    assert "Traceback" not in log
