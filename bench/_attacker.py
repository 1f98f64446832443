"""
The attacker of the attack benchmark: an idle flood and a password spray
from one address (or a few, taken in turn), on one C{selectors} loop over raw non-blocking sockets.

  - The idle flood opens C{idle} connections (a batch per loop turn, so the
    spray is not starved) and holds each one open without sending a byte;
    it records what each was answered (the greeting, or a refusal and its
    reason) and, for an admitted one, how and when the proxy closed it.
  - The spray keeps C{connections} sessions busy guessing: it pipelines
    C{USER}/C{PASS} for the next guess as soon as a session is greeted or
    has its previous answer, and reconnects at once when the proxy closes
    it.  A guess counts as tried when the proxy relays its verdict
    (C{-ERR [AUTH]} or C{+OK}); a guess the proxy refuses before that (at
    the door, blocked at C{USER}, throttled at C{PASS}) goes back to the
    front of the queue, as an attacker wanting every guess tested would
    do.  Once every guess has a verdict its sessions stay idle.

Both go on until the time is up.

Every outcome is counted by what the proxy answered; L{AttackerResult} is
what the forked worker returns.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field

#: Linux: let connect() choose the source port per destination, so
#: thousands of reconnections from one address do not run out of ports.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Idle connections opened per loop turn.
IDLE_BATCH = 100

#: What a line from the proxy means, by a piece of its text, in order.
_REASONS = (
    (b"too many sessions on this server", "sessions"),
    (b"too many sessions from your address", "address"),
    (b"too many connections from your address", "rate"),
    (b"too many failed logins from your address", "blocked"),
    (b"too many login attempts", "throttled"),
    (b"autologout: no login in time", "login_timeout"),
    (b"autologout: command line not completed", "command_deadline"),
    (b"-ERR [AUTH]", "auth_failed"),
)


def classify(line: bytes) -> str:
    """
    The reason a proxy's line names (see L{_REASONS}), or the line itself.
    """
    for piece, reason in _REASONS:
        if piece in line:
            return reason
    return "other: " + line[:60].decode("ascii", "replace")


@dataclass(frozen=True)
class AttackPlan:
    """
    What the attacker does, and from where.
    """

    port: int
    #: The attacker's addresses; connections take them in turn.
    sources: tuple[str, ...]
    idle: int
    guesses: tuple[tuple[str, str], ...]
    connections: int
    startAt: float
    stopAt: float


@dataclass
class AttackerResult:
    """
    What the proxy answered the attacker.

    @ivar idleAnswers: the first line each idle connection got, by reason
        (C{greeted} for a greeting).
    @ivar idleClosed: admitted idle connections the proxy closed later, by
        the reason its last line gave (C{no line}: closed silently).
    @ivar sprayRefusals: spray connections refused at the door, by reason.
    @ivar loginAnswers: answers to the spray's C{USER} and C{PASS}, by
        reason (C{auth_failed} is a verdict, the rest refusals).
    @ivar verdictTimes: seconds from the start at which each verdict came.
    """

    idleOpened: int = 0
    idleAnswers: Counter[str] = field(default_factory=Counter)
    idleClosed: Counter[str] = field(default_factory=Counter)
    idleClosedAfter: list[float] = field(default_factory=list)
    idleHeldAtEnd: int = 0
    sprayConnections: int = 0
    sprayRefusals: Counter[str] = field(default_factory=Counter)
    loginAnswers: Counter[str] = field(default_factory=Counter)
    verdicts: int = 0
    verdictTimes: list[float] = field(default_factory=list)
    guessesLeft: int = 0
    connectErrors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class _Connection:
    """
    One attacker socket: its role (idle or spray) and what it read.
    """

    def __init__(self, plan: AttackPlan, role: str, source: str) -> None:
        self.role = role
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.openedAt = time.monotonic()
        self.buffer = b""
        self.lines: deque[bytes] = deque()
        self.greeted = False
        self.admitted = False
        self.lastLine = b""
        #: The spray's guess in flight and the answers it still waits for.
        self.guess: tuple[str, str] | None = None
        self.waiting = 0
        error = self.sock.connect_ex(("127.0.0.1", plan.port))
        if error not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(error, errno.errorcode.get(error, str(error)))

    def read(self) -> bool:
        """
        Read what is there into C{lines}; C{False} once the proxy closed.
        """
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        *complete, self.buffer = (self.buffer + data).split(b"\r\n")
        self.lines.extend(complete)
        return True


class Attacker:
    """
    Runs one L{AttackPlan} and fills an L{AttackerResult}.
    """

    def __init__(self, plan: AttackPlan) -> None:
        self.plan = plan
        self.result = AttackerResult()
        self.selector = selectors.DefaultSelector()
        self.queue: deque[tuple[str, str]] = deque(plan.guesses)
        self.live: set[_Connection] = set()
        self.started = 0.0
        self.opened = 0

    def run(self) -> AttackerResult:
        delay = self.plan.startAt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.started = time.monotonic()
        for _ in range(self.plan.connections):
            self._open("spray")
        while time.monotonic() < self.plan.stopAt:
            self._openIdleBatch()
            for key, _ in self.selector.select(timeout=0.1):
                self._readable(key.data)
        self._finish()
        return self.result

    def _openIdleBatch(self) -> None:
        for _ in range(min(IDLE_BATCH, self.plan.idle - self.result.idleOpened)):
            self.result.idleOpened += 1
            self._open("idle")

    def _open(self, role: str) -> None:
        if role == "spray":
            self.result.sprayConnections += 1
        sources = self.plan.sources
        self.opened += 1
        try:
            connection = _Connection(self.plan, role, sources[self.opened % len(sources)])
        except OSError as e:
            self.result.connectErrors[f"{role}: {e.strerror}"] += 1
            return
        self.live.add(connection)
        self.selector.register(connection.sock, selectors.EVENT_READ, connection)

    def _readable(self, connection: _Connection) -> None:
        open_ = connection.read()
        while connection.lines:
            line = connection.lines.popleft()
            connection.lastLine = line
            if connection.role == "idle":
                self._idleLine(connection, line)
            else:
                self._sprayLine(connection, line)
        if not open_:
            self._closed(connection)

    def _idleLine(self, connection: _Connection, line: bytes) -> None:
        if not connection.greeted:
            connection.greeted = True
            connection.admitted = line.startswith(b"+OK")
            self.result.idleAnswers["greeted" if connection.admitted else classify(line)] += 1

    def _sprayLine(self, connection: _Connection, line: bytes) -> None:
        if not connection.greeted:
            connection.greeted = True
            if not line.startswith(b"+OK"):
                self.result.sprayRefusals[classify(line)] += 1
                return
            self._nextGuess(connection)
            return
        if connection.guess is None:
            return
        connection.waiting -= 1
        if connection.waiting == 1:  # the answer to USER
            if not line.startswith(b"+OK"):
                self._refusedGuess(connection, line)
            return
        if line.startswith(b"+OK") or b"[AUTH]" in line:
            self.result.loginAnswers["auth_failed" if b"[AUTH]" in line else "accepted"] += 1
            self.result.verdicts += 1
            self.result.verdictTimes.append(time.monotonic() - self.started)
            connection.guess = None
            self._nextGuess(connection)
        else:
            self._refusedGuess(connection, line)

    def _refusedGuess(self, connection: _Connection, line: bytes) -> None:
        """
        The proxy refused the guess before a verdict: it goes back first in
        line; the session is left for the proxy to close.
        """
        self.result.loginAnswers[classify(line)] += 1
        assert connection.guess is not None
        self.queue.appendleft(connection.guess)
        connection.guess = None
        connection.waiting = 0

    def _nextGuess(self, connection: _Connection) -> None:
        if not self.queue:
            return
        account, password = connection.guess = self.queue.popleft()
        connection.waiting = 2
        try:
            connection.sock.sendall(f"USER {account}\r\nPASS {password}\r\n".encode())
        except OSError:
            pass  # the read that follows sees the close

    def _closed(self, connection: _Connection) -> None:
        self.selector.unregister(connection.sock)
        connection.sock.close()
        self.live.discard(connection)
        if connection.role == "idle":
            if not connection.greeted:
                self.result.idleAnswers["closed without a line"] += 1
            elif connection.admitted:
                last = connection.lastLine
                self.result.idleClosed[
                    "no line" if last.startswith(b"+OK") else classify(last)
                ] += 1
                self.result.idleClosedAfter.append(time.monotonic() - connection.openedAt)
            return
        if not connection.greeted:
            self.result.sprayRefusals["closed without a line"] += 1
        if connection.guess is not None:
            self.queue.appendleft(connection.guess)
        if time.monotonic() < self.plan.stopAt:
            self._open("spray")

    def _finish(self) -> None:
        result = self.result
        result.seconds = time.monotonic() - self.started
        result.idleHeldAtEnd = sum(1 for c in self.live if c.role == "idle" and c.admitted)
        result.guessesLeft = len(self.queue) + sum(1 for c in self.live if c.guess is not None)
        for connection in list(self.live):
            connection.sock.close()
        self.selector.close()


def runAttacker(plan: AttackPlan) -> AttackerResult:
    """
    Run C{plan} (in a forked worker) and return what the proxy answered.
    """
    return Attacker(plan).run()
