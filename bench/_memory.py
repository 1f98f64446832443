"""
Memory of a proxy process under two loads: many idle sessions, one big RETR.

L{measureMemory} is the benchmark's memory part; each measurement runs on a
freshly started proxy, so what earlier loads left in its heap does not hide
growth.  C{holdIdleSessions} logs in a thousand clients (a bounded number at a time,
on one C{selectors} loop) and keeps them open; the caller reads the proxy's
RSS meanwhile.  C{slowRetrieve} fetches one message through a small receive
window at a fixed rate, the case where a proxy that does not apply
backpressure ends up holding the whole message.  Peaks are read from
C{VmHWM} after resetting it (L{bench._process.resetPeak}), so no short spike
is missed between samples.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench._dovecot import DovecotServer
from bench._load import TERMINATOR, LoadGenerator, stuff
from bench._report import progress
from bench._settings import Settings
from bench._targets import Targets, startedTarget

MB = 1e6

LOOPBACK = "127.0.0.1"


@dataclass
class IdleSessions:
    """
    Open, logged-in sessions and what it took to open them.
    """

    sockets: list[socket.socket] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def close(self) -> None:
        """
        QUIT every session (errors ignored) and close the sockets.
        """
        for sock in self.sockets:
            try:
                sock.setblocking(False)
                sock.send(b"QUIT\r\n")
            except OSError:
                pass
            sock.close()
        self.sockets.clear()


class _Login:
    """
    One client going through greeting, USER and PASS.
    """

    def __init__(self, port: int, user: bytes, password: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex((LOOPBACK, port))
        self.steps = [b"USER " + user + b"\r\n", b"PASS " + password + b"\r\n"]
        self.buffer = b""
        self.error: str | None = None
        self.loggedIn = False

    def readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            self.error = str(e)
            return
        if not data:
            self.error = "closed by the server"
            return
        self.buffer += data
        while b"\r\n" in self.buffer and self.error is None and not self.loggedIn:
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            if not line.startswith(b"+OK"):
                self.error = repr(line[:100])
            elif self.steps:
                self.sock.send(self.steps.pop(0))
            else:
                self.loggedIn = True


def holdIdleSessions(
    port: int,
    user: str,
    password: str,
    count: int,
    *,
    inFlight: int = 50,
    timeout: float = 120.0,
) -> IdleSessions:
    """
    Log C{count} sessions in, at most C{inFlight} logins at a time, and
    return them open and idle.
    """
    result = IdleSessions()
    selector = selectors.DefaultSelector()
    pending: dict[_Login, float] = {}
    started = time.monotonic()
    deadline = started + timeout
    opened = 0
    while (opened < count or pending) and time.monotonic() < deadline:
        while opened < count and len(pending) < inFlight:
            login = _Login(port, user.encode(), password.encode())
            selector.register(login.sock, selectors.EVENT_READ, login)
            pending[login] = time.monotonic() + 30.0
            opened += 1
        for key, _ in selector.select(timeout=0.5):
            login = key.data
            login.readable()
            if login.loggedIn or login.error is not None:
                selector.unregister(login.sock)
                del pending[login]
                if login.loggedIn:
                    result.sockets.append(login.sock)
                else:
                    result.errors.append(login.error or "")
                    login.sock.close()
        now = time.monotonic()
        for login in [item for item, limit in pending.items() if now > limit]:
            selector.unregister(login.sock)
            del pending[login]
            result.errors.append("login timed out")
            login.sock.close()
    for login in pending:
        result.errors.append("login not finished in time")
        login.sock.close()
    selector.close()
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class SlowRetrieval:
    """
    How one rate-limited RETR went.
    """

    seconds: float
    ok: bool
    detail: str


def slowRetrieve(
    port: int,
    user: str,
    password: str,
    message: bytes,
    *,
    bytesPerSecond: float,
    receiveBuffer: int = 64 * 1024,
    timeout: float = 120.0,
) -> SlowRetrieval:
    """
    Log in, RETR message 1 reading at most C{bytesPerSecond}, compare it
    with C{message}, QUIT.

    The small C{SO_RCVBUF} (set before connecting) keeps the kernel from
    absorbing megabytes on the client's behalf, so a proxy must hold back
    what the client does not read yet.
    """
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.settimeout(timeout)
    try:
        sock.connect((LOOPBACK, port))
        reader = sock.makefile("rb", buffering=0)
        buffer = bytearray()

        def line() -> bytes:
            while b"\r\n" not in buffer:
                chunk = reader.read(4096)
                if not chunk:
                    raise ConnectionError("closed by the server")
                buffer.extend(chunk)
            end = buffer.index(b"\r\n")
            found = bytes(buffer[:end])
            del buffer[: end + 2]
            return found

        for command in (None, b"USER " + user.encode(), b"PASS " + password.encode()):
            if command is not None:
                sock.sendall(command + b"\r\n")
            status = line()
            if not status.startswith(b"+OK"):
                return SlowRetrieval(time.monotonic() - started, False, repr(status[:100]))
        sock.sendall(b"RETR 1\r\n")
        status = line()
        if not status.startswith(b"+OK"):
            return SlowRetrieval(time.monotonic() - started, False, repr(status[:100]))
        body = bytearray(buffer)
        readStart = time.monotonic()
        chunk = 16 * 1024
        while not body.endswith(TERMINATOR) and not (body == b".\r\n"):
            data = reader.read(chunk)
            if not data:
                raise ConnectionError("closed by the server during RETR")
            body += data
            # Sleep until the bytes read so far fit the rate.
            ahead = len(body) / bytesPerSecond - (time.monotonic() - readStart)
            if ahead > 0:
                time.sleep(ahead)
        sock.sendall(b"QUIT\r\n")
        same = bytes(body[:-3]) == stuff(message)
        detail = "" if same else f"received {len(body) - 3} bytes, differing from the message"
        return SlowRetrieval(time.monotonic() - started, same, detail)
    except OSError as e:
        return SlowRetrieval(time.monotonic() - started, False, str(e))
    finally:
        sock.close()


def measureMemory(
    settings: Settings, generator: LoadGenerator, dovecot: DovecotServer
) -> dict[str, Any]:
    """
    For every proxy target, each time freshly started: RSS with many idle
    sessions, and the peak while one big message passes to a fast client,
    then to a slow one.
    """
    results: dict[str, Any] = {
        "idle": {"sessions": settings.idleSessions, "targets": {}},
        "big": {"sizeMB": dovecot.accounts["big"].mailbox.totalBytes / MB, "targets": {}},
    }
    for name in settings.targets:
        if name == "direct":
            continue
        with startedTarget(settings, dovecot, name, settings.idleSessions + 100) as targets:
            results["idle"]["targets"][name] = _idle(settings, generator, targets, name, dovecot)
        with startedTarget(settings, dovecot, name, settings.idleSessions + 100) as targets:
            results["big"]["targets"][name] = _big(settings, generator, targets, name, dovecot)
    return results


def _idle(
    settings: Settings,
    generator: LoadGenerator,
    targets: Targets,
    name: str,
    dovecot: DovecotServer,
) -> dict[str, Any]:
    account = dovecot.accounts["idle"]
    port = targets.port(name)
    # One whole session first, so that lazily imported code is in the baseline.
    generator.run(port, account.user, account.password, "idle", 1, 1, settings.timeout)
    time.sleep(0.5)
    before = targets.rss(name)
    progress(f"  memory: {settings.idleSessions} idle sessions through {name}")
    sessions = holdIdleSessions(
        port, account.user, account.password, settings.idleSessions, timeout=settings.timeout * 2
    )
    try:
        time.sleep(2.0)
        withSessions = targets.rss(name)
    finally:
        opened = len(sessions.sockets)
        sessions.close()
    progress(
        f"    {name}: {before / MB:.1f} MB -> {withSessions / MB:.1f} MB with {opened} sessions "
        f"({len(sessions.errors)} login errors)"
    )
    return {
        "rssBeforeMB": before / MB,
        "rssWithSessionsMB": withSessions / MB,
        "perSessionKB": (withSessions - before) / max(opened, 1) / 1e3,
        "opened": opened,
        "errors": len(sessions.errors),
        "errorSamples": sessions.errors[:5],
        "seconds": sessions.seconds,
    }


def _big(
    settings: Settings,
    generator: LoadGenerator,
    targets: Targets,
    name: str,
    dovecot: DovecotServer,
) -> dict[str, Any]:
    account = dovecot.accounts["big"]
    message = account.mailbox.messages[0]
    port = targets.port(name)

    def fast() -> tuple[bool, str, float]:
        result = generator.run(port, account.user, account.password, "big", 1, 1, settings.timeout)
        ok = result.errorCount == 0 and result.messages == 1
        detail = "; ".join(result.errorSamples)
        if ok and result.unparsed:
            detail = "over max_size: delivered unparsed below X-Popproxy-Unchecked"
        return ok, detail, result.wallSeconds

    def slow() -> tuple[bool, str, float]:
        outcome = slowRetrieve(
            port,
            account.user,
            account.password,
            message,
            bytesPerSecond=settings.slowRateMegabytes * MB,
            timeout=settings.timeout,
        )
        return outcome.ok, outcome.detail, outcome.seconds

    cases: list[tuple[str, Callable[[], tuple[bool, str, float]]]] = [("fast", fast)]
    if settings.slowRateMegabytes > 0:
        cases.append((f"slow ({settings.slowRateMegabytes:g} MB/s)", slow))
    rows: dict[str, Any] = {}
    for client, fetch in cases:
        time.sleep(0.5)
        targets.resetPeak(name)
        before = targets.rss(name)
        ok, detail, seconds = fetch()
        increase = max(targets.peak(name) - before, 0)
        rows[client] = {
            "rssBeforeMB": before / MB,
            "peakIncreaseMB": increase / MB,
            "increaseRatio": increase / len(message),
            "seconds": seconds,
            "ok": ok,
            "detail": detail,
        }
        progress(
            f"  memory: {len(message) / MB:.0f} MB RETR through {name}, {client} client: "
            f"peak +{increase / MB:.1f} MB ({'verified' if ok else detail})"
            + (f"; {detail}" if ok and detail else "")
        )
    return rows
