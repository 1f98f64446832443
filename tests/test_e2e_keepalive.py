"""
A slow filter chain against a real client's read timeout, end to end:
without keepalive the client gives up; with it the client receives the
message, intact below the keepalive header.
"""

from __future__ import annotations

import poplib
from pathlib import Path
from typing import Any

import pytest

SLOW = """
from twisted.internet import reactor
from twisted.internet.task import deferLater
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Deliver

@implementer(IMessageFilter)
class Slow:
    name = "slow"
    async def filterMessage(self, message, context):
        # A coroutine: its code runs on the reactor thread, where timers
        # may be set (a plain method would run in a filter thread).
        return await deferLater(reactor, 3.0, Deliver)

def makeFilter(settings):
    return Slow()
"""

MESSAGE = b"Subject: slow\r\n\r\n.a dot line\r\nbody\r\n"


def startProxy(popproxyFactory: Any, tmp_path: Path, port: int, keepalive: float) -> Any:
    (tmp_path / "slow.py").write_text(SLOW)
    return popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{port}"
[chain]
keepalive_after = {keepalive}
keepalive_interval = 0.5
[[filter]]
plugin = "{tmp_path / "slow.py"}"
"""
    )


def retrieve(port: int) -> bytes:
    client = poplib.POP3("127.0.0.1", port, timeout=1.5)
    try:
        client.user("u")
        client.pass_("p")
        _, lines, _ = client.retr(1)
        client.quit()
    finally:
        client.close()
    return b"\r\n".join(lines) + b"\r\n"


def test_slowChainTimesOutWithoutKeepalive(
    rawPop3: Any, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    With keepalive off, poplib (1.5 s read timeout) gives up on a chain that
    takes 3 s.
    """
    server = rawPop3(messages=[MESSAGE], user="u", password="p")
    proxy = startProxy(popproxyFactory, tmp_path, server.port, 0)
    with pytest.raises(TimeoutError):
        retrieve(proxy.port)


def test_keepaliveCarriesSlowChain(rawPop3: Any, popproxyFactory: Any, tmp_path: Path) -> None:
    """
    With keepalive after 0.5 s, poplib receives the message: the keepalive
    header line, then the message byte for byte (dot lines unstuffed right).
    """
    server = rawPop3(messages=[MESSAGE], user="u", password="p")
    proxy = startProxy(popproxyFactory, tmp_path, server.port, 0.5)
    received = retrieve(proxy.port)
    header, _, rest = received.partition(b"\r\n")
    assert header.startswith(b"X-Popproxy-Wait: ") and set(header[17:]) <= {ord(".")}
    assert rest == MESSAGE
    assert server.deletedAtQuit == []
