"""
The legitimate user of the attack benchmark: a mail client on its own
address that polls its mailbox during the attack.

Every C{interval} seconds it connects, logs in with USER/PASS, RETRs every
message (checking each body byte for byte against what Dovecot serves) and
QUITs.  It records how long each login took (from connecting to the C{+OK}
answering PASS) and each RETR (from the command to the end of the body),
and every refusal or failure with the line or error that caused it: the
goal is none, and every login within a second.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from bench._load import TERMINATOR, stuff


@dataclass(frozen=True)
class LegitPlan:
    """
    What the legitimate client does, and from where.
    """

    port: int
    source: str
    user: str
    password: str
    messages: tuple[bytes, ...]
    interval: float
    timeout: float
    startAt: float
    stopAt: float


@dataclass
class LegitResult:
    """
    What the legitimate client got.

    @ivar loginSeconds: the time of each successful login.
    @ivar retrSeconds: the time of each complete, byte-exact RETR.
    @ivar failures: one line per refused login, failed RETR or error.
    @ivar passAnswered: C{PASS} lines the proxy answered (each reached
        the upstream, refused or not).
    """

    sessions: int = 0
    loginSeconds: list[float] = field(default_factory=list)
    retrSeconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    passAnswered: int = 0


class PollingClient:
    """
    One blocking POP3 connection from C{plan.source}.
    """

    def __init__(self, plan: LegitPlan) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", plan.port), timeout=plan.timeout, source_address=(plan.source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def _receive(self) -> None:
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            raise ConnectionError("closed by the proxy")
        self.buffer += chunk

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) == -1:
            self._receive()
        found = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return found

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.line()

    def body(self) -> bytes:
        """
        The rest of a multi-line response, still dot-stuffed, through its
        terminating line.
        """
        if self.buffer.startswith(b".\r\n"):
            del self.buffer[:3]
            return b".\r\n"
        searched = 0
        while (end := self.buffer.find(TERMINATOR, max(searched - len(TERMINATOR), 0))) == -1:
            searched = len(self.buffer)
            self._receive()
        found = bytes(self.buffer[: end + len(TERMINATOR)])
        del self.buffer[: end + len(TERMINATOR)]
        return found

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


def _login(plan: LegitPlan, result: LegitResult) -> PollingClient | None:
    """
    Connect and log in; C{None} (and a failure recorded) if that failed.
    """
    started = time.monotonic()
    client = PollingClient(plan)
    steps = (None, f"USER {plan.user}".encode(), f"PASS {plan.password}".encode())
    for step in steps:
        answer = client.line() if step is None else client.command(step)
        if step is not None and step.startswith(b"PASS"):
            result.passAnswered += 1
        if not answer.startswith(b"+OK"):
            verb = "greeting" if step is None else step.split(b" ")[0].decode()
            result.failures.append(f"{verb}: {answer[:100].decode('ascii', 'replace')}")
            client.close()
            return None
    result.loginSeconds.append(time.monotonic() - started)
    return client


def _retrieveAll(client: PollingClient, plan: LegitPlan, result: LegitResult) -> None:
    for number, message in enumerate(plan.messages, 1):
        started = time.monotonic()
        answer = client.command(b"RETR %d" % number)
        if not answer.startswith(b"+OK"):
            result.failures.append(f"RETR {number}: {answer[:100].decode('ascii', 'replace')}")
            return
        if client.body() != stuff(message) + TERMINATOR[2:]:
            result.failures.append(f"RETR {number}: the body differs from Dovecot's")
            return
        result.retrSeconds.append(time.monotonic() - started)


def poll(plan: LegitPlan, result: LegitResult) -> None:
    """
    One session: log in, RETR every message, QUIT; failures are recorded.
    """
    result.sessions += 1
    client = None
    try:
        client = _login(plan, result)
        if client is not None:
            _retrieveAll(client, plan, result)
    except (OSError, ConnectionError) as e:
        result.failures.append(f"session {result.sessions}: {type(e).__name__}: {e}")
    finally:
        if client is not None:
            client.close()


def runLegitClient(plan: LegitPlan) -> LegitResult:
    """
    Poll every C{plan.interval} seconds from C{plan.startAt} to
    C{plan.stopAt} (in a forked worker).
    """
    result = LegitResult()
    due = plan.startAt
    while due < plan.stopAt:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        poll(plan, result)
        due += plan.interval
    return result
