"""
Bounded memory end to end: a client that pipelines RETR for a whole
mailbox and reads slowly must not make the proxy buffer the mailbox.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.corpus import _attachment, _base64Lines
from tests.peers.dovecot import fetchMailbox
from tests.peers.rawpop3 import dotStuff

PROXY = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]

[upstream]
default = "tcp:127.0.0.1:%d"
"""

MESSAGES = 16
SIZE = 2_000_000


def bigMessages() -> list[bytes]:
    return [
        b"Subject: big %d\r\n\r\n" % number + _base64Lines(_attachment(b"%d" % number, SIZE))
        for number in range(MESSAGES)
    ]


def test_slowPipeliningClientDoesNotBloatProxy(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    A client pipelines RETR of 16 messages (~43 MB on the wire) and does not
    read for a while: the proxy stops reading the upstream instead of
    buffering, its memory grows by far less than the mailbox, and once the
    client reads, every response arrives complete and in order.
    """
    messages = bigMessages()
    server = rawPop3(messages=messages, user="u", password="p")
    proxy = popproxyFactory(PROXY % server.port)
    time.sleep(0.3)
    before = proxy.rss()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", proxy.port))
    commands = (
        b"USER u\r\nPASS p\r\n"
        + b"".join(b"RETR %d\r\n" % n for n in range(1, MESSAGES + 1))
        + b"QUIT\r\n"
    )
    sock.sendall(commands)
    time.sleep(3)
    grown = proxy.rss() - before
    received = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += data
    sock.close()
    wire = bytes(received)
    total = sum(len(m) for m in messages)
    assert grown < total // 4, f"proxy RSS grew by {grown} bytes for a {total}-byte mailbox"
    # Every RETR response arrives whole (status line and stuffed body, byte
    # for byte) and in order; the session then ends with QUIT's answer.
    position = 0
    for message in messages:
        response = b"+OK %d octets\r\n" % len(message) + dotStuff(message)
        found = wire.find(response, position)
        assert found >= position, "a RETR response is missing, damaged or out of order"
        position = found + len(response)
    assert wire[position:].startswith(b"+OK")
    direct = fetchMailbox("127.0.0.1", server.port, "u", "p", timeout=60)
    assert [m.data for m in direct] == messages
