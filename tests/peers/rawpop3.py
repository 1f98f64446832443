"""An exact-bytes POP3 test server running in a background thread of the test process.

Dovecot normalizes the mail it serves (bare LF, NUL, missing final CRLF, very long lines).
This server serves each message exactly as given, dot-stuffed at the wire boundary only,
records every command line it receives, and can inject faults (odd greetings, a scripted PASS
reply, a connection cut in the middle of RETR, a command that is never answered, delays).

It deliberately uses plain sockets and threads, not Twisted: the code under test runs Twisted
in other processes, and a test peer must not share the reactor of what it tests.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

__all__ = [
    "DEFAULT_CAPABILITIES",
    "RawPop3Server",
    "dotStuff",
    "rawPop3",
]

DEFAULT_CAPABILITIES: tuple[bytes, ...] = (
    b"TOP",
    b"UIDL",
    b"USER",
    b"PIPELINING",
    b"RESP-CODES",
)

# RFC 2449 allows 255 octets per command line; be lenient but bounded so a client that never
# sends a line terminator cannot make the peer buffer without limit.
_MAX_COMMAND_LINE = 8192
_POLL_INTERVAL = 0.05
_JOIN_TIMEOUT = 5.0

_AUTHORIZATION = "AUTHORIZATION"
_TRANSACTION = "TRANSACTION"
_UPDATE = "UPDATE"


def dotStuff(message: bytes) -> bytes:
    """
    Return C{message} as a POP3 multi-line body, terminator included.

    Lines are CRLF-delimited (a bare LF is message content, not a line end, so a "." after a
    bare LF is not stuffed); a line starting with "." gets another "."; a message that does
    not end with CRLF gets one before the terminating ".\\r\\n".
    """
    lines = message.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def _topOf(message: bytes, bodyLines: int) -> bytes:
    """
    Return the header, the blank separator line and the first C{bodyLines} body lines.

    Lines are CRLF-delimited as in L{dotStuff}; a message without a blank line is all header.
    """
    lines = message.split(b"\r\n")
    trailingCrlf = lines[-1] == b""
    if trailingCrlf:
        lines.pop()
    try:
        separator = lines.index(b"")
    except ValueError:
        return message
    kept = lines[: separator + 1 + bodyLines]
    if len(kept) == len(lines):
        return message
    return b"".join(line + b"\r\n" for line in kept)


@dataclass
class _Mailbox:
    """The server's maildrop: the given messages, minus those deleted by earlier sessions."""

    messages: list[bytes]
    uidls: list[bytes]
    present: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.present = [True] * len(self.messages)

    def snapshot(self) -> list[int]:
        """Return the original (0-based) indices a new session sees, in order."""
        return [index for index, isPresent in enumerate(self.present) if isPresent]


class _StopSession(Exception):
    """Raised inside a session to end it (client gone, server stopping, fault injected)."""


class _Session:
    """One client connection: reads command lines, answers them in order, records them."""

    def __init__(self, server: RawPop3Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buffer = b""
        self.state = _AUTHORIZATION
        self.userName: bytes | None = None
        self.view: list[int] = []
        self.deleted: set[int] = set()
        self.stalled = False
        self.timestamp = b"<%d.%d@rawpop3.test>" % (os.getpid(), time.monotonic_ns())

    # -- I/O ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        # sendall() would apply the short poll timeout to the whole body; send piecewise so a
        # slow reader gets idleTimeout and stop() still interrupts a blocked send.
        view = memoryview(data)
        deadline = time.monotonic() + self.server.idleTimeout
        while view:
            if self.server.stopping.is_set() or time.monotonic() > deadline:
                raise _StopSession()
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                continue
            except OSError as e:
                raise _StopSession() from e
            view = view[sent:]

    def sendLine(self, line: bytes) -> None:
        self.send(line + b"\r\n")

    def readLines(self) -> Iterator[bytes]:
        """Yield command lines (terminator included) until the client or the server stops."""
        deadline = time.monotonic() + self.server.idleTimeout
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line, self.buffer = self.buffer[: newline + 1], self.buffer[newline + 1 :]
                deadline = time.monotonic() + self.server.idleTimeout
                yield line
                continue
            if len(self.buffer) > _MAX_COMMAND_LINE:
                self.sendLine(b"-ERR command line too long")
                return
            if self.server.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.server.recordInput(data)
            self.buffer += data

    def pause(self, seconds: float) -> None:
        if self.server.stopping.wait(seconds):
            raise _StopSession()

    # -- protocol ----------------------------------------------------------------------------

    def run(self) -> None:
        server = self.server
        try:
            if server.greetingDelay:
                self.pause(server.greetingDelay)
            if server.greeting is not None:
                greeting = server.greeting
                self.send(greeting if greeting.endswith(b"\n") else greeting + b"\r\n")
            elif server.apop:
                self.sendLine(b"+OK rawpop3 ready " + self.timestamp)
            else:
                self.sendLine(b"+OK rawpop3 ready")
            for line in self.readLines():
                command = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                server.recordCommand(command)
                if self.stalled:
                    continue
                verb, _, argument = command.partition(b" ")
                verb = verb.upper()
                if verb in server.stallOn:
                    self.stalled = True
                    continue
                if server.delay and (server.delayOn is None or verb in server.delayOn):
                    self.pause(server.delay)
                if not self.dispatch(verb, argument):
                    return
        except _StopSession:
            return

    def dispatch(self, verb: bytes, argument: bytes) -> bool:
        """Answer one command; return False when the session is over."""
        allowed = _COMMANDS[self.state]
        name = verb.decode("ascii", "replace")
        if name not in allowed:
            if name in _COMMANDS[_AUTHORIZATION] | _COMMANDS[_TRANSACTION]:
                self.sendLine(b"-ERR command not valid in this state")
            else:
                self.sendLine(b"-ERR unknown command")
            return True
        handler: Callable[[bytes], bool | None] = getattr(self, "do_" + name)
        return handler(argument) is not False

    def do_CAPA(self, argument: bytes) -> None:
        if self.server.capabilities is None:
            self.sendLine(b"-ERR unknown command")
            return
        body = b"".join(capability + b"\r\n" for capability in self.server.capabilities)
        self.send(b"+OK capability list follows\r\n" + body + b".\r\n")

    def do_USER(self, argument: bytes) -> None:
        self.userName = argument
        self.sendLine(b"+OK send PASS")

    def do_PASS(self, argument: bytes) -> None:
        server = self.server
        if self.userName is None:
            self.sendLine(b"-ERR USER first")
            return
        userName, self.userName = self.userName, None
        if server.passReply is not None:
            self.sendLine(server.passReply)
            if server.passReply.startswith(b"+OK"):
                self.enterTransaction()
            return
        if userName == server.user and argument == server.password:
            self.enterTransaction()
            self.sendLine(b"+OK logged in")
        else:
            self.sendLine(b"-ERR [AUTH] invalid login")

    def do_APOP(self, argument: bytes) -> None:
        server = self.server
        parts = argument.split(b" ")
        expected = hashlib.md5(self.timestamp + server.password).hexdigest().encode("ascii")
        if not server.apop:
            self.sendLine(b"-ERR APOP not supported")
        elif len(parts) == 2 and parts[0] == server.user and parts[1].lower() == expected:
            self.enterTransaction()
            self.sendLine(b"+OK logged in")
        else:
            self.sendLine(b"-ERR [AUTH] invalid login")

    def enterTransaction(self) -> None:
        self.state = _TRANSACTION
        self.view = self.server.mailbox.snapshot()
        self.deleted = set()

    def message(self, argument: bytes) -> int | None:
        """Return the original index for a message-number argument, or answer -ERR."""
        try:
            number = int(argument)
        except ValueError:
            self.sendLine(b"-ERR invalid message number")
            return None
        if not 1 <= number <= len(self.view):
            self.sendLine(b"-ERR no such message")
            return None
        if number in self.deleted:
            self.sendLine(b"-ERR message %d already deleted" % number)
            return None
        return self.view[number - 1]

    def live(self) -> Iterator[tuple[int, int]]:
        """Yield (message number, original index) for the messages not marked deleted."""
        for position, index in enumerate(self.view, 1):
            if position not in self.deleted:
                yield position, index

    def do_STAT(self, argument: bytes) -> None:
        messages = self.server.mailbox.messages
        sizes = [len(messages[index]) for _, index in self.live()]
        self.sendLine(b"+OK %d %d" % (len(sizes), sum(sizes)))

    def do_LIST(self, argument: bytes) -> None:
        messages = self.server.mailbox.messages
        if argument.strip():
            index = self.message(argument.strip())
            if index is not None:
                self.sendLine(b"+OK %d %d" % (int(argument), len(messages[index])))
            return
        body = b"".join(
            b"%d %d\r\n" % (number, len(messages[index])) for number, index in self.live()
        )
        self.send(b"+OK scan listing follows\r\n" + body + b".\r\n")

    def do_UIDL(self, argument: bytes) -> None:
        uidls = self.server.mailbox.uidls
        if argument.strip():
            index = self.message(argument.strip())
            if index is not None:
                self.sendLine(b"+OK %d %s" % (int(argument), uidls[index]))
            return
        body = b"".join(b"%d %s\r\n" % (number, uidls[index]) for number, index in self.live())
        self.send(b"+OK unique-id listing follows\r\n" + body + b".\r\n")

    def do_RETR(self, argument: bytes) -> bool | None:
        index = self.message(argument.strip())
        if index is None:
            return None
        message = self.server.mailbox.messages[index]
        self.sendLine(b"+OK %d octets" % len(message))
        body = dotStuff(message)
        cut = self.server.cutRetrAfter
        target = self.server.cutRetrMessage
        if cut is not None and (target is None or target == int(argument)):
            self.send(body[:cut])
            return False
        self.send(body)
        return None

    def do_TOP(self, argument: bytes) -> None:
        parts = argument.split()
        if len(parts) != 2 or not parts[1].isdigit():
            self.sendLine(b"-ERR usage: TOP msg lines")
            return
        index = self.message(parts[0])
        if index is None:
            return
        top = _topOf(self.server.mailbox.messages[index], int(parts[1]))
        self.send(b"+OK top of message follows\r\n" + dotStuff(top))

    def do_DELE(self, argument: bytes) -> None:
        if self.message(argument.strip()) is not None:
            self.deleted.add(int(argument))
            self.sendLine(b"+OK message %d deleted" % int(argument))

    def do_RSET(self, argument: bytes) -> None:
        self.deleted = set()
        self.sendLine(b"+OK maildrop has %d messages" % len(self.view))

    def do_NOOP(self, argument: bytes) -> None:
        self.sendLine(b"+OK")

    def do_QUIT(self, argument: bytes) -> bool:
        if self.state == _TRANSACTION:
            self.state = _UPDATE
            self.server.commitDeletions([self.view[number - 1] for number in sorted(self.deleted)])
        self.sendLine(b"+OK bye")
        return False


_COMMANDS: dict[str, frozenset[str]] = {
    _AUTHORIZATION: frozenset({"CAPA", "USER", "PASS", "APOP", "QUIT"}),
    _TRANSACTION: frozenset(
        {"CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT"}
    ),
    _UPDATE: frozenset(),
}


class RawPop3Server:
    """
    A POP3 server on 127.0.0.1 serving C{messages} byte for byte, for one user.

    Message numbers in L{deletedAtQuit} are 1-based positions in the C{messages} given to the
    constructor; a message deleted at QUIT is gone for later sessions (which renumber).

    Fault injection:
      - C{greeting}: sent instead of the default greeting (CRLF appended unless it ends
        with LF);
      - C{passReply}: the line answering every PASS (a "+OK..." reply logs in regardless of
        the password);
      - C{cutRetrAfter}: close the connection after sending that many bytes of the dot-stuffed
        RETR body (the "+OK" line is sent first), for message C{cutRetrMessage} or any;
      - C{stallOn}: command verbs never answered; the session answers nothing after one
        (commands are still recorded) until the client leaves or the server stops;
      - C{delay}: seconds to wait before answering each command (in C{delayOn}, or all);
        C{greetingDelay}: seconds to wait before the greeting.
    """

    def __init__(
        self,
        messages: Sequence[bytes] = (),
        user: bytes | str = b"user",
        password: bytes | str = b"password",
        *,
        capabilities: Sequence[bytes] | None = DEFAULT_CAPABILITIES,
        apop: bool = False,
        uidls: Sequence[bytes] | None = None,
        greeting: bytes | None = None,
        greetingDelay: float = 0.0,
        passReply: bytes | None = None,
        cutRetrAfter: int | None = None,
        cutRetrMessage: int | None = None,
        stallOn: Collection[bytes] = (),
        delay: float = 0.0,
        delayOn: Collection[bytes] | None = None,
        idleTimeout: float = 60.0,
    ) -> None:
        self.user = user.encode("utf-8") if isinstance(user, str) else user
        self.password = password.encode("utf-8") if isinstance(password, str) else password
        messageList = [bytes(message) for message in messages]
        if uidls is None:
            uidls = [
                b"%d-%s" % (number, hashlib.sha1(message).hexdigest()[:16].encode("ascii"))
                for number, message in enumerate(messageList, 1)
            ]
        if len(uidls) != len(messageList):
            raise ValueError("need one UIDL per message")
        self.mailbox = _Mailbox(messageList, list(uidls))
        self.capabilities = None if capabilities is None else tuple(capabilities)
        self.apop = apop
        self.greeting = greeting
        self.greetingDelay = greetingDelay
        self.passReply = passReply
        self.cutRetrAfter = cutRetrAfter
        self.cutRetrMessage = cutRetrMessage
        self.stallOn = frozenset(verb.upper() for verb in stallOn)
        self.delay = delay
        self.delayOn = None if delayOn is None else frozenset(v.upper() for v in delayOn)
        self.idleTimeout = idleTimeout

        self.commands: list[bytes] = []
        self.received: list[bytes] = []
        self.deletedAtQuit: list[int] = []
        self.connectionCount = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptThread: threading.Thread | None = None
        self._sessions: list[tuple[socket.socket, threading.Thread]] = []

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("server not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def rawInput(self) -> bytes:
        """Every byte received from clients, all connections concatenated in arrival order."""
        with self._lock:
            return b"".join(self.received)

    def recordCommand(self, command: bytes) -> None:
        with self._lock:
            self.commands.append(command)

    def recordInput(self, data: bytes) -> None:
        with self._lock:
            self.received.append(data)

    def commitDeletions(self, indices: list[int]) -> None:
        with self._lock:
            for index in indices:
                self.mailbox.present[index] = False
                self.deletedAtQuit.append(index + 1)

    def start(self) -> RawPop3Server:
        """Listen on a free loopback port and serve in a background thread; return self."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(_POLL_INTERVAL)
        self._listener = listener
        self._acceptThread = threading.Thread(
            target=self._acceptLoop, name=f"rawpop3-accept-{self.port}", daemon=True
        )
        self._acceptThread.start()
        return self

    def _acceptLoop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(_POLL_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(sock,), name=f"rawpop3-session-{self.port}", daemon=True
            )
            with self._lock:
                self.connectionCount += 1
                self._sessions.append((sock, thread))
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            _Session(self, sock).run()
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stop(self) -> None:
        """Stop listening, end every session and join every thread (bounded)."""
        self.stopping.set()
        if self._acceptThread is not None:
            self._acceptThread.join(_JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for _, thread in sessions:
            thread.join(_JOIN_TIMEOUT)
        alive = [thread.name for _, thread in sessions if thread.is_alive()]
        if self._acceptThread is not None and self._acceptThread.is_alive():
            alive.append(self._acceptThread.name)
        if alive:
            raise RuntimeError(f"rawpop3 threads still running: {alive}")

    def __enter__(self) -> RawPop3Server:
        return self.start()

    def __exit__(self, *excInfo: object) -> None:
        self.stop()


@pytest.fixture
def rawPop3() -> Iterator[Callable[..., RawPop3Server]]:
    """Factory fixture: C{rawPop3(messages=[...], **options)} returns a started server."""
    servers: list[RawPop3Server] = []

    def factory(messages: Sequence[bytes] = (), **options: object) -> RawPop3Server:
        server = RawPop3Server(messages, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
