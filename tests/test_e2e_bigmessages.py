"""
Big messages through the filter chain end to end, with the proxy's memory
measured: spooling keeps memory bounded by the thresholds, not by the
message size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.corpus import _attachment, _base64Lines
from tests.peers.dovecot import RawPop3Client

TAGGER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Rewrite

@implementer(IMessageFilter)
class Tagger:
    name = "tagger"
    def filterMessage(self, message, context):
        return Rewrite(message.withHeaderAdded("X-Tagged", "yes"))

def makeFilter(settings):
    return Tagger()
"""

MB = 1024 * 1024


def bigMessage(size: int) -> bytes:
    return (
        b"Subject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b'--b\r\nContent-Type: application/octet-stream; name="x.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + _base64Lines(_attachment(b"big", size * 3 // 4))
        + b"--b--\r\n"
    )


def startProxy(popproxyFactory: Any, tmp_path: Path, port: int, maxSize: int) -> Any:
    (tmp_path / "tagger.py").write_text(TAGGER)
    return popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{port}"
response_timeout = 60
[chain]
spool_threshold = {4 * MB}
max_size = {maxSize}
[[filter]]
plugin = "{tmp_path / "tagger.py"}"
timeout = 60
"""
    )


def fetchOne(port: int) -> bytes:
    with RawPop3Client("127.0.0.1", port, timeout=120) as client:
        client.login("u", "p")
        data = client.retrieve(1)
        client.quit()
    return data


def test_oversizeMessageBoundedMemory(rawPop3: Any, popproxyFactory: Any, tmp_path: Path) -> None:
    """
    A 50 MB message above max_size (10 MB) is spooled to disk and streamed
    back untouched below a header; the proxy's peak memory grows by far less
    than the message size.
    """
    message = bigMessage(50 * MB)
    server = rawPop3(messages=[message], user="u", password="p")
    proxy = startProxy(popproxyFactory, tmp_path, server.port, 10 * MB)
    time.sleep(0.2)
    before = proxy.rss()
    received = fetchOne(proxy.port)
    peak = proxy.rss("VmHWM") - before
    header = b"X-Popproxy-Unchecked: too large to filter (%d octets)\r\n" % len(message)
    assert received == header + message
    assert peak < 20 * MB, f"peak RSS grew by {peak / MB:.1f} MB for a 50 MB message"
    print(f"50 MB oversize message: peak RSS +{peak / MB:.1f} MB")


def test_filteredBigMessageMemory(rawPop3: Any, popproxyFactory: Any, tmp_path: Path) -> None:
    """
    A 20 MB message filtered (tagged) by the chain arrives intact with the
    tag, and the proxy's peak memory grows by at most 2.5 times its size.
    """
    message = bigMessage(20 * MB)
    server = rawPop3(messages=[message], user="u", password="p")
    proxy = startProxy(popproxyFactory, tmp_path, server.port, 100 * MB)
    time.sleep(0.2)
    before = proxy.rss()
    received = fetchOne(proxy.port)
    peak = proxy.rss("VmHWM") - before
    assert received == b"X-Tagged: yes\r\n" + message
    assert peak < 2.5 * len(message), f"peak RSS grew by {peak / MB:.1f} MB for 20 MB"
    print(f"20 MB filtered message: peak RSS +{peak / MB:.1f} MB")
