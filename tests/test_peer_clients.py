"""
Tests for the test peers themselves: the exact-bytes POP3 server (tests.peers.rawpop3) over
raw sockets, and the real POP3 clients (tests.peers.clients) fetching from it.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.peers.clients import (
    CLIENT_ADDED_FIELDS,
    CLIENTS,
    ClientFailed,
    stripClientHeaders,
)
from tests.peers.rawpop3 import DEFAULT_CAPABILITIES, RawPop3Server, dotStuff

RawPop3Factory = Callable[..., RawPop3Server]

SOCKET_TIMEOUT = 5.0


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


TEXT_MESSAGE = _crlf(
    "From: Alice <alice@example.test>\n"
    "To: Bob <bob@example.test>\n"
    "Subject: plain text with dots\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\n"
    "Message-ID: <text@example.test>\n"
    "\n"
    "Hello Bob,\n"
    ".a line starting with a dot\n"
    "..a line starting with two dots\n"
    ".\n"
    "the line above is a lone dot\n"
)

ATTACHMENT_MESSAGE = (
    _crlf(
        "From: Carol <carol@example.test>\n"
        "To: Bob <bob@example.test>\n"
        "Subject: an attachment\n"
        "Date: Mon, 01 Jan 2024 11:00:00 +0000\n"
        "Message-ID: <attachment@example.test>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="=-boundary-="\n'
        "\n"
        "--=-boundary-=\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "See the attached file.\n"
        "--=-boundary-=\n"
        'Content-Type: application/octet-stream; name="blob.bin"\n'
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="blob.bin"\n'
        "\n"
    )
    + base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    + b"--=-boundary-=--\r\n"
)

UTF8_MESSAGE = _crlf(
    "From: D\u00f6rte <doerte@example.test>\n"
    "To: Bob <bob@example.test>\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
    "Date: Mon, 01 Jan 2024 12:00:00 +0000\n"
    "Message-ID: <utf8@example.test>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u00e7a va? \u65e5\u672c\u8a9e\n"
)

MAILBOX = [TEXT_MESSAGE, ATTACHMENT_MESSAGE, UTF8_MESSAGE]


class RawClient:
    """A blocking socket client with bounded reads, for talking POP3 byte by byte."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readUntil(self, marker: bytes, timeout: float = SOCKET_TIMEOUT) -> bytes:
        """Return everything up to and including C{marker}; fail after C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} after {self.buffer!r}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
            self.buffer += data
        end = self.buffer.index(marker) + len(marker)
        result, self.buffer = self.buffer[:end], self.buffer[end:]
        return result

    def readToEnd(self, timeout: float = SOCKET_TIMEOUT) -> bytes:
        """Return everything until the server closes; fail after C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection still open after {self.buffer!r}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                result, self.buffer = self.buffer, b""
                return result
            self.buffer += data

    def nothingWithin(self, seconds: float) -> bool:
        """Return True if the server sends nothing (and keeps the connection) for C{seconds}."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.buffer += data
        return False

    def login(self, user: bytes = b"user", password: bytes = b"password") -> None:
        self.readUntil(b"\r\n")
        self.send(b"USER " + user + b"\r\nPASS " + password + b"\r\n")
        self.readUntil(b"\r\n")
        assert self.readUntil(b"\r\n").startswith(b"+OK")

    def close(self) -> None:
        self.sock.close()


RawClientFactory = Callable[[int], "RawClient"]


@pytest.fixture
def rawClient() -> Iterator[RawClientFactory]:
    """Factory fixture connecting L{RawClient}s, all closed at teardown."""
    clients: list[RawClient] = []

    def connect(port: int) -> RawClient:
        client = RawClient(port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def _retrBody(client: RawClient, number: int) -> tuple[bytes, bytes]:
    """Send RETR and return (status line, dot-stuffed body with its terminator)."""
    client.send(b"RETR %d\r\n" % number)
    status = client.readUntil(b"\r\n")
    return status, client.readUntil(b"\r\n.\r\n")


# -- dotStuff -----------------------------------------------------------------------------------


def test_dotStuffDoublesLeadingDotsAndTerminates() -> None:
    """Lines starting with "." get another "." and the body ends with ".\\r\\n"."""
    assert dotStuff(b"a\r\n.b\r\n..c\r\n.\r\n") == b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"


def test_dotStuffAddsMissingFinalCrlf() -> None:
    """A message without a final CRLF gets one before the terminator, and nothing else."""
    assert dotStuff(b"a\r\nno end") == b"a\r\nno end\r\n.\r\n"
    assert dotStuff(b"") == b".\r\n"


def test_dotStuffTreatsBareLfAsContent() -> None:
    """Only CRLF delimits lines: a dot after a bare LF is not stuffed, bare LF is kept."""
    assert dotStuff(b".x\n.y\r\n") == b"..x\n.y\r\n.\r\n"


@given(
    st.lists(
        st.one_of(st.sampled_from([b".", b"..", b"", b".\n", b"\0", b"\r"]), st.binary()),
        max_size=20,
    )
)
def test_dotStuffRoundTrips(lines: list[bytes]) -> None:
    """Un-stuffing dotStuff(m) line by line gives back m (plus the CRLF added if missing)."""
    lines = [line.replace(b"\r\n", b"") for line in lines]
    message = b"\r\n".join(lines)
    body = dotStuff(message)
    assert body.endswith(b"\r\n.\r\n") or body == b".\r\n"
    wireLines = body[:-3].split(b"\r\n")[:-1]
    assert b"." not in wireLines
    unstuffed = b"".join(
        (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in wireLines
    )
    expected = message if message.endswith(b"\r\n") or not message else message + b"\r\n"
    assert unstuffed == expected


# -- RawPop3Server protocol -----------------------------------------------------------------------


def test_greetingAndDefaultCapabilities(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """The server greets with +OK and CAPA lists TOP UIDL USER PIPELINING RESP-CODES."""
    server = rawPop3(MAILBOX)
    client = rawClient(server.port)
    assert client.readUntil(b"\r\n").startswith(b"+OK")
    client.send(b"CAPA\r\n")
    reply = client.readUntil(b"\r\n.\r\n")
    assert reply.split(b"\r\n")[1:-2] == list(DEFAULT_CAPABILITIES)


def test_pipelinedCommandsAnsweredInOrder(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """Commands sent in one packet are all answered, in order, and recorded as received."""
    server = rawPop3([b"a\r\n", b"bb\r\n"], uidls=[b"one", b"two"])
    client = rawClient(server.port)
    greeting = client.readUntil(b"\r\n")
    commands = [
        b"USER user",
        b"PASS password",
        b"STAT",
        b"LIST",
        b"UIDL 2",
        b"LIST 1",
        b"NOOP",
        b"RETR 2",
        b"QUIT",
    ]
    client.send(b"".join(command + b"\r\n" for command in commands))
    transcript = client.readToEnd()
    assert greeting == b"+OK rawpop3 ready\r\n"
    assert transcript == (
        b"+OK send PASS\r\n"
        b"+OK logged in\r\n"
        b"+OK 2 7\r\n"
        b"+OK scan listing follows\r\n1 3\r\n2 4\r\n.\r\n"
        b"+OK 2 two\r\n"
        b"+OK 1 3\r\n"
        b"+OK\r\n"
        b"+OK 4 octets\r\nbb\r\n.\r\n"
        b"+OK bye\r\n"
    )
    assert server.commands == commands
    assert server.rawInput == b"".join(command + b"\r\n" for command in commands)


def test_retrDotStuffsLinesStartingWithDot(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """RETR of a message with ".", ".." and "." lines sends them stuffed, rest untouched."""
    server = rawPop3([TEXT_MESSAGE])
    client = rawClient(server.port)
    client.login()
    status, body = _retrBody(client, 1)
    assert status == b"+OK %d octets\r\n" % len(TEXT_MESSAGE)
    assert body == TEXT_MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert b"\r\n...a line starting with two dots\r\n..\r\n" in body


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"Subject: bare\n\nline\none\n", id="bare-lf"),
        pytest.param(b"Subject: nul\r\n\r\na\0b\r\n", id="nul"),
        pytest.param(b"Subject: no end\r\n\r\nlast line", id="no-final-crlf"),
        pytest.param(b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n", id="5000-byte-line"),
        pytest.param(b"Subject: cr\r\n\r\na\rb\r\n", id="bare-cr"),
        pytest.param(bytes(range(256)), id="all-octets"),
    ],
)
def test_retrServesExactBytes(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory, message: bytes
) -> None:
    """Odd messages go out exactly as given (plus a CRLF if missing) with LIST = their size."""
    server = rawPop3([message])
    client = rawClient(server.port)
    client.login()
    client.send(b"LIST 1\r\n")
    assert client.readUntil(b"\r\n") == b"+OK 1 %d\r\n" % len(message)
    _, body = _retrBody(client, 1)
    assert body == dotStuff(message)
    if message.endswith(b"\r\n"):
        assert body == message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def test_topSendsHeaderAndRequestedBodyLines(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """TOP n 0 gives the header and blank line; TOP n huge gives the whole message."""
    server = rawPop3([TEXT_MESSAGE])
    client = rawClient(server.port)
    client.login()
    header, _, _ = TEXT_MESSAGE.partition(b"\r\n\r\n")
    client.send(b"TOP 1 0\r\nTOP 1 2\r\nTOP 1 99999999\r\n")
    assert client.readUntil(b"\r\n.\r\n").split(b"\r\n", 1)[1] == dotStuff(header + b"\r\n\r\n")
    twoLines = header + b"\r\n\r\nHello Bob,\r\n.a line starting with a dot\r\n"
    assert client.readUntil(b"\r\n.\r\n").split(b"\r\n", 1)[1] == dotStuff(twoLines)
    assert client.readUntil(b"\r\n.\r\n").split(b"\r\n", 1)[1] == dotStuff(TEXT_MESSAGE)


def test_commandsRefusedOutsideTheirState(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """Before login only CAPA/USER/PASS/APOP/QUIT work; a wrong password does not log in."""
    server = rawPop3(MAILBOX)
    client = rawClient(server.port)
    client.readUntil(b"\r\n")
    client.send(b"STAT\r\nRETR 1\r\nPASS password\r\nUSER user\r\nPASS wrong\r\nSTAT\r\nXYZZY\r\n")
    replies = [client.readUntil(b"\r\n") for _ in range(7)]
    assert [reply.split(b" ")[0] for reply in replies] == [
        b"-ERR",
        b"-ERR",
        b"-ERR",
        b"+OK",
        b"-ERR",
        b"-ERR",
        b"-ERR",
    ]
    assert replies[4] == b"-ERR [AUTH] invalid login\r\n"


def test_apopLogsInWithTheGreetingTimestamp(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """With apop=True the greeting carries a timestamp and APOP with its MD5 digest works."""
    server = rawPop3(MAILBOX, apop=True)
    client = rawClient(server.port)
    greeting = client.readUntil(b"\r\n")
    timestamp = greeting[greeting.index(b"<") : greeting.index(b">") + 1]
    digest = hashlib.md5(timestamp + b"password").hexdigest().encode("ascii")
    client.send(b"APOP user " + b"0" * 32 + b"\r\nAPOP user " + digest + b"\r\nSTAT\r\n")
    assert client.readUntil(b"\r\n").startswith(b"-ERR")
    assert client.readUntil(b"\r\n") == b"+OK logged in\r\n"
    assert client.readUntil(b"\r\n") == b"+OK 3 %d\r\n" % sum(len(m) for m in MAILBOX)


def test_deletionsCommittedOnlyByQuitInTransaction(
    rawPop3: RawPop3Factory, rawClient: RawClientFactory
) -> None:
    """DELE marks, RSET unmarks, QUIT commits; a dropped session deletes nothing."""
    server = rawPop3(MAILBOX)
    dropped = rawClient(server.port)
    dropped.login()
    dropped.send(b"DELE 1\r\n")
    dropped.readUntil(b"\r\n")
    dropped.close()

    client = rawClient(server.port)
    client.login()
    client.send(b"DELE 1\r\nRSET\r\nDELE 2\r\nRETR 2\r\nSTAT\r\nQUIT\r\n")
    transcript = client.readToEnd()
    assert b"-ERR message 2 already deleted\r\n" in transcript
    assert b"+OK 2 %d\r\n" % (len(TEXT_MESSAGE) + len(UTF8_MESSAGE)) in transcript
    assert server.deletedAtQuit == [2]

    later = rawClient(server.port)
    later.login()
    later.send(b"LIST\r\n")
    assert later.readUntil(b"\r\n.\r\n") == (
        b"+OK scan listing follows\r\n1 %d\r\n2 %d\r\n.\r\n"
        % (len(TEXT_MESSAGE), len(UTF8_MESSAGE))
    )


def test_faultCustomGreeting(rawPop3: RawPop3Factory, rawClient: RawClientFactory) -> None:
    """The greeting option replaces the greeting, with CRLF added when missing."""
    server = rawPop3(MAILBOX, greeting=b"-ERR [SYS/TEMP] go away")
    assert rawClient(server.port).readUntil(b"\r\n") == b"-ERR [SYS/TEMP] go away\r\n"


def test_faultPassReply(rawPop3: RawPop3Factory, rawClient: RawClientFactory) -> None:
    """passReply answers PASS with the given line and keeps the session unauthenticated."""
    server = rawPop3(MAILBOX, passReply=b"-ERR [IN-USE] mailbox locked")
    client = rawClient(server.port)
    client.readUntil(b"\r\n")
    client.send(b"USER user\r\nPASS password\r\nSTAT\r\n")
    client.readUntil(b"\r\n")
    assert client.readUntil(b"\r\n") == b"-ERR [IN-USE] mailbox locked\r\n"
    assert client.readUntil(b"\r\n").startswith(b"-ERR")


def test_faultCutRetr(rawPop3: RawPop3Factory, rawClient: RawClientFactory) -> None:
    """cutRetrAfter sends the status line and that many body bytes, then closes."""
    server = rawPop3(MAILBOX, cutRetrAfter=100, cutRetrMessage=2)
    client = rawClient(server.port)
    client.login()
    _, body = _retrBody(client, 1)
    assert body == dotStuff(TEXT_MESSAGE)
    client.send(b"RETR 2\r\n")
    assert (
        client.readToEnd()
        == b"+OK %d octets\r\n" % len(ATTACHMENT_MESSAGE) + (dotStuff(ATTACHMENT_MESSAGE)[:100])
    )
    assert server.deletedAtQuit == []


def test_faultStall(rawPop3: RawPop3Factory, rawClient: RawClientFactory) -> None:
    """stallOn leaves the command unanswered (and all after it) but still records them."""
    server = rawPop3(MAILBOX, stallOn=[b"RETR"])
    client = rawClient(server.port)
    client.login()
    client.send(b"RETR 1\r\nNOOP\r\n")
    assert client.nothingWithin(0.5)
    assert server.commands[-2:] == [b"RETR 1", b"NOOP"]


def test_faultDelay(rawPop3: RawPop3Factory, rawClient: RawClientFactory) -> None:
    """delay/delayOn hold back only the named commands' answers by the given time."""
    server = rawPop3(MAILBOX, delay=1.0, delayOn=[b"NOOP"])
    client = rawClient(server.port)
    client.login()
    started = time.monotonic()
    client.send(b"STAT\r\n")
    client.readUntil(b"\r\n")
    assert time.monotonic() - started < 0.9
    started = time.monotonic()
    client.send(b"NOOP\r\n")
    assert client.readUntil(b"\r\n") == b"+OK\r\n"
    assert time.monotonic() - started >= 1.0


def test_stopEndsSessionsAndThreads(rawClient: RawClientFactory) -> None:
    """stop() ends stalled sessions too, and joins every thread it started."""
    server = RawPop3Server(MAILBOX, stallOn=[b"STAT"]).start()
    client = rawClient(server.port)
    client.login()
    client.send(b"STAT\r\n")
    assert client.nothingWithin(0.2)
    server.stop()
    assert client.readToEnd() == b""
    assert not [t for t in threading.enumerate() if t.name.startswith("rawpop3-")]


# -- stripClientHeaders ----------------------------------------------------------------------------


def test_stripClientHeadersUndoesLfStorageAndPrependedFields() -> None:
    """Generic mode turns LF-stored mail back to CRLF and drops leading client fields."""
    delivered = (
        b"Return-Path: <unknown>\nDelivered-To: unknown\n"
        b"Received: from 127.0.0.1\n\tby vm with POP3\n  msgid:1; 1 Jan 2024\n"
    ) + TEXT_MESSAGE.replace(b"\r\n", b"\n")
    assert stripClientHeaders(delivered) == TEXT_MESSAGE
    assert stripClientHeaders(TEXT_MESSAGE) == TEXT_MESSAGE


def test_stripClientHeadersPerClientIsExact() -> None:
    """With a client name exactly its fields are removed, and missing ones are an error."""
    delivered = b"Received: from a\n\tby b\nReceived: from c\n" + UTF8_MESSAGE.replace(
        b"\r\n", b"\n"
    )
    assert stripClientHeaders(delivered, "mpop") == b"Received: from c\r\n" + UTF8_MESSAGE
    assert stripClientHeaders(UTF8_MESSAGE, "curl") == UTF8_MESSAGE
    with pytest.raises(ClientFailed):
        stripClientHeaders(UTF8_MESSAGE, "getmail")


# -- real clients -------------------------------------------------------------------------------


@pytest.mark.parametrize("clientName", sorted(CLIENTS))
def test_realClientFetchesMailboxExactly(
    rawPop3: RawPop3Factory, tmp_path: Path, clientName: str
) -> None:
    """A real client retrieves all messages byte for byte (after its own headers) and keeps them."""
    server = rawPop3(MAILBOX, user="alice", password="s3cret")
    delivered = CLIENTS[clientName]("127.0.0.1", server.port, "alice", "s3cret", tmp_path)
    assert len(delivered) == len(MAILBOX)
    for got, original in zip(delivered, MAILBOX, strict=True):
        if CLIENT_ADDED_FIELDS[clientName]:
            assert got != original
        assert stripClientHeaders(got, clientName) == original
        assert stripClientHeaders(got) == original
    assert not [command for command in server.commands if command.upper().startswith(b"DELE")]
    assert server.deletedAtQuit == []
    assert any(command.startswith(b"RETR") for command in server.commands)


@pytest.mark.parametrize("clientName", sorted(CLIENTS))
def test_realClientFailureIsReported(
    rawPop3: RawPop3Factory, tmp_path: Path, clientName: str
) -> None:
    """A refused login makes every client helper raise (or deliver nothing), never hang."""
    server = rawPop3(MAILBOX, passReply=b"-ERR [IN-USE] mailbox locked")
    try:
        delivered = CLIENTS[clientName](
            "127.0.0.1", server.port, "user", "password", tmp_path, timeout=20
        )
    except ClientFailed as e:
        assert str(e)
    else:
        pytest.fail(f"{clientName} delivered {delivered!r} despite a refused login")
    assert not [command for command in server.commands if command.startswith(b"RETR")]


@pytest.mark.parametrize("clientName", sorted(CLIENTS))
def test_realClientGivesUpOnStalledServer(
    rawPop3: RawPop3Factory, tmp_path: Path, clientName: str
) -> None:
    """A server that never answers RETR makes every client helper fail within its timeout."""
    server = rawPop3(MAILBOX, stallOn=[b"RETR"])
    started = time.monotonic()
    with pytest.raises(ClientFailed):
        CLIENTS[clientName]("127.0.0.1", server.port, "user", "password", tmp_path, timeout=3)
    assert time.monotonic() - started < 15
