"""
End-to-end tests through real sockets: `twistd -n popproxy` in front of a
private Dovecot, and in front of a byte-exact test server, with real POP3
clients.  What a client receives through the proxy must be byte-identical
to what it receives directly from the upstream.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import clientSafe, crlfClean, exactBytes
from tests.peers.clients import CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox, RawPop3Client, fetchMailbox

PROXY = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]

[upstream]
default = "tcp:127.0.0.1:%d"
response_timeout = %s
"""


def proxyFor(popproxyFactory: Any, port: int, responseTimeout: float = 60) -> Any:
    return popproxyFactory(PROXY % (port, responseTimeout))


@pytest.fixture
def filled(dovecot: DovecotMailbox) -> DovecotMailbox:
    for message in crlfClean():
        dovecot.deliver(message)
    return dovecot


def waitForLog(mailbox: DovecotMailbox, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in mailbox.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the Dovecot log:\n{mailbox.log()}")


def test_everyMessageByteIdentical(filled: DovecotMailbox, popproxyFactory: Any) -> None:
    """
    LIST sizes and RETR bytes through the proxy equal those served directly
    by Dovecot, for every message of a tricky corpus; UIDL and TOP too.
    """
    proxy = proxyFor(popproxyFactory, filled.port)
    direct = fetchMailbox(filled.host, filled.port, filled.user, filled.password)
    through = fetchMailbox("127.0.0.1", proxy.port, filled.user, filled.password)
    assert [m.data for m in direct] == crlfClean()
    assert through == direct
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.login(filled.user, filled.password)
        assert [uid for _, uid in client.uidls()] == filled.uidls()
        top = client.multiline(b"TOP 3 2")
        client.quit()
    assert b"".join(top).startswith(b"From: invoices@example.org")


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_realClientsThroughProxy(
    client: str, dovecot: DovecotMailbox, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    fetchmail, getmail, mpop, curl and poplib each retrieve the whole
    mailbox through the proxy in keep mode; apart from the trace fields the
    client itself adds, every message arrives byte for byte, and nothing is
    deleted upstream.
    """
    for message in clientSafe():
        dovecot.deliver(message)
    proxy = proxyFor(popproxyFactory, dovecot.port)
    received = CLIENTS[client]("127.0.0.1", proxy.port, dovecot.user, dovecot.password, tmp_path)
    assert [stripClientHeaders(m, client) for m in received] == clientSafe()
    assert dovecot.messagesOnServer() == len(clientSafe())


def test_killedSessionDeletesNothing(filled: DovecotMailbox, popproxyFactory: Any) -> None:
    """
    A client that marks messages with DELE and then vanishes (no QUIT),
    even in the middle of a RETR, leaves the upstream mailbox unchanged.
    """
    proxy = proxyFor(popproxyFactory, filled.port)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(
        f"USER {filled.user}\r\nPASS {filled.password}\r\nDELE 1\r\nDELE 2\r\nRETR 4\r\n".encode()
    )
    received = b""
    while received.count(b"\r\n") < 6:
        received += sock.recv(65536)
    sock.close()
    assert received.count(b"+OK") >= 5
    waitForLog(filled, "Disconnected")
    assert filled.messagesOnServer() == len(crlfClean())
    assert [
        m.data for m in fetchMailbox(filled.host, filled.port, filled.user, filled.password)
    ] == crlfClean()


def test_deleAndQuitDeleteExactlyThat(filled: DovecotMailbox, popproxyFactory: Any) -> None:
    """
    DELE 2 and QUIT through the proxy delete message 2 and nothing else.
    """
    proxy = proxyFor(popproxyFactory, filled.port)
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.login(filled.user, filled.password)
        client.okCommand(b"DELE 2")
        client.quit()
    remaining = [
        m.data for m in fetchMailbox(filled.host, filled.port, filled.user, filled.password)
    ]
    expected = crlfClean()
    del expected[1]
    assert remaining == expected


def test_wrongPasswordRelayed(filled: DovecotMailbox, popproxyFactory: Any) -> None:
    """
    Dovecot's own -ERR [AUTH] reply to a wrong password reaches the client.
    """
    proxy = proxyFor(popproxyFactory, filled.port)
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.okCommand(f"USER {filled.user}".encode())
        reply = client.command(b"PASS wrong")
    assert reply.startswith(b"-ERR [AUTH] ")


def test_exactBytesServer(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    Against a server that serves bare LF/CR, NUL and a missing final CRLF,
    the proxy delivers exactly what the server delivers directly.
    """
    server = rawPop3(messages=exactBytes(), user="u", password="p")
    proxy = proxyFor(popproxyFactory, server.port)
    direct = fetchMailbox("127.0.0.1", server.port, "u", "p")
    through = fetchMailbox("127.0.0.1", proxy.port, "u", "p")
    assert through == direct
    assert direct[4].data == b"Subject: NUL\r\n\r\nnul \x00 byte\r\n"


def test_inUseReachesClient(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    An upstream's -ERR [IN-USE] answer to PASS reaches the client verbatim.
    """
    server = rawPop3(
        messages=[], user="u", password="p", passReply=b"-ERR [IN-USE] locked elsewhere"
    )
    proxy = proxyFor(popproxyFactory, server.port)
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.okCommand(b"USER u")
        assert client.command(b"PASS p") == b"-ERR [IN-USE] locked elsewhere"


def test_truncatedRetrNeverComplete(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    When the upstream dies in the middle of a RETR, the client receives no
    terminating dot line: the connection closes instead.
    """
    messages = crlfClean()
    server = rawPop3(messages=messages, user="u", password="p", cutRetrAfter=20_000)
    proxy = proxyFor(popproxyFactory, server.port)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"USER u\r\nPASS p\r\nRETR 3\r\n")
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    sock.close()
    assert b"+OK" in received and len(received) > 20_000
    assert not received.endswith(b"\r\n.\r\n")


def test_stalledUpstreamTimesOut(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    An upstream that stops answering gives -ERR [SYS/TEMP] after the
    configured response timeout, not a hang.
    """
    server = rawPop3(
        messages=[b"Subject: x\r\n\r\ny\r\n"], user="u", password="p", stallOn=[b"STAT"]
    )
    proxy = proxyFor(popproxyFactory, server.port, responseTimeout=1)
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.login("u", "p")
        started = time.monotonic()
        reply = client.command(b"STAT")
    assert reply.startswith(b"-ERR [SYS/TEMP] ")
    assert time.monotonic() - started < 5


def test_unreachableUpstream(popproxyFactory: Any) -> None:
    """
    With nothing listening upstream, USER gets -ERR [SYS/TEMP] at once.
    """
    from tests.peers.ports import freePort

    proxy = proxyFor(popproxyFactory, freePort())
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        assert client.command(b"USER x").startswith(b"-ERR [SYS/TEMP] ")
