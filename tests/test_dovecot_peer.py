"""Prove that the private Dovecot fixture, its raw POP3 client and the port helpers work."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.dovecot import (
    DovecotMailbox,
    DovecotServer,
    Pop3ErrorResponse,
    RawPop3Client,
    buildDovecotConfig,
    fetchDirect,
    fetchMailbox,
)
from tests.peers.ports import freePort, waitForPort

EIGHT_BIT = (
    b"From: sender@example.test\r\n"
    b"To: user@example.test\r\n"
    b"Subject: =?ISO-8859-1?Q?caf=E9?=\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xe9 \xff\xfe\x80 and UTF-8 \xe2\x82\xac\r\n"
)
LONG_AND_DOTTED = (
    b"Subject: long line and leading dots\r\n"
    b"\r\n" + b"x" * 5000 + b"\r\n"
    b".\r\n"
    b".leading dot\r\n"
    b"..two leading dots\r\n"
    b"...\r\n"
    b"end\r\n"
)
NO_FINAL_NEWLINE = b"Subject: no final newline\r\n\r\nthe last line has no CRLF"

REPOSITORY = Path(__file__).resolve().parent.parent


def test_servesDeliveredMessagesByteForByte(dovecot: DovecotMailbox) -> None:
    """
    Messages delivered as wire bytes come back from RETR byte for byte, in delivery
    order, with LIST sizes equal to their length.

    The one thing Dovecot changes here: a message whose last line lacks a line end is
    served with a CRLF added before the terminating dot line, and that CRLF is not
    counted in its LIST size. 8-bit bytes, a 5,000-byte line and lines starting with
    dots (dot-stuffed on the wire, unstuffed by fetchMailbox) are served unchanged.
    """
    for message in (EIGHT_BIT, LONG_AND_DOTTED, NO_FINAL_NEWLINE):
        dovecot.deliver(message)

    served = fetchMailbox(dovecot.host, dovecot.port, dovecot.user, dovecot.password)

    assert [message.data for message in served] == [
        EIGHT_BIT,
        LONG_AND_DOTTED,
        NO_FINAL_NEWLINE + b"\r\n",
    ], dovecot.log()
    assert [message.number for message in served] == [1, 2, 3]
    assert [message.listSize for message in served] == [
        len(EIGHT_BIT),
        len(LONG_AND_DOTTED),
        len(NO_FINAL_NEWLINE),
    ]
    assert dovecot.messagesOnServer() == 3


def test_largeMessageComesBackIntact(dovecot: DovecotMailbox) -> None:
    """
    A 2 MB message, many times the client's read size, with lines of many lengths
    (some starting with dots) comes back byte for byte.
    """
    lines = [
        b"." * (number % 3) + b"%d " % number + b"y" * (number % 997) for number in range(4000)
    ]
    message = b"Subject: large\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    assert len(message) > 2_000_000
    dovecot.deliver(message)
    dovecot.deliver(EIGHT_BIT)

    served = fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password)

    assert served == [message, EIGHT_BIT]


def test_dotStuffingOnTheWire(dovecot: DovecotMailbox) -> None:
    """
    Dovecot dot-stuffs lines that start with a dot, so the unstuffing in
    RawPop3Client.multiline is what turns them back into the message's lines.
    """
    dovecot.deliver(LONG_AND_DOTTED)
    with RawPop3Client(dovecot.host, dovecot.port) as client:
        client.login(dovecot.user, dovecot.password)
        client.okCommand(b"RETR 1")
        wire = []
        while (line := client.readLine()) != b".\r\n":
            wire.append(line)
        client.quit()

    assert wire[-5:] == [
        b"..\r\n",
        b"..leading dot\r\n",
        b"...two leading dots\r\n",
        b"....\r\n",
        b"end\r\n",
    ]


def test_whatDovecotNormalizes(dovecot: DovecotMailbox) -> None:
    """
    Record what Dovecot 2.3 serves for messages that are not CRLF-clean, so tests of
    exact bytes know when they need the raw POP3 peer instead:

      - a bare LF is served as CRLF (in the maildir it is indistinguishable from a
        CRLF stored as LF), while a bare CR and a NUL byte are served unchanged;
      - an empty message is served as one empty line (CRLF) with a LIST size of 0.
    """
    bareLineEnds = b"Subject: bare\r\n\r\nbare\nLF, bare\rCR, NUL\x00byte\r\n"
    dovecot.deliver(bareLineEnds)
    dovecot.deliver(b"")

    served = fetchMailbox(dovecot.host, dovecot.port, dovecot.user, dovecot.password)

    assert [(message.listSize, message.data) for message in served] == [
        (
            len(bareLineEnds) + 1,
            b"Subject: bare\r\n\r\nbare\r\nLF, bare\rCR, NUL\x00byte\r\n",
        ),
        (0, b"\r\n"),
    ], dovecot.log()


def test_deleAndQuitRemoveExactlyOneMessage(dovecot: DovecotMailbox) -> None:
    """DELE of one message followed by QUIT removes that message and no other from the maildir."""
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (number, number) for number in (1, 2, 3)]
    for message in messages:
        dovecot.deliver(message)
    uids = dovecot.uidls()

    with RawPop3Client(dovecot.host, dovecot.port) as client:
        client.login(dovecot.user, dovecot.password)
        client.okCommand(b"DELE 2")
        client.quit()

    assert dovecot.messagesOnServer() == 2, dovecot.log()
    assert dovecot.uidls() == [uids[0], uids[2]]
    assert fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password) == [
        messages[0],
        messages[2],
    ]


def test_deliveriesKeepTheirOrder(dovecot: DovecotMailbox) -> None:
    """
    Many messages delivered within the same second are numbered in delivery order,
    and a message delivered right after a POP3 session is seen by the next one.
    """
    messages = [b"Subject: %d\r\n\r\n" % number for number in range(25)]
    for message in messages:
        dovecot.deliver(message)
    assert fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password) == messages

    dovecot.deliver(b"Subject: late\r\n\r\n")
    served = fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password)
    assert served == [*messages, b"Subject: late\r\n\r\n"]


def test_mailboxesAreIsolated(dovecot: DovecotMailbox, dovecotServer: DovecotServer) -> None:
    """
    Two mailboxes on the shared server have their own user, password and messages; a
    wrong password is refused quickly and does not delay the next good login.
    """
    other = dovecotServer.createMailbox()
    dovecot.deliver(b"Subject: only for the first\r\n\r\n")

    assert other.user != dovecot.user
    assert other.password != dovecot.password
    assert other.messagesOnServer() == 0
    assert fetchDirect(other.host, other.port, other.user, other.password) == []
    assert len(fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password)) == 1

    started = time.monotonic()
    with RawPop3Client(other.host, other.port) as client:
        with pytest.raises(Pop3ErrorResponse) as refused:
            client.login(other.user, dovecot.password)
    assert refused.value.verb == b"PASS"
    assert dovecot.password.encode() not in str(refused.value).encode()
    with RawPop3Client(other.host, other.port) as client:
        client.login(other.user, other.password)
        client.quit()
    assert time.monotonic() - started < 1.5, other.log()


def test_apopLogin(dovecot: DovecotMailbox) -> None:
    """APOP works with the fixture's passwords, because they are stored as {PLAIN}."""
    dovecot.deliver(EIGHT_BIT)
    with RawPop3Client(dovecot.host, dovecot.port) as client:
        client.apop(dovecot.user, dovecot.password)
        assert client.retrieve(1) == EIGHT_BIT
        client.quit()
    assert f"user=<{dovecot.user}>, method=APOP" in dovecot.log()


def test_logStartsWithTheMailbox(dovecot: DovecotMailbox, dovecotServer: DovecotServer) -> None:
    """A mailbox's log() holds Dovecot's lines about this user's sessions, not the start-up."""
    fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password)

    assert f"Login: user=<{dovecot.user}>" in dovecot.log()
    assert "starting up" not in dovecot.log()
    assert "starting up" in dovecotServer.log()


def test_failedTestReportShowsDovecotLog(tmp_path: Path) -> None:
    """A failing test that uses the dovecot fixture gets Dovecot's log in its report."""
    (tmp_path / "test_inner.py").write_text(
        "from tests.peers.dovecot import fetchDirect\n"
        "\n"
        "def test_fails(dovecot):\n"
        "    fetchDirect(dovecot.host, dovecot.port, dovecot.user, dovecot.password)\n"
        "    assert False\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.peers.fixtures", "-p", "no:cacheprovider"]
        + [f"--basetemp={tmp_path / 'basetemp'}", "test_inner.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "dovecot log since user1 was created" in result.stdout
    assert "Login: user=<user1>" in result.stdout


def test_configOffersTlsWhenGivenACertificate(tmp_path: Path) -> None:
    """The config builder turns TLS on only with both a certificate and its key, never half."""
    build = functools.partial(
        buildDovecotConfig,
        directory=tmp_path,
        host="127.0.0.1",
        port=1110,
        mailUid=1000,
        mailGid=1000,
    )

    assert "ssl = no\n" in build()
    withTls = build(
        certificate=tmp_path / "cert.pem", privateKey=tmp_path / "key.pem", pop3sPort=1995
    )
    assert "ssl = yes\n" in withTls
    assert f"ssl_cert = <{tmp_path / 'cert.pem'}\n" in withTls
    assert f"ssl_key = <{tmp_path / 'key.pem'}\n" in withTls
    assert "port = 1995\n" in withTls
    with pytest.raises(ValueError):
        build(certificate=tmp_path / "cert.pem")


def test_freePortCanBeBound() -> None:
    """freePort returns a loopback port that can be listened on, and refuses routable hosts."""
    port = freePort()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
    with pytest.raises(ValueError):
        freePort("192.0.2.1")


def test_waitForPort() -> None:
    """waitForPort returns once something listens, and raises TimeoutError in time otherwise."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        waitForPort("127.0.0.1", listener.getsockname()[1], timeout=5)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        waitForPort("127.0.0.1", freePort(), timeout=0.3)
    assert time.monotonic() - started < 2
