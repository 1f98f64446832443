"""
Unit tests for popproxy._upstreamlink: request methods that fire
Deferreds once the response routed to their handler is complete (a fake
send step, no connection).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from popproxy._framing import StatusLine
from popproxy._retrievalflow import Spool
from popproxy._upstreamlink import Collector, UpstreamLink


class FakeSend:
    """
    Notes every command and keeps its handler, to answer it later.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.handlers: list[Collector | Spool] = []

    def __call__(self, line: bytes, multiLine: bool, handler: Collector | Spool) -> None:
        self.sent.append((line, multiLine))
        self.handlers.append(handler)

    def answer(self, status: bytes, *body: bytes) -> None:
        handler = self.handlers.pop(0)
        handler.statusReceived(StatusLine(status))
        for piece in body:
            handler.bodyReceived(piece)
        handler.responseFinished()


def results(deferred: Deferred) -> list[object]:
    seen: list[object] = []
    deferred.addCallback(seen.append)
    return seen


def test_shortCommandFiresWithTheStatusLine() -> None:
    """
    A short command is sent as a one-line command and fires with the
    status line only once the answer is complete.
    """
    send = FakeSend()
    seen = results(UpstreamLink(send).shortCommand(b"UIDL 3"))
    assert send.sent == [(b"UIDL 3", False)]
    assert seen == []
    send.answer(b"+OK 3 abc")
    assert seen == [StatusLine(b"+OK 3 abc")]


def test_longCommandFiresWithTheBodyWithoutTheDotLine() -> None:
    """
    A long command fires with the status and the body as received, less
    the terminating line, however the body arrived in pieces.
    """
    send = FakeSend()
    seen = results(UpstreamLink(send).longCommand(b"UIDL"))
    assert send.sent == [(b"UIDL", True)]
    send.answer(b"+OK", b"1 a\r\n2", b" b\r\n.\r\n")
    assert seen == [(StatusLine(b"+OK"), b"1 a\r\n2 b\r\n")]


def test_negativeLongAnswerHasNoBody() -> None:
    """
    A negative answer to a long command fires with an empty body.
    """
    send = FakeSend()
    seen = results(UpstreamLink(send).longCommand(b"LIST"))
    send.answer(b"-ERR no")
    assert seen == [(StatusLine(b"-ERR no"), b"")]


def test_spoolFiresWithTheSpool() -> None:
    """
    A spooled retrieval fires with the spool once its body is complete.
    """
    send = FakeSend()
    spool = Spool(1 << 20)
    seen = results(UpstreamLink(send).spool(b"RETR 1", spool))
    assert send.sent == [(b"RETR 1", True)]
    send.answer(b"+OK", b"a\r\n..b\r\n.\r\n")
    assert seen == [spool]
    assert spool.read() == b"a\r\n.b\r\n"


def test_collectorNeverClaimsTheClientHasPartOfAResponse() -> None:
    """
    A collected response reaches the client only once whole, so a lost
    upstream never needs to cut the client off on its account.
    """
    collector = Collector()
    collector.statusReceived(StatusLine(b"+OK"))
    collector.bodyReceived(b"x\r\n")
    assert collector.inBody is False
