"""
Tests for popproxy._listings: STAT, LIST and DELE go upstream as one line
each, and their answers reach the client with the sizes RETR delivers for
the messages the chain changed (a real MailboxView; the upstream is a fake
link answered by hand).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred

from popproxy._framing import StatusLine
from popproxy._listings import ListingExchange
from popproxy._mailboxview import MailboxView


@dataclass(frozen=True)
class Entry:
    """
    A filtered message as the cache sees it.
    """

    footprint: int = 10


class FakeLink:
    """
    Notes each command line and keeps its Deferred, to answer it by hand.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self._short: list[Deferred[StatusLine]] = []
        self._long: list[Deferred[tuple[StatusLine, bytes]]] = []

    def shortCommand(self, line: bytes) -> Deferred[StatusLine]:
        self.sent.append((line, False))
        d: Deferred[StatusLine] = Deferred()
        self._short.append(d)
        return d

    def longCommand(self, line: bytes) -> Deferred[tuple[StatusLine, bytes]]:
        self.sent.append((line, True))
        d: Deferred[tuple[StatusLine, bytes]] = Deferred()
        self._long.append(d)
        return d

    def answer(self, line: bytes) -> None:
        self._short.pop(0).callback(StatusLine(line))

    def answerLong(self, line: bytes, body: bytes = b"") -> None:
        self._long.pop(0).callback((StatusLine(line), body))


def exchange() -> tuple[ListingExchange[Entry], FakeLink, MailboxView[Entry]]:
    """
    An exchange over a mailbox where message 1 went through the chain and
    shrank from 1000 to 400 octets.
    """
    link = FakeLink()
    mailbox: MailboxView[Entry] = MailboxView(1 << 20)
    mailbox.remember(1, Entry(), 400, 1000)
    return ListingExchange(link, mailbox), link, mailbox  # type: ignore[arg-type]


def result(deferred: Deferred[bytes]) -> bytes:
    seen: list[bytes] = []
    deferred.addCallback(seen.append)
    assert len(seen) == 1, "the answer has not arrived"
    return seen[0]


def test_statRewritten() -> None:
    """
    STAT's octets count what RETR delivers: the upstream's total less what
    the chain removed from message 1.
    """
    listings, link, _ = exchange()
    answer = ensureDeferred(listings.stat())
    assert link.sent == [(b"STAT", False)]
    link.answer(b"+OK 2 3000")
    assert result(answer) == b"+OK 2 2400\r\n"


def test_statUnchangedWithoutFilteredMessages() -> None:
    """
    Before any message went through the chain the upstream's STAT line is
    relayed as it came.
    """
    link = FakeLink()
    listings: ListingExchange[Entry] = ListingExchange(link, MailboxView(1024))  # type: ignore[arg-type]
    answer = ensureDeferred(listings.stat())
    link.answer(b"+OK 2 3000 extra words")
    assert result(answer) == b"+OK 2 3000 extra words\r\n"


def test_listLineRewritten() -> None:
    """
    LIST n for a changed message gives its size as delivered; for another
    message the upstream's size.
    """
    listings, link, _ = exchange()
    first = ensureDeferred(listings.listLine(1))
    link.answer(b"+OK 1 1000")
    second = ensureDeferred(listings.listLine(2))
    link.answer(b"+OK 2 2000")
    assert link.sent == [(b"LIST 1", False), (b"LIST 2", False)]
    assert result(first) == b"+OK 1 400\r\n"
    assert result(second) == b"+OK 2 2000\r\n"


def test_listingRewritten() -> None:
    """
    LIST goes upstream as a multi-line command; the listing reaches the
    client with message 1's size as delivered, status line and terminating
    line as the upstream sent them.
    """
    listings, link, _ = exchange()
    answer = ensureDeferred(listings.listing())
    assert link.sent == [(b"LIST", True)]
    link.answerLong(b"+OK 2 messages (3000 octets)", b"1 1000\r\n2 2000\r\n")
    assert result(answer) == b"+OK 2 messages (3000 octets)\r\n1 400\r\n2 2000\r\n.\r\n"


def test_negativeAnswersPassThrough() -> None:
    """
    An -ERR answer to STAT, LIST n, LIST or DELE reaches the client as the
    upstream sent it, never rewritten, with no body.
    """
    listings, link, mailbox = exchange()
    stat = ensureDeferred(listings.stat())
    link.answer(b"-ERR 1 1000 mailbox locked")
    listLine = ensureDeferred(listings.listLine(1))
    link.answer(b"-ERR 1 1000 no such message")
    listing = ensureDeferred(listings.listing())
    link.answerLong(b"-ERR [SYS/TEMP] try later")
    assert result(stat) == b"-ERR 1 1000 mailbox locked\r\n"
    assert result(listLine) == b"-ERR 1 1000 no such message\r\n"
    assert result(listing) == b"-ERR [SYS/TEMP] try later\r\n"


def test_deleteMarksOnlyWhenAccepted() -> None:
    """
    A refused DELE leaves message 1 counted in STAT; an accepted one takes
    its size change out, since the upstream no longer counts it.
    """
    listings, link, _ = exchange()
    refused = ensureDeferred(listings.delete(1))
    link.answer(b"-ERR message locked")
    assert result(refused) == b"-ERR message locked\r\n"
    stat = ensureDeferred(listings.stat())
    link.answer(b"+OK 2 3000")
    assert result(stat) == b"+OK 2 2400\r\n"

    accepted = ensureDeferred(listings.delete(1))
    link.answer(b"+OK message 1 deleted")
    assert result(accepted) == b"+OK message 1 deleted\r\n"
    stat = ensureDeferred(listings.stat())
    link.answer(b"+OK 1 2000")
    assert result(stat) == b"+OK 1 2000\r\n"
    assert link.sent == [
        (b"DELE 1", False),
        (b"STAT", False),
        (b"DELE 1", False),
        (b"STAT", False),
    ]


def test_nothingAnsweredBeforeTheUpstream() -> None:
    """
    The client's answer waits for the upstream's: nothing is made up.
    """
    listings, link, _ = exchange()
    seen: list[bytes] = []
    ensureDeferred(listings.stat()).addCallback(seen.append)
    assert seen == []
    link.answer(b"+OK 2 3000")
    assert seen == [b"+OK 2 2400\r\n"]
