"""
The graceful stop end to end: `twistd -n popproxy` (one process, and two
with workers = 2 and a filter chain) gets SIGTERM while clients are in the
middle of a big RETR, idle between commands, or too slow to finish within
the grace period.  Checks the bytes each client receives, that new
connections are refused, what reached the upstream (no DELE, no QUIT: it
deleted nothing), the log and the exit status.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from popproxy._session import STOPPING
from tests.peers.ports import freePort
from tests.peers.rawpop3 import RawPop3Server, dotStuff

#: Seconds each session may finish its command once the stop has begun.
GRACE = 8.0
#: A message far larger than what a slow client's socket buffers hold.
SIZE = 8 * 1024 * 1024
#: The receive buffer of the test's slow clients (no autotuning: the
#: proxy cannot push a whole message into it).
SLOW_BUFFER = 64 * 1024
TIMEOUT = 20.0

TAGGER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Rewrite

@implementer(IMessageFilter)
class Tagger:
    name = "tagger"
    def filterMessage(self, message, context):
        return Rewrite(message.withHeaderAdded("X-Tagged", "yes"))

def makeFilter(settings):
    return Tagger()
"""


def bigMessage() -> bytes:
    """
    About SIZE bytes of mail, with lines that need dot-stuffing.
    """
    lines = [b"Subject: stop test", b""]
    for number in range(SIZE // 80):
        lines.append((b"." if number % 997 == 0 else b"") + b"%07d " % number + b"x" * 70)
    return b"\r\n".join(lines) + b"\r\n"


class RawClient:
    """
    A POP3 client on a raw socket that keeps every byte received and
    reads only when told to (a slow client stops reading mid-response).
    """

    def __init__(self, port: int, receiveBuffer: int | None = None) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receiveBuffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        self.socket.settimeout(TIMEOUT)
        self.socket.connect(("127.0.0.1", port))
        self.data = bytearray()
        self.reset = False
        #: Where the response to the test's command starts in C{data}.
        self.start = 0

    def readUntil(self, done: Callable[[bytearray], bool]) -> None:
        """
        Read until C{done(data)} holds (bounded by TIMEOUT).
        """
        deadline = time.monotonic() + TIMEOUT
        while not done(self.data):
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.socket.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed early after {len(self.data)} bytes")
            self.data += chunk

    def readToEnd(self, timeout: float = TIMEOUT) -> None:
        """
        Read until the proxy closes (or resets) the connection, bounded.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.socket.recv(65536)
            except ConnectionResetError:
                self.reset = True
                return
            if not chunk:
                return
            self.data += chunk

    def logIn(self) -> int:
        """
        Log in (pipelined USER and PASS); return where the next response
        starts in C{data}.
        """
        self.socket.sendall(b"USER u\r\nPASS p\r\n")
        self.readUntil(lambda data: data.count(b"\r\n") >= 3)
        assert self.data.startswith(b"+OK") and self.data.count(b"+OK") == 3, self.data
        return len(self.data)

    def close(self) -> None:
        self.socket.close()


def startRetrieval(port: int, pipelined: bytes) -> RawClient:
    """
    A slow client that logs in, sends RETR 1 (and C{pipelined} behind it)
    and reads the first part of the message, then stops reading.
    """
    client = RawClient(port, SLOW_BUFFER)
    client.start = client.logIn()
    client.socket.sendall(b"RETR 1\r\n" + pipelined)
    client.readUntil(lambda data: len(data) > client.start + 256 * 1024)
    return client


def startIdle(port: int) -> RawClient:
    """
    A client that logs in and sends nothing more.
    """
    client = RawClient(port)
    client.start = client.logIn()
    return client


def waitForLog(proxy: Any, text: str, timeout: float = TIMEOUT) -> str:
    """
    Wait (bounded) until the proxy's log shows C{text}; return the line.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proxy.log().splitlines():
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"the log never showed {text!r}:\n{proxy.log()}")


def processOf(proxy: Any, client: RawClient) -> str:
    """
    Which process serves C{client}: "main" or "worker N", from the log.
    """
    port = client.socket.getsockname()[1]
    line = waitForLog(proxy, f" opened by 127.0.0.1:{port}")
    worker = re.search(r"worker (\d+): ", line)
    return f"worker {worker.group(1)}" if worker else "main"


def onEveryProcess(proxy: Any, workers: int, start: Callable[[], RawClient]) -> list[RawClient]:
    """
    Clients made by C{start} until each of the C{workers} processes serves
    at least one (bounded).  The processes share one listening socket and
    whichever accepts first wins, so on a loaded machine a busy worker may
    lose many times in a row: extra clients on the same process are fine
    (loopback is exempt from the per-address limits), and a pause between
    them lets the busy one reach its accept.
    """
    clients: list[RawClient] = []
    served: set[str] = set()
    while len(served) < workers:
        assert len(clients) < 40, f"sessions all went to {served}"
        if clients:
            time.sleep(0.1)
        clients.append(start())
        served.add(processOf(proxy, clients[-1]))
    return clients


def refusedWithin(port: int, timeout: float) -> bool:
    """
    Whether connecting to the proxy is refused within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # Queued as the listening socket closed: reset, not yet refused.
            pass
        time.sleep(0.05)
    return False


def health(port: int) -> tuple[int, str]:
    """
    The answer to GET /healthz on the metrics listener: code and status.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())["status"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["status"]


def proxyConfig(tmp_path: Path, upstream: int, workers: int, chain: bool, metricsPort: int) -> str:
    config = f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
workers = {workers}
stop_grace = {GRACE}
[upstream]
default = "tcp:127.0.0.1:{upstream}"
[metrics]
listen = "tcp:{metricsPort}:interface=127.0.0.1"
"""
    if chain:
        (tmp_path / "tagger.py").write_text(TAGGER)
        config += f'[[filter]]\nplugin = "{tmp_path / "tagger.py"}"\ntimeout = 60\n'
    return config


@pytest.mark.parametrize(
    "workers, chain", [pytest.param(1, False, id="relay"), pytest.param(2, True, id="workers2")]
)
def test_sigtermWithSessionsMidRetr(
    rawPop3: Callable[..., RawPop3Server],
    popproxyFactory: Any,
    tmp_path: Path,
    workers: int,
    chain: bool,
) -> None:
    """
    On SIGTERM: idle sessions get "-ERR [SYS/TEMP] the proxy is stopping"
    and are closed; new connections are refused; a client mid-RETR that
    goes on reading gets the whole message, terminating line included, then
    the stopping line (the answer to the DELE and QUIT it pipelined, which
    never run) and the end of the connection; a second SIGTERM is logged
    and ignored, without a traceback; a client still mid-RETR when
    the grace period ends is cut without the terminating line.  The
    upstream got no DELE and no QUIT, so it deleted nothing; the process
    exits as init systems expect (killed by SIGTERM, which systemd counts
    as a clean stop).  Meanwhile /healthz answers 503.
    """
    message = bigMessage()
    server = rawPop3([message], user="u", password="p")
    metricsPort = freePort()
    proxy = popproxyFactory(proxyConfig(tmp_path, server.port, workers, chain, metricsPort))
    delivered = (b"X-Tagged: yes\r\n" + message) if chain else message
    response = dotStuff(delivered)

    if workers > 1:
        waitForLog(proxy, f"worker {workers - 1}:  [-] SessionFactory starting on")
    # Sessions of each kind on every process.
    finishing = onEveryProcess(
        proxy, workers, lambda: startRetrieval(proxy.port, b"DELE 1\r\nQUIT\r\n")
    )
    slow = onEveryProcess(proxy, workers, lambda: startRetrieval(proxy.port, b""))
    idle = onEveryProcess(proxy, workers, lambda: startIdle(proxy.port))

    assert health(metricsPort) == (200, "serving")
    stopAt = time.monotonic()
    # As systemd stops a unit (KillMode=control-group): SIGTERM to every
    # process, the workers too (which the main process then signals again).
    os.killpg(proxy.pid, signal.SIGTERM)

    for client in idle:
        client.readToEnd()
        assert bytes(client.data[client.start :]) == STOPPING
    assert refusedWithin(proxy.port, 5.0)
    # An impatient operator signals the main process again: it is ignored.
    os.kill(proxy.pid, signal.SIGTERM)
    # The health check still answers while the sessions finish: stopping.
    assert health(metricsPort) == (503, "stopping")

    for client in finishing:
        client.readToEnd()
        assert not client.reset
        status, _, body = bytes(client.data[client.start :]).partition(b"\r\n")
        assert status.startswith(b"+OK"), status
        assert body == response + STOPPING
    assert time.monotonic() - stopAt < GRACE

    # The slow clients read nothing more until the proxy has exited: it
    # cut them when the grace period ended, and waited for nothing else.
    assert proxy.waitForExit(GRACE + TIMEOUT) == -signal.SIGTERM
    assert GRACE <= time.monotonic() - stopAt < GRACE + 5.0
    for client in slow:
        client.readToEnd()
        received = bytes(client.data[client.start :])
        assert not received.endswith(b"\r\n.\r\n") and STOPPING not in received
        assert len(received) < len(response)

    assert not any(c.upper().startswith((b"DELE", b"QUIT")) for c in server.commands)
    assert server.deletedAtQuit == []
    log = proxy.log()
    cut = "closed: proxy stopping: cut when the grace period ended;"
    assert log.count(cut) == len(slow), log
    assert log.count("closed: proxy stopping; ") >= len(finishing) + len(idle), log
    assert log.count("grace period (8.0 s) over, cutting") == workers
    assert "SIGTERM ignored: already stopping" in log, log
    assert "Traceback" not in log and "ReactorNotRunning" not in log, log
    assert "Traceback" not in log
    for client in finishing + slow + idle:
        client.close()
