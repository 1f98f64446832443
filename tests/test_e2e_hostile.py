"""
Hostile mail end to end: `twistd -n popproxy` with the shipped chain
(strip, scan, tag; clamd and spamd unreachable, so scan and tag deliver
"unchecked" at once) fetches messages crafted to make backtracking
patterns quadratic, while a second session sends NOOPs and times their
answers.  Each message is delivered, and no NOOP waits anywhere near the
90 s the first of these messages used to freeze every session for.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.dovecot import RawPop3Client
from tests.peers.ports import freePort

#: Big enough that the old patterns took minutes (64 KB took about 90 s).
BLANKS = 256 * 1024

QP_BLANKS = (
    b"From: mallory@example.com\r\nSubject: blanks\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"a" + b" \t" * (BLANKS // 2) + b"b\r\n"
)
UU_BLANKS = (
    b"From: mallory@example.com\r\nSubject: uu\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"begin 644 x" + b" " * BLANKS + b"y\r\nplain text\r\n"
)

#: The worst wait for a NOOP answer we accept while another session fetches.
MAX_STALL = 1.0


def shippedChain(tmp_path: Path, upstreamPort: int) -> str:
    return f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{upstreamPort}"
[chain]
quarantine = "{tmp_path / "quarantine"}"
top = "full"
[[filter]]
plugin = "strip"
[[filter]]
plugin = "scan"
settings = {{ address = "tcp:127.0.0.1:{freePort()}", on_failure = "deliver" }}
[[filter]]
plugin = "tag"
settings = {{ spamd = "tcp:127.0.0.1:{freePort()}" }}
"""


class NoopTimer(threading.Thread):
    """
    A second session that sends NOOP every 10 ms and records the longest
    wait for an answer, until told to stop.
    """

    def __init__(self, client: RawPop3Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.worst = 0.0
        self.answers = 0
        self.stop = threading.Event()
        self.answering = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            sent = time.monotonic()
            assert self.client.command(b"NOOP").startswith(b"+OK")
            self.worst = max(self.worst, time.monotonic() - sent)
            self.answers += 1
            self.answering.set()


@pytest.mark.timeout(120)
def test_hostileMessagesStallNobody(tmp_path: Path, rawPop3: Any, popproxyFactory: Any) -> None:
    """
    Fetching each crafted message through the shipped chain answers +OK
    with the message intact, and a second session's NOOPs are answered
    within MAX_STALL all the while.
    """
    server = rawPop3(messages=[QP_BLANKS, UU_BLANKS], user="u", password="p")
    proxy = popproxyFactory(shippedChain(tmp_path, server.port))
    with (
        RawPop3Client("127.0.0.1", proxy.port, timeout=60) as fetcher,
        RawPop3Client("127.0.0.1", proxy.port, timeout=60) as watcher,
    ):
        fetcher.login("u", "p")
        watcher.login("u", "p")
        timer = NoopTimer(watcher)
        timer.start()
        assert timer.answering.wait(10)
        try:
            for number, original in 3 * list(enumerate((QP_BLANKS, UU_BLANKS), 1)):
                lines = fetcher.multiline(b"RETR %d" % number)
                body = b"".join(lines)
                assert body.endswith(original.split(b"\r\n\r\n", 1)[1])
        finally:
            timer.stop.set()
            timer.join(30)
    assert timer.answers > 0
    assert timer.worst < MAX_STALL, f"a NOOP waited {timer.worst:.2f} s"
