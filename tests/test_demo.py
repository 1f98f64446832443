"""Tests for popproxy.demo: the sample mailbox and the demo POP3 server, on the wire."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.mail.pop3 import IMailbox
from twisted.test import iosim
from zope.interface.verify import verifyObject

from popproxy.demo import _DemoPOP3Server, _WireEncoder, defaultMailboxPath, demoServerFactory
from popproxy.demo._mailbox import (
    EmlDirectoryMailbox,
    expandPlaceholders,
    normalizeLineEndings,
    uidlForName,
)
from tests.peers.daemons import terminateWithParent

SAMPLE_NAMES = [
    "01-welcome.eml",
    "02-newsletter.eml",
    "03-invoice-pdf.eml",
    "04-photo-png.eml",
    "05-archive-zip.eml",
    "06-dot-lines.eml",
    "07-attachment-exe.eml",
    "08-virus-eicar.eml",
    "09-spam-gtube.eml",
]
CRLF = b"\r\n"


class _RawClient(Protocol):
    """Records every byte the server sends."""

    def __init__(self) -> None:
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class _Session:
    """One POP3 connection to a demo server over Twisted's in-memory transports."""

    def __init__(self, mailbox: Path, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        factory = demoServerFactory(mailbox, "demo", "demo", clock=self.clock)
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40110))
        assert isinstance(server, _DemoPOP3Server)
        self.server = server
        self.client = _RawClient()
        self.serverTransport = iosim.makeFakeServer(self.server)
        self.pump = iosim.connect(
            self.server,
            self.serverTransport,
            self.client,
            iosim.makeFakeClient(self.client),
            clock=self.clock,
        )
        self.greeting = self._take()

    def _take(self) -> bytes:
        data = bytes(self.client.received)
        self.client.received.clear()
        return data

    def send(self, *commands: bytes) -> bytes:
        """Send the commands in one write; return everything the server answers."""
        assert self.client.transport is not None
        self.client.transport.write(b"".join(command + CRLF for command in commands))
        self.pump.flush()
        return self._take()

    def login(self) -> None:
        assert self.send(b"USER demo").startswith(b"+OK")
        assert self.send(b"PASS demo").startswith(b"+OK")

    @property
    def disconnected(self) -> bool:
        return bool(self.serverTransport.disconnecting)


def _line(data: bytes) -> tuple[bytes, bytes]:
    """Split one CRLF line off the front of C{data}."""
    end = data.index(CRLF) + 2
    return data[:end], data[end:]


def _multiLine(data: bytes) -> tuple[bytes, bytes, bytes]:
    """
    Read a multi-line response the way a client does: the status line, then
    lines up to the first lone ".", un-stuffing each. Return the status line,
    the body and whatever follows the terminator.
    """
    status, rest = _line(data)
    assert status.startswith(b"+OK"), status
    body = bytearray()
    while True:
        line, rest = _line(rest)
        if line == b"." + CRLF:
            return status, bytes(body), rest
        body += line[1:] if line.startswith(b".") else line


def _listing(body: bytes) -> dict[int, bytes]:
    """Parse LIST/UIDL scan lines into {message number: value}."""
    entries = {}
    for line in body.splitlines():
        number, value = line.split(b" ")
        entries[int(number)] = value
    return entries


def _expectedWire(raw: bytes) -> bytes:
    """The message as RETR must deliver it: CRLF lines, ending in CRLF."""
    wire = re.sub(rb"\r\n|\r|\n", CRLF, raw)
    return wire if wire.endswith(CRLF) else wire + CRLF


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def _parsed(name: str) -> EmailMessage:
    raw = (defaultMailboxPath() / name).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _attachment(message: EmailMessage) -> tuple[str | None, bytes]:
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return part.get_filename(), payload
    raise AssertionError("no attachment")


# --- the packaged sample mailbox -------------------------------------------------------


def test_defaultMailboxPathHoldsTheSampleMessages() -> None:
    """The packaged mailbox is a real directory holding the nine small ASCII samples,
    stored with LF line endings."""
    path = defaultMailboxPath()
    assert path.is_dir()
    files = sorted(p.name for p in path.glob("*.eml"))
    assert files == SAMPLE_NAMES
    raws = [(path / name).read_bytes() for name in files]
    assert sum(len(raw) for raw in raws) < 60_000
    for raw in raws:
        raw.decode("ascii")
        assert b"\r" not in raw
        assert max(len(line) for line in raw.split(b"\n")) <= 78


def test_welcomeCountsTheMailbox() -> None:
    """
    The welcome message tells the reader how many messages there are to
    fetch, and that is how many the demo mailbox holds; the messages it
    describes by number are the ones with those numbers.
    """
    words = {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
    text = (defaultMailboxPath() / "01-welcome.eml").read_text("ascii")
    said = re.findall(r"fetch these\s+(\w+)\s+messages", text)
    assert [words[word] for word in said] == [len(SAMPLE_NAMES)]
    for number, name in re.findall(r"Message (\d) (?:carries|holds) (?:a|the) (\w+)", text):
        assert {"program": "exe", "EICAR": "eicar"}[name] in SAMPLE_NAMES[int(number) - 1]


def test_sampleMessagesHaveRealisticHeaders() -> None:
    """Every sample parses without defects and carries the usual headers, with
    addresses only in the example.com/.org/.net domains."""
    for name in SAMPLE_NAMES:
        message = _parsed(name)
        assert not message.defects, name
        for header in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
            assert message[header], (name, header)
        assert message.get_all("Received"), name
        raw = (defaultMailboxPath() / name).read_bytes()
        domains = set(re.findall(rb"@([A-Za-z0-9.-]+)", expandPlaceholders(raw)))
        assert domains, name
        for domain in domains:
            assert re.fullmatch(rb"([a-z0-9-]+\.)*example\.(com|org|net)", domain), domain


def test_sampleMessagesShowTheAdvertisedMimeFeatures() -> None:
    """The samples contain a multipart/alternative newsletter, a valid PDF, a valid
    PNG with RFC 2047 subject and RFC 2231 file name, a valid zip, and lone-dot lines."""
    newsletter = _parsed("02-newsletter.eml")
    assert newsletter.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in newsletter.iter_parts()]
    assert kinds == ["text/plain", "text/html"]

    filename, pdf = _attachment(_parsed("03-invoice-pdf.eml"))
    assert filename == "INV-2025-0042.pdf"
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    startxref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[startxref:].startswith(b"xref")
    for number, offset in enumerate(re.findall(rb"(\d{10}) 00000 n", pdf), 1):
        assert pdf[int(offset) :].startswith(b"%d 0 obj" % number)

    photoRaw = (defaultMailboxPath() / "04-photo-png.eml").read_bytes()
    assert b"\nSubject: =?UTF-8?B?" in photoRaw and b"filename*=UTF-8''" in photoRaw
    photo = _parsed("04-photo-png.eml")
    assert photo["Subject"] == "Gr\u00fc\u00dfe aus dem Caf\u00e9 \u2615 \u2013 ein Bild"
    filename, png = _attachment(photo)
    assert filename == "caf\u00e9-\u2615.png"
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    offset, chunkKinds = 8, []
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        content = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + content)
        chunkKinds.append(kind)
        offset += 12 + length
    assert chunkKinds[0] == b"IHDR" and chunkKinds[-1] == b"IEND"

    filename, archive = _attachment(_parsed("05-archive-zip.eml"))
    assert filename == "release-notes.zip"
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert zipped.testzip() is None
        assert zipped.read("release-notes.txt").startswith(b"popproxy demo archive")

    dots = (defaultMailboxPath() / "06-dot-lines.eml").read_bytes()
    assert b"\n.\n" in dots and b"\n..\n" in dots


# --- the mailbox object ---------------------------------------------------------------


def test_mailboxProvidesIMailboxAndRejectsBadIndexes() -> None:
    """EmlDirectoryMailbox implements IMailbox; negative and too-large indexes raise
    ValueError instead of wrapping around."""
    mailbox = EmlDirectoryMailbox(defaultMailboxPath())
    assert verifyObject(IMailbox, mailbox)
    for bad in (-1, len(SAMPLE_NAMES)):
        for call in (mailbox.listMessages, mailbox.getMessage, mailbox.getUidl):
            with pytest.raises(ValueError):
                call(bad)
        with pytest.raises(ValueError):
            mailbox.deleteMessage(bad)


def test_mailboxDeletionIsSessionOnly(tmp_path: Path) -> None:
    """deleteMessage hides a message (size 0, getMessage and a second delete fail),
    undeleteMessages shows it again, and sync removes nothing from disk."""
    (tmp_path / "a.eml").write_bytes(b"Subject: a\n\nA\n")
    (tmp_path / "b.eml").write_bytes(b"Subject: b\n\nB\n")
    before = _digests(tmp_path)
    mailbox = EmlDirectoryMailbox(tmp_path)
    mailbox.deleteMessage(0)
    assert mailbox.listMessages() == [0, len(b"Subject: b\r\n\r\nB\r\n")]
    with pytest.raises(ValueError):
        mailbox.getMessage(0)
    with pytest.raises(ValueError):
        mailbox.deleteMessage(0)
    mailbox.undeleteMessages()
    assert mailbox.listMessages(0) == len(b"Subject: a\r\n\r\nA\r\n")
    mailbox.deleteMessage(1)
    mailbox.sync()
    assert _digests(tmp_path) == before


def test_normalizeLineEndings() -> None:
    """CRLF, bare CR and bare LF all become LF, and a final line break is added."""
    assert normalizeLineEndings(b"a\r\nb\rc\nd") == b"a\nb\nc\nd\n"
    assert normalizeLineEndings(b"") == b"\n"
    assert normalizeLineEndings(b"x\r\n") == b"x\n"


def test_uidlForName() -> None:
    """Simple file names give their stem as UIDL; others give a hash that is printable,
    at most 70 characters, and cannot equal a simple stem."""
    assert uidlForName("01-welcome.eml") == b"01-welcome"
    for name in ("caf\u00e9.eml", "with space.eml", "x" * 71 + ".eml", "sha256=abc.eml"):
        uid = uidlForName(name)
        assert uid.startswith(b"sha256=")
        assert 1 <= len(uid) <= 70 and all(0x21 <= byte <= 0x7E for byte in uid)
    assert uidlForName("a.eml") != uidlForName("b.eml")


# --- the dot-stuffing encoder ---------------------------------------------------------


def _referenceWire(text: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"..", text.replace(b"\n", CRLF))


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_wireEncoderIsIndependentOfChunking(text: bytes, cuts: list[int]) -> None:
    """However a message is split into chunks, the encoder writes CRLF lines and
    stuffs every line that starts with a dot, including the first line and lines
    starting a chunk."""
    encoder = _WireEncoder()
    bounds = sorted({0, len(text), *(min(cut, len(text)) for cut in cuts)})
    chunks = [text[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(encoder.feed(chunk) for chunk in chunks) == _referenceWire(text)


# --- POP3 over in-memory transports ---------------------------------------------------


def test_capaIsRfc2449() -> None:
    """CAPA, before and after login, lists only real RFC 2449 capabilities: no PIPELINE
    spelling and no joke capabilities."""
    session = _Session(defaultMailboxPath())
    for _ in range(2):
        status, body, rest = _multiLine(session.send(b"CAPA"))
        assert rest == b""
        capabilities = body.decode("ascii").split("\r\n")[:-1]
        assert capabilities == [
            "TOP",
            "UIDL",
            "USER",
            "RESP-CODES",
            "PIPELINING",
            "IMPLEMENTATION popproxy-demo",
        ]
        session.login()


def test_wrongPasswordFails() -> None:
    """A wrong password or unknown user is refused and gives no access to the mailbox."""
    session = _Session(defaultMailboxPath())
    assert session.greeting.startswith(b"+OK <")
    assert session.send(b"USER demo").startswith(b"+OK")
    assert session.send(b"PASS wrong") == b"-ERR Authentication failed\r\n"
    assert session.send(b"USER nobody", b"PASS demo") == (
        b"+OK USER accepted, send PASS\r\n-ERR Authentication failed\r\n"
    )
    assert session.send(b"STAT") == b"-ERR log in first\r\n"


def test_apopLogin() -> None:
    """APOP with the MD5 of the greeting's timestamp and the password logs in (stock
    Twisted always refuses it); a wrong digest is refused."""
    session = _Session(defaultMailboxPath())
    timestamp = re.search(rb"<[^>]*>", session.greeting)
    assert timestamp is not None
    digest = hashlib.md5(timestamp.group(0) + b"demo").hexdigest().encode("ascii")
    assert session.send(b"APOP demo " + b"0" * 32) == b"-ERR Authentication failed\r\n"
    assert session.send(b"APOP demo " + digest).startswith(b"+OK")
    assert session.send(b"STAT").startswith(b"+OK 9 ")


def test_fullSession() -> None:
    """A whole session: STAT and LIST sizes equal the octets RETR delivers, RETR
    delivers each file with CRLF line endings and dot-stuffing on the wire, UIDL
    names the files, TOP n 0 gives the header, DELE hides a message from STAT,
    LIST, UIDL and RETR, RSET restores it, QUIT ends the session, and every file
    is still on disk, unchanged."""
    path = defaultMailboxPath()
    before = _digests(path)
    expected = {
        n: _expectedWire(expandPlaceholders((path / name).read_bytes()))
        for n, name in enumerate(SAMPLE_NAMES, 1)
    }
    session = _Session(path)
    session.login()

    total = sum(len(wire) for wire in expected.values())
    assert session.send(b"STAT") == b"+OK 9 %d\r\n" % total

    status, body, rest = _multiLine(session.send(b"LIST"))
    assert status == b"+OK 9 messages (%d octets)\r\n" % total and rest == b""
    assert _listing(body) == {n: b"%d" % len(wire) for n, wire in expected.items()}
    assert session.send(b"LIST 3") == b"+OK 3 %d\r\n" % len(expected[3])

    for n, wire in expected.items():
        raw = session.send(b"RETR %d" % n)
        status, body, rest = _multiLine(raw)
        assert status == b"+OK %d\r\n" % len(wire) and rest == b""
        assert body == wire
        assert b"\n" not in body.replace(CRLF, b"") and b"\r" not in body.replace(CRLF, b"")
    dotWire = session.send(b"RETR 6")
    assert b"\r\n..\r\n" in dotWire and b"\r\n...\r\n" in dotWire
    assert b"\r\n..bashrc" in dotWire and dotWire.count(b"\r\n.\r\n") == 1

    status, body, rest = _multiLine(session.send(b"UIDL"))
    uids = _listing(body)
    assert uids == {n: name.removesuffix(".eml").encode() for n, name in enumerate(SAMPLE_NAMES, 1)}
    assert session.send(b"UIDL 4") == b"+OK 4 04-photo-png\r\n"

    header, text = (path / SAMPLE_NAMES[1]).read_bytes().split(b"\n\n", 1)
    status, body, rest = _multiLine(session.send(b"TOP 2 0"))
    assert body == header.replace(b"\n", CRLF) + CRLF + CRLF and rest == b""
    status, body, rest = _multiLine(session.send(b"TOP 2 3"))
    top = header + b"\n\n" + b"".join(text.splitlines(keepends=True)[:3])
    assert body == top.replace(b"\n", CRLF) and rest == b""

    assert session.send(b"DELE 2") == b"+OK message 2 deleted\r\n"
    assert session.send(b"DELE 2") == b"-ERR no such message\r\n"
    remaining = {n: wire for n, wire in expected.items() if n != 2}
    rtotal = sum(len(wire) for wire in remaining.values())
    assert session.send(b"STAT") == b"+OK %d %d\r\n" % (len(SAMPLE_NAMES) - 1, rtotal)
    status, body, rest = _multiLine(session.send(b"LIST"))
    assert _listing(body) == {n: b"%d" % len(wire) for n, wire in remaining.items()}
    assert session.send(b"LIST 2") == b"-ERR no such message\r\n"
    assert 2 not in _listing(_multiLine(session.send(b"UIDL"))[1])
    assert session.send(b"UIDL 2") == b"-ERR no such message\r\n"
    assert session.send(b"RETR 2").startswith(b"-ERR")
    assert session.send(b"TOP 2 0").startswith(b"-ERR")

    assert session.send(b"RSET").startswith(b"+OK")
    assert session.send(b"STAT") == b"+OK 9 %d\r\n" % total
    assert _multiLine(session.send(b"RETR 2"))[1] == expected[2]

    assert session.send(b"DELE 1", b"DELE 6").count(b"+OK") == 2
    assert session.send(b"QUIT") == b"+OK \r\n"
    assert session.disconnected
    assert _digests(path) == before


def test_deletionsDoNotReachOtherSessions() -> None:
    """A message deleted and QUIT in one session is back in the next one, and a
    deletion in one session does not show in a concurrent one."""
    first, second = _Session(defaultMailboxPath()), _Session(defaultMailboxPath())
    first.login()
    second.login()
    first.send(b"DELE 1")
    assert second.send(b"STAT").startswith(b"+OK 9 ")
    first.send(b"QUIT")
    third = _Session(defaultMailboxPath())
    third.login()
    assert third.send(b"STAT").startswith(b"+OK 9 ")


def test_uidlIsStableAcrossSessions() -> None:
    """Two sessions get the same UIDL listing; the ids are unique and RFC 1939-valid."""
    listings = []
    for _ in range(2):
        session = _Session(defaultMailboxPath())
        session.login()
        listings.append(_listing(_multiLine(session.send(b"UIDL"))[1]))
    assert listings[0] == listings[1]
    uids = list(listings[0].values())
    assert len(set(uids)) == len(uids) == len(SAMPLE_NAMES)
    assert all(1 <= len(uid) <= 70 and all(0x21 <= b <= 0x7E for b in uid) for uid in uids)


def test_badCommandsGetErrAndKeepTheSessionUsable() -> None:
    """Unknown commands, missing or extra arguments and bad message numbers get -ERR,
    before and after login, and the session carries on."""
    session = _Session(defaultMailboxPath())
    assert session.send(b"FOO") == b"-ERR unknown command\r\n"
    assert session.send(b"RETR 1") == b"-ERR log in first\r\n"
    assert session.send(b"RPOP demo") == b"-ERR RPOP is not supported\r\n"
    session.login()
    for command in (b"USER", b"TOP 1", b"STAT 1", b"RETR 1 2", b"NOOP x", b"\xff\xfe"):
        assert session.send(command).startswith(b"-ERR"), command
    for command in (b"LIST 0", b"LIST 10", b"LIST x", b"UIDL -1", b"DELE 99", b"DELE 0"):
        assert session.send(command) == b"-ERR no such message\r\n", command
    for command in (b"RETR 0", b"RETR 10", b"TOP 10 1", b"TOP 1 -1"):
        assert session.send(command).startswith(b"-ERR"), command
    assert session.send(b"NOOP") == b"+OK \r\n"


def test_pipelinedCommandsAnswerInOrder() -> None:
    """Commands sent in one write, including bad ones queued behind a long response,
    get the same answers, in the same order, as commands sent one at a time."""
    commands = [
        b"CAPA",
        b"USER demo",
        b"PASS demo",
        b"LIST",
        b"FOO",
        b"TOP 1",
        b"RETR 6",
        b"UIDL",
        b"DELE 3",
        b"RETR 3",
        b"STAT",
        b"TOP 2 3",
        b"LIST 3",
        b"RSET",
        b"RETR 1",
        b"NOOP",
    ]
    lockstep = _Session(defaultMailboxPath())
    oneByOne = b"".join(lockstep.send(command) for command in commands)
    pipelined = _Session(defaultMailboxPath())
    assert pipelined.send(*commands) == oneByOne


def test_pipelinedCommandsAfterQuitAreIgnored() -> None:
    """Commands pipelined behind QUIT, even ones held back during a RETR, get no
    answer and do not run."""
    session = _Session(defaultMailboxPath())
    session.login()
    answer = session.send(b"RETR 1", b"QUIT", b"STAT", b"DELE 1")
    status, body, rest = _multiLine(answer)
    assert rest == b"+OK \r\n"
    assert session.disconnected
    # The in-memory transport drops writes after QUIT, so look at the effect;
    # test_realSocketRetrMatchesList checks the bytes on a real connection.
    assert session.server.mbox.listMessages(0) != 0


def test_dotStuffingAcrossChunkBoundaries(tmp_path: Path) -> None:
    """A lone "." line that starts one of the 16 KiB chunks Twisted reads the file in,
    or starts the message, is still stuffed, so the message is delivered whole."""
    filler = b"Subject: chunks\n\n" + b"x" * 70 + b"\n"
    filler += b"y" * (2**14 - len(filler) - 1) + b"\n"
    assert len(filler) == 2**14
    (tmp_path / "1-boundary.eml").write_bytes(filler + b".\n.after\nend\n")
    (tmp_path / "2-leading.eml").write_bytes(b".leading: dot\n\n.\n")
    session = _Session(tmp_path)
    session.login()
    for n, name in enumerate(["1-boundary.eml", "2-leading.eml"], 1):
        raw = (tmp_path / name).read_bytes()
        status, body, rest = _multiLine(session.send(b"RETR %d" % n))
        assert body == _expectedWire(raw) and rest == b""
        assert status == b"+OK %d\r\n" % len(body)


def test_lineEndingsAreNormalizedAndSizesStayExact(tmp_path: Path) -> None:
    """Files stored with CRLF, bare CR, mixed endings or no final line break are served
    as proper CRLF lines, and LIST, RETR's +OK and the delivered octets agree."""
    samples = {
        "crlf.eml": b"Subject: crlf\r\n\r\nbody\r\n.\r\n",
        "cr.eml": b"Subject: cr\r\rbody\r",
        "mixed.eml": b"Subject: mixed\n\r\nline\rline\r\n\nno final break",
        "empty.eml": b"",
    }
    for name, raw in samples.items():
        (tmp_path / name).write_bytes(raw)
    session = _Session(tmp_path)
    session.login()
    sizes = _listing(_multiLine(session.send(b"LIST"))[1])
    for n, name in enumerate(sorted(samples), 1):
        status, body, rest = _multiLine(session.send(b"RETR %d" % n))
        assert body == _expectedWire(samples[name]), name
        assert sizes[n] == b"%d" % len(body) and status == b"+OK %d\r\n" % len(body)
        assert re.fullmatch(rb"([^\r\n]*\r\n)*", body), name


def test_idleTimeoutIsTenMinutes() -> None:
    """An idle session is closed after 600 seconds (RFC 1939's minimum), not before;
    any command restarts the timer."""
    session = _Session(defaultMailboxPath())
    session.clock.advance(599)
    assert not session.disconnected
    session.send(b"NOOP")
    session.clock.advance(599)
    assert not session.disconnected
    session.clock.advance(1)
    assert session.disconnected


def test_factoryRejectsAMissingMailbox(tmp_path: Path) -> None:
    """demoServerFactory fails at once when the mailbox directory does not exist."""
    with pytest.raises(NotADirectoryError):
        demoServerFactory(tmp_path / "missing", "demo", "demo")


# --- a real loopback socket -----------------------------------------------------------

_SERVER_SCRIPT = """
import sys
from twisted.internet import reactor
from popproxy.demo import defaultMailboxPath, demoServerFactory
port = reactor.listenTCP(0, demoServerFactory(defaultMailboxPath(), "demo", "demo"),
                         interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def _recvUntil(sock: object, ending: bytes, data: bytes = b"") -> bytes:
    import socket

    assert isinstance(sock, socket.socket)
    while not data.endswith(ending):
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
    return data


def test_realSocketRetrMatchesList() -> None:
    """Over a real TCP connection on 127.0.0.1, with the global reactor's producer
    handling, RETR of every sample delivers exactly LIST's octet count of CRLF
    message, correctly dot-stuffed; commands pipelined behind QUIT get no answer
    before the server closes the connection."""
    import socket

    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=terminateWithParent,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            _recvUntil(sock, CRLF)
            sock.sendall(b"USER demo\r\nPASS demo\r\nLIST\r\n")
            data = _recvUntil(sock, b"\r\n.\r\n")
            listing = _listing(_multiLine(data.split(CRLF, 2)[2])[1])
            for n, name in enumerate(SAMPLE_NAMES, 1):
                sock.sendall(b"RETR %d\r\n" % n)
                status, body, rest = _multiLine(_recvUntil(sock, b"\r\n.\r\n"))
                raw = expandPlaceholders((defaultMailboxPath() / name).read_bytes())
                assert body == _expectedWire(raw) and rest == b""
                assert listing[n] == b"%d" % len(body) == status.split()[1]
            sock.sendall(b"RETR 1\r\nQUIT\r\nSTAT\r\nNOOP\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert _multiLine(data)[2] == b"+OK \r\n"
    finally:
        server.terminate()
        server.wait(timeout=10)
