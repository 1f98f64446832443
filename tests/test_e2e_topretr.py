"""
TOP then RETR of the same message, end to end (issue #11): `twistd -n
popproxy` with the shipped chain (strip, scan with a real clamd, tag with a
real spamd) in front of Dovecot holding the demo mailbox.  A client that
previews every message with 'TOP n 0' before its RETR must get the mail a
client that only RETRs gets, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from popproxy.demo import defaultMailboxPath
from popproxy.demo._mailbox import EmlDirectoryMailbox
from tests.peers.dovecot import DovecotMailbox, RawPop3Client

DEMO = EmlDirectoryMailbox(defaultMailboxPath())
COUNT = len(DEMO.listMessages())
GTUBE_SUBJECT = b"Subject: [SPAM] "
#: Scoring a message in spamd can take seconds on a busy machine.
TIMEOUT = 60.0


def startProxy(
    top: str,
    dovecot: DovecotMailbox,
    clamdServer: Any,
    spamdServer: Any,
    popproxyFactory: Any,
    tmp_path: Path,
) -> Any:
    """
    Put the demo messages in Dovecot and start the proxy with the shipped
    chain and the given [chain] top mode.
    """
    for index in range(COUNT):
        dovecot.deliver(DEMO.getMessage(index).read())
    return popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{dovecot.port}"
[chain]
top = "{top}"
quarantine = "{tmp_path / "quarantine"}"
[[filter]]
plugin = "strip"
[[filter]]
plugin = "scan"
settings = {{ address = "{clamdServer.tcpAddress}" }}
[[filter]]
plugin = "tag"
settings = {{ spamd = "{spamdServer.endpoint}" }}
"""
    )


def login(port: int, dovecot: DovecotMailbox) -> RawPop3Client:
    client = RawPop3Client("127.0.0.1", port, timeout=TIMEOUT)
    client.login(dovecot.user, dovecot.password)
    return client


def response(client: RawPop3Client, line: bytes) -> bytes:
    """
    The whole multi-line response to C{line} as it came off the wire:
    status line, dot-stuffed body, final dot.
    """
    client.sendLine(line)
    lines = [client.readLine()]
    assert lines[0].startswith(b"+OK"), (line, lines[0])
    while lines[-1] != b".\r\n":
        lines.append(client.readLine())
    return b"".join(lines)


def message(wire: bytes) -> bytes:
    """
    The message in a multi-line response: no status line, unstuffed.
    """
    lines = wire.split(b"\r\n")[1:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def headerBlock(text: bytes) -> bytes:
    return text[: text.index(b"\r\n\r\n") + 4]


def freshRetrs(port: int, dovecot: DovecotMailbox) -> list[bytes]:
    """
    Every message as a client that only RETRs receives it (one session).
    """
    with login(port, dovecot) as client:
        return [response(client, b"RETR %d" % n) for n in range(1, COUNT + 1)]


def upstreamSizes(dovecot: DovecotMailbox) -> list[int]:
    with RawPop3Client("127.0.0.1", dovecot.port) as client:
        client.login(dovecot.user, dovecot.password)
        return [size for _, size in client.listSizes()]


def test_fullTopThenRetrIsRetr(
    dovecot: DovecotMailbox,
    clamdServer: Any,
    spamdServer: Any,
    popproxyFactory: Any,
    tmp_path: Path,
) -> None:
    """
    With top = "full", 'TOP n 0' then 'RETR n' for every demo message: the
    TOP shows exactly RETR's header block, the RETR equals a fresh
    session's RETR (status line and every byte), GTUBE is tagged [SPAM], the
    EICAR message is a virus notice, nothing is stamped "partial message",
    and LIST then reports the size RETR delivered.
    """
    proxy = startProxy("full", dovecot, clamdServer, spamdServer, popproxyFactory, tmp_path)
    with login(proxy.port, dovecot) as client:
        previews = []
        retrs = []
        for n in range(1, COUNT + 1):
            previews.append(response(client, b"TOP %d 0" % n))
            retrs.append(response(client, b"RETR %d" % n))
        listed = [size for _, size in client.listSizes()]
    fresh = freshRetrs(proxy.port, dovecot)

    for n, (preview, retr) in enumerate(zip(previews, retrs, strict=True), start=1):
        assert message(preview) == headerBlock(message(retr)), n
        assert retr == fresh[n - 1], n
        assert b"partial message" not in preview + retr, n
        assert b"X-Virus-Scanned: popproxy/clamd" in headerBlock(message(retr)), n
        assert b"X-Spam-Status: " in headerBlock(message(retr)), n
        assert listed[n - 1] == len(message(retr)), n
    headers = [headerBlock(message(retr)) for retr in retrs]
    assert [GTUBE_SUBJECT in h for h in headers] == [n == COUNT for n in range(1, COUNT + 1)]
    assert b"Subject: [VIRUS] " in headers[7]
    assert b"X-Virus-Scanned: popproxy/clamd; clean" in headers[0]


def test_partialTopNeverServedToRetr(
    dovecot: DovecotMailbox,
    clamdServer: Any,
    spamdServer: Any,
    popproxyFactory: Any,
    tmp_path: Path,
) -> None:
    """
    With top = "partial", 'TOP n 0' is a preview stamped unchecked (partial
    message), LIST still says the upstream's size after it, and the RETR
    that follows equals a fresh session's RETR (GTUBE tagged, no partial
    stamp), after which LIST says RETR's size.
    """
    proxy = startProxy("partial", dovecot, clamdServer, spamdServer, popproxyFactory, tmp_path)
    upstream = upstreamSizes(dovecot)
    with login(proxy.port, dovecot) as client:
        previews, retrs, before, after = [], [], [], []
        for n in range(1, COUNT + 1):
            previews.append(response(client, b"TOP %d 0" % n))
            before.append(int(client.okCommand(b"LIST %d" % n).split()[2]))
            retrs.append(response(client, b"RETR %d" % n))
            after.append(int(client.okCommand(b"LIST %d" % n).split()[2]))
    fresh = freshRetrs(proxy.port, dovecot)

    assert before == upstream
    for n, (preview, retr) in enumerate(zip(previews, retrs, strict=True), start=1):
        assert b"unchecked (partial message)" in preview, n
        assert retr == fresh[n - 1], n
        assert b"partial message" not in retr, n
        assert after[n - 1] == len(message(retr)), n
    assert GTUBE_SUBJECT in headerBlock(message(retrs[-1]))
    assert GTUBE_SUBJECT not in previews[-1]
