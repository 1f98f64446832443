"""
The load generator: many concurrent POP3 sessions that check every byte.

Each client connects, logs in with USER/PASS, sends LIST, retrieves every
message with RETR and QUITs, one or more rounds in a row.  Clients are spread
over several worker processes (forked once, holding the expected messages
copy-on-write); each worker runs its share on one C{selectors} loop over raw
non-blocking sockets.  Parsing is minimal and done by C code: big
C{recv_into}s into a growing C{bytearray}, the terminating C{CRLF.CRLF} found
with C{find} (never rescanning what was searched already), and the body
compared in place with the expected message, dot-stuffed once in advance
(one C{memcmp}, no copy).  A difference is an error, counted and reported,
never a statistic.

The script of a session is a generator: it yields what it waits for (a
status line or a multi-line response) and is sent the answer, so the
protocol reads top to bottom while one loop drives hundreds of sessions.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import selectors
import signal
import socket
import statistics
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from multiprocessing.pool import Pool

from bench._corpus import Mailbox

LOOPBACK = "127.0.0.1"
TERMINATOR = b"\r\n.\r\n"
RECEIVE_SIZE = 256 * 1024

#: What the workers compare against, set before the pool forks: the
#: messages, and the same dot-stuffed as they travel on the wire.
_MAILBOXES: dict[str, Mailbox] = {}
_STUFFED: dict[str, tuple[bytes, ...]] = {}


@dataclass(frozen=True)
class LoadJob:
    """
    A worker's share of one run.
    """

    port: int
    user: str
    password: str
    mailbox: str
    sessions: int
    rounds: int
    startAt: float
    timeout: float


@dataclass
class LoadResult:
    """
    What sessions measured; workers' results add up with L{merge}.
    """

    sessions: int = 0
    completedSessions: int = 0
    messages: int = 0
    messageBytes: int = 0
    #: Messages over popproxy's max_size, verified below its header.
    unparsed: int = 0
    retrLatencies: list[float] = field(default_factory=list)
    #: Each RETR as (command sent, last octet received, message size), on
    #: the system-wide monotonic clock: what was in flight when.
    retrSpans: list[tuple[float, float, int]] = field(default_factory=list)
    loginLatencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    errorSamples: list[str] = field(default_factory=list)
    firstStart: float = float("inf")
    lastEnd: float = 0.0
    cpuSeconds: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.sessions += other.sessions
        self.completedSessions += other.completedSessions
        self.messages += other.messages
        self.messageBytes += other.messageBytes
        self.unparsed += other.unparsed
        self.retrLatencies += other.retrLatencies
        self.retrSpans += other.retrSpans
        self.loginLatencies += other.loginLatencies
        self.errors.update(other.errors)
        self.errorSamples += other.errorSamples[: max(0, 10 - len(self.errorSamples))]
        self.firstStart = min(self.firstStart, other.firstStart)
        self.lastEnd = max(self.lastEnd, other.lastEnd)
        self.cpuSeconds += other.cpuSeconds

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.errorSamples) < 10:
            self.errorSamples.append(f"{kind}: {detail}")

    @property
    def errorCount(self) -> int:
        return sum(self.errors.values())

    @property
    def wallSeconds(self) -> float:
        return max(self.lastEnd - self.firstStart, 1e-9)

    def summary(self) -> dict[str, float | int]:
        """
        The figures of one run, as plain numbers (MB = 10^6 bytes, ms).
        """
        wall = self.wallSeconds
        return {
            "sessionsRun": self.sessions,
            "completedSessions": self.completedSessions,
            "seconds": wall,
            "messages": self.messages,
            "megabytes": self.messageBytes / 1e6,
            "mbPerSecond": self.messageBytes / 1e6 / wall,
            "messagesPerSecond": self.messages / wall,
            "retrP50Ms": percentile(self.retrLatencies, 50) * 1e3,
            "retrP99Ms": percentile(self.retrLatencies, 99) * 1e3,
            "loginP50Ms": percentile(self.loginLatencies, 50) * 1e3,
            "errors": self.errorCount,
            "loadCpuSeconds": self.cpuSeconds,
        }


def percentile(values: Sequence[float], p: float) -> float:
    """
    The C{p}th percentile (nearest rank on the sorted values); NaN if empty.
    """
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    if p == 50:
        return statistics.median(ordered)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


class SessionFailed(Exception):
    """
    The session cannot go on; C{kind} names the error class in the report.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# What a session script yields: wait for one status line (it is sent the
# line as bytes), or for a whole multi-line response (it is sent a
# _Response, or the status line as bytes if that was not +OK).
LINE = 1
MULTILINE = 2


def stuff(message: bytes) -> bytes:
    """
    A CRLF-terminated message as it travels after C{+OK}: dot-stuffed,
    without the terminating dot line.
    """
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


def unstuff(body: bytes) -> bytes:
    """
    Undo dot-stuffing of a body (without its terminating line).
    """
    return (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]


class _Response:
    """
    A complete multi-line response, still in the receive buffer: valid only
    until the script yields again.
    """

    __slots__ = ("status", "_buffer", "_start", "_end")

    def __init__(self, status: bytes, buffer: bytearray, start: int, end: int) -> None:
        self.status = status
        self._buffer = buffer
        self._start = start
        self._end = end

    def body(self) -> bytes:
        """
        A copy of the (still stuffed) body, terminating line excluded.
        """
        return bytes(self._buffer[self._start : self._end])

    def matches(self, stuffed: bytes) -> bool:
        """
        Whether the body is exactly C{stuffed}: one C{memcmp} in the buffer,
        no copy.  Stuffing is one-to-one, so this is the same as comparing
        the unstuffed message with the expected one.
        """
        return self._end - self._start == len(stuffed) and self._buffer.startswith(
            stuffed, self._start, self._end
        )


class _Connection:
    """
    One session's socket, receive buffer and script.
    """

    def __init__(
        self,
        job: LoadJob,
        expected: tuple[bytes, ...],
        stuffed: tuple[bytes, ...],
        result: LoadResult,
    ) -> None:
        self.job = job
        self.expected = expected
        self.stuffed = stuffed
        self.result = result
        self.buffer = bytearray(RECEIVE_SIZE * 2)
        self.filled = 0
        self.scanned = 0
        self.waitingFor = 0
        self.deadline = 0.0
        self.started = 0.0
        self.stage = "connect"
        self.done = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.script = self._script()

    def begin(self) -> None:
        self.started = time.monotonic()
        self.result.firstStart = min(self.result.firstStart, self.started)
        self.sock.connect_ex((LOOPBACK, self.job.port))
        self._advance(None)

    def send(self, line: bytes) -> None:
        data = line + b"\r\n"
        # Commands are tiny: a fresh socket buffer always takes them whole.
        if self.sock.send(data) != len(data):
            raise SessionFailed("protocol", "short send")

    def _script(self) -> Generator[int, object, None]:
        job = self.job
        self.stage = "greeting"
        greeting = yield LINE
        if not isinstance(greeting, bytes) or not greeting.startswith(b"+OK"):
            raise SessionFailed("greeting", repr(greeting)[:120])
        self.stage = "USER"
        self.send(b"USER " + job.user.encode())
        self._expectOk(b"USER", (yield LINE))
        self.stage = "PASS"
        self.send(b"PASS " + job.password.encode())
        self._expectOk(b"PASS", (yield LINE))
        self.result.loginLatencies.append(time.monotonic() - self.started)
        self.stage = "LIST"
        self.send(b"LIST")
        listing = self._response(b"LIST", (yield MULTILINE)).body()
        sizes = [int(entry.split(b" ")[1]) for entry in listing.split(b"\r\n") if entry]
        if len(sizes) != len(self.expected):
            raise SessionFailed("list", f"{len(sizes)} messages, expected {len(self.expected)}")
        for number, (size, message) in enumerate(zip(sizes, self.expected, strict=True), 1):
            if size != len(message):
                self.result.error("list", f"message {number}: size {size}, expected {len(message)}")
            self.stage = f"RETR {number}"
            sent = time.monotonic()
            self.send(b"RETR %d" % number)
            response = self._response(b"RETR", (yield MULTILINE))
            done = time.monotonic()
            self.result.retrLatencies.append(done - sent)
            self.result.retrSpans.append((sent, done, size))
            if response.matches(self.stuffed[number - 1]):
                self.result.messages += 1
                self.result.messageBytes += size
            else:
                received = unstuff(response.body())
                if _unparsedAsDocumented(received, message):
                    # Over the chain's max_size: delivered untouched below
                    # popproxy's X-Popproxy-Unchecked header, by policy.
                    self.result.messages += 1
                    self.result.messageBytes += size
                    self.result.unparsed += 1
                    continue
                self.result.error("mismatch", f"RETR {number}: {_difference(received, message)}")
        self.stage = "QUIT"
        self.send(b"QUIT")
        self._expectOk(b"QUIT", (yield LINE))
        self.result.completedSessions += 1

    @staticmethod
    def _response(verb: bytes, answer: object) -> _Response:
        if not isinstance(answer, _Response):
            raise SessionFailed("-ERR", f"{verb.decode()} -> {answer!r}"[:200])
        return answer

    @staticmethod
    def _expectOk(verb: bytes, status: object) -> None:
        if not isinstance(status, bytes) or not status.startswith(b"+OK"):
            raise SessionFailed("-ERR", f"{verb.decode()} -> {status!r}"[:200])

    def _advance(self, answer: object) -> None:
        try:
            self.waitingFor = self.script.send(answer)
        except StopIteration:
            self.finish()
            return
        self.deadline = time.monotonic() + self.job.timeout

    def finish(self) -> None:
        self.done = True
        self.result.lastEnd = max(self.result.lastEnd, time.monotonic())
        self.sock.close()

    def fail(self, kind: str, detail: str) -> None:
        if not self.done:
            self.result.error(kind, detail)
            self.finish()

    def readable(self) -> None:
        buffer = self.buffer
        if len(buffer) - self.filled < RECEIVE_SIZE:
            buffer.extend(bytes(len(buffer)))
        try:
            received = self.sock.recv_into(memoryview(buffer)[self.filled :], RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail("connection", str(e))
            return
        if not received:
            self.fail("connection", "closed by the server")
            return
        self.filled += received
        try:
            while not self.done and self._answerReady():
                pass
        except SessionFailed as e:
            self.fail(e.kind, e.detail)
        except (ValueError, IndexError) as e:
            self.fail("protocol", f"unparsable answer: {e}")

    def _answerReady(self) -> bool:
        """
        Hand the script what it waits for, if the buffer holds it.
        """
        buffer, filled = self.buffer, self.filled
        lineEnd = buffer.find(b"\r\n", 0, filled)
        if lineEnd == -1:
            return False
        status = bytes(buffer[:lineEnd])
        if self.waitingFor == LINE or not status.startswith(b"+OK"):
            self._consume(lineEnd + 2)
            self._advance(status)
            return True
        # Search on from where the last search ended; the terminator may
        # begin with the status line's own CRLF (an empty body).
        end = buffer.find(TERMINATOR, max(lineEnd, self.scanned), filled)
        if end == -1:
            self.scanned = max(lineEnd, filled - len(TERMINATOR) + 1)
            return False
        self._advance(_Response(status, buffer, lineEnd + 2, max(end + 2, lineEnd + 2)))
        self._consume(end + len(TERMINATOR))
        return True

    def _consume(self, count: int) -> None:
        """
        Drop the first C{count} bytes of the buffer (normally all of it).
        """
        rest = self.filled - count
        if rest:
            self.buffer[:rest] = self.buffer[count : self.filled]
        self.filled = rest
        self.scanned = 0


_UNPARSED_HEADER = re.compile(rb"X-Popproxy-Unchecked: too large to filter \(\d+ octets\)\r\n")


def _unparsedAsDocumented(received: bytes, expected: bytes) -> bool:
    """
    Whether C{received} is C{expected} below the one header popproxy adds
    to a message it did not parse because it is over C{max_size}.
    """
    header = _UNPARSED_HEADER.match(received)
    return header is not None and received[header.end() :] == expected


def _difference(received: bytes, expected: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(received, expected, strict=False)) if a != b),
        min(len(received), len(expected)),
    )
    return (
        f"{len(received)} bytes, expected {len(expected)}; first difference at {at}: "
        f"{received[at : at + 20]!r} vs {expected[at : at + 20]!r}"
    )


def runSessions(job: LoadJob) -> LoadResult:
    """
    Run C{job.sessions} concurrent clients on one selectors loop (in a
    worker); each runs C{job.rounds} sessions one after the other.
    """
    result = LoadResult(sessions=job.sessions * job.rounds)
    expected = _MAILBOXES[job.mailbox].messages
    stuffed = _STUFFED[job.mailbox]
    cpuBefore = _cpuTime()
    delay = job.startAt - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    selector = selectors.DefaultSelector()
    live: dict[_Connection, int] = {}

    def begin(roundsLeft: int) -> None:
        connection = _Connection(job, expected, stuffed, result)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        live[connection] = roundsLeft - 1
        connection.begin()

    def ended(connection: _Connection) -> None:
        selector.unregister(connection.sock)
        roundsLeft = live.pop(connection)
        if roundsLeft:
            begin(roundsLeft)

    for _ in range(job.sessions):
        begin(job.rounds)
    while live:
        for key, _ in selector.select(timeout=0.5):
            connection = key.data
            connection.readable()
            if connection.done:
                ended(connection)
        now = time.monotonic()
        for connection in [c for c in live if now > c.deadline]:
            connection.fail("timeout", f"no answer to {connection.stage} within {job.timeout}s")
            ended(connection)
    selector.close()
    result.cpuSeconds = _cpuTime() - cpuBefore
    return result


def _workerSignals() -> None:
    """
    In a worker: Ctrl-C is the parent's to handle, and SIGTERM (how the
    parent stops the pool) ends the worker whatever the parent installed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _cpuTime() -> float:
    times = os.times()
    return times.user + times.system


class LoadGenerator:
    """
    A pool of forked worker processes that run sessions against a port.
    """

    def __init__(self, mailboxes: Sequence[Mailbox], processes: int) -> None:
        _MAILBOXES.clear()
        _MAILBOXES.update({mailbox.name: mailbox for mailbox in mailboxes})
        _STUFFED.clear()
        _STUFFED.update(
            {mailbox.name: tuple(map(stuff, mailbox.messages)) for mailbox in mailboxes}
        )
        self.processes = processes
        # Fork (not spawn): the workers share the expected messages with the
        # parent copy-on-write; the pool is made before any thread starts.
        self._pool: Pool = multiprocessing.get_context("fork").Pool(
            processes, initializer=_workerSignals
        )

    def run(
        self,
        port: int,
        user: str,
        password: str,
        mailbox: str,
        sessions: int,
        rounds: int = 1,
        timeout: float = 120.0,
    ) -> LoadResult:
        """
        Run C{sessions} concurrent clients, spread over the workers, all
        starting at the same moment, each running C{rounds} sessions in a
        row; return the merged measurements.
        """
        workers = min(sessions, self.processes)
        startAt = time.monotonic() + 0.1 + 0.01 * workers
        shares = [
            sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)
        ]
        jobs = [
            LoadJob(port, user, password, mailbox, share, rounds, startAt, timeout)
            for share in shares
        ]
        merged = LoadResult()
        pending = self._pool.map_async(runSessions, jobs)
        # Every session is bounded by its per-response timeout; the extra
        # margin covers a run of many responses.
        for result in pending.get(timeout=timeout * 20 * rounds + 60):
            merged.merge(result)
        return merged

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()
