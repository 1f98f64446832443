"""
Unit tests for popproxy._retrievalflow: one RETR or TOP from request to
delivery value, over a fake upstream, fake chains and a fake clock (no
sockets, no session).
"""

from __future__ import annotations

import os
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from popproxy._config import ChainConfig
from popproxy._framing import ResponseParser, StatusLine, stuff
from popproxy._mailboxview import MailboxView
from popproxy._retrieval import TemporaryFailure
from popproxy._retrievalflow import (
    TOP_STATUS,
    ChunkSource,
    Continuation,
    Cut,
    Delivery,
    Filtered,
    Refusal,
    Relayed,
    RetrievalFlow,
    RetrievalRequest,
    Spool,
    Streamed,
    WholeMessage,
    continueStuffed,
    deliveryOf,
    topOf,
)
from popproxy.interfaces import FilterContext

MESSAGE = b"Subject: hi\r\nFrom: a@example.com\r\n\r\nline 1\r\n.dotted\r\nline 3\r\n"


def wireOf(message: bytes) -> bytes:
    """
    The message as a POP3 server sends it: stuffed, with the final dot line.
    """
    return stuff(message)


@dataclass
class FakeUpstream:
    """
    Answers every request at once: UIDL with C{uidAnswer}, the retrieval
    with C{status} and C{message} (fed in two pieces), and notes each line.
    """

    message: bytes = MESSAGE
    status: bytes = b"+OK 70 octets"
    uidAnswer: bytes = b"+OK 1 uid-one"
    listing: bytes = b"1 uid-one\r\n2 uid-two\r\n"
    sent: list[bytes] = field(default_factory=list)

    def shortCommand(self, line: bytes) -> Deferred[StatusLine]:
        self.sent.append(line)
        return succeed(StatusLine(self.uidAnswer))

    def longCommand(self, line: bytes) -> Deferred[tuple[StatusLine, bytes]]:
        self.sent.append(line)
        return succeed((StatusLine(b"+OK"), self.listing))

    def spool(self, line: bytes, into: Spool) -> Deferred[Spool]:
        self.sent.append(line)
        into.statusReceived(StatusLine(self.status))
        if self.status.startswith(b"+OK"):
            wire = wireOf(self.message)
            into.bodyReceived(wire[:10])
            into.bodyReceived(wire[10:])
        into.responseFinished()
        return into.finished


@dataclass
class FakeHook:
    """
    A chain answering each message with C{answer(message)}; notes contexts.
    """

    answer: object = None
    contexts: list[FilterContext] = field(default_factory=list)
    active: bool = True

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        self.contexts.append(context)
        if self.answer is None:
            return succeed(message)
        if isinstance(self.answer, Deferred):
            return self.answer
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer)  # type: ignore[arg-type]


@dataclass
class Run:
    upstream: FakeUpstream = field(default_factory=FakeUpstream)
    hook: FakeHook = field(default_factory=FakeHook)
    mailbox: MailboxView[Filtered] = field(default_factory=lambda: MailboxView(1 << 20))
    chain: ChainConfig = field(default_factory=ChainConfig)
    clock: Clock = field(default_factory=Clock)
    written: list[bytes] = field(default_factory=list)
    closed: bool = False

    def start(self, command: str = "RETR", index: int = 1, lines: int | None = None) -> Deferred:
        context = FilterContext(
            command=command,
            index=index,
            lines=lines,
            user="u",
            client="c",
            upstream="up",
            session="s1",
        )
        flow = RetrievalFlow(
            RetrievalRequest(command, index, lines, context),
            hook=self.hook,
            mailbox=self.mailbox,
            chain=self.chain,
            upstream=self.upstream,
            write=self.written.append,
            clock=self.clock,
            closing=lambda: self.closed,
        )
        return Deferred.fromCoroutine(flow.run())

    def deliver(self, command: str = "RETR", index: int = 1, lines: int | None = None) -> Delivery:
        results: list[Delivery] = []
        self.start(command, index, lines).addCallback(results.append)
        assert len(results) == 1
        return results[0]


def test_unchangedMessageIsRelayedVerbatimAndCached() -> None:
    """
    A message no filter changed is delivered exactly as the upstream sent
    it (status and stuffed wire), and a second RETR comes from the cache.
    """
    run = Run()
    assert run.deliver() == Relayed(b"+OK 70 octets", wireOf(MESSAGE))
    assert run.upstream.sent == [b"UIDL 1", b"RETR 1"]
    assert run.hook.contexts[0].uidl == "uid-one"
    assert run.deliver() == Relayed(b"+OK 70 octets", wireOf(MESSAGE))
    assert run.upstream.sent == [b"UIDL 1", b"RETR 1"]


def test_changedMessageGetsItsOwnSize() -> None:
    """
    A changed message is handed over unstuffed with a status line giving
    its new size, and the mailbox reports that size.
    """
    run = Run(hook=FakeHook(answer=b"X-Tag: 1\r\n" + MESSAGE))
    changed = b"X-Tag: 1\r\n" + MESSAGE
    assert run.deliver() == WholeMessage(b"+OK %d octets" % len(changed), changed)
    assert run.mailbox.sizeOf(1) == len(changed)


def test_knownUidAsksNoUidl() -> None:
    """
    A UID the client already listed is used without asking the upstream.
    """
    run = Run()
    run.mailbox.noteUidListing(b"1 known\r\n")
    run.deliver()
    assert run.upstream.sent == [b"RETR 1"]
    assert run.hook.contexts[0].uidl == "known"


def test_secondUnknownUidFetchesTheWholeListing() -> None:
    """
    The second unknown UID is looked up with one whole listing, which is
    remembered.
    """
    run = Run()
    run.deliver(index=1)
    run.deliver(index=2)
    assert run.upstream.sent == [b"UIDL 1", b"RETR 1", b"UIDL", b"RETR 2"]
    assert run.hook.contexts[1].uidl == "uid-two"


def test_upstreamRefusalIsPassedOn() -> None:
    """
    The upstream's -ERR reaches the client as it is.
    """
    run = Run(upstream=FakeUpstream(status=b"-ERR no such message"))
    assert run.deliver() == Refusal(b"-ERR no such message")
    assert run.hook.contexts == []


def test_temporaryFailureRefusesForNow() -> None:
    """
    A chain's temporary failure becomes -ERR [SYS/TEMP] with its reason.
    """
    run = Run(hook=FakeHook(answer=TemporaryFailure("scanner down")))
    assert run.deliver() == Refusal(b"-ERR [SYS/TEMP] scanner down")
    assert run.mailbox.cached(1) is None


def test_unexpectedErrorRefusesWithoutDetail() -> None:
    """
    Any other chain error is logged and refused with a fixed text.
    """
    run = Run(hook=FakeHook(answer=ValueError("bug")))
    assert run.deliver() == Refusal(b"-ERR [SYS/TEMP] the message could not be filtered")


def test_oversizeTempfail() -> None:
    """
    Over max_size with oversize = "tempfail", the message is refused and
    never filtered.
    """
    run = Run(chain=ChainConfig(maxSize=10, oversize="tempfail"))
    assert run.deliver() == Refusal(b"-ERR [SYS/TEMP] the message is too large to be filtered")
    assert run.hook.contexts == []


def test_oversizeDeliverStreamsBelowAHeader() -> None:
    """
    Over max_size with oversize = "deliver", the spooled original is
    streamed below a header saying it was not checked.
    """
    run = Run(chain=ChainConfig(maxSize=10))
    delivery = run.deliver()
    assert isinstance(delivery, Streamed)
    header = b"X-Popproxy-Unchecked: too large to filter (%d octets)\r\n" % len(MESSAGE)
    assert delivery.prefix == header
    assert delivery.status == b"+OK %d octets" % (len(MESSAGE) + len(header))
    assert b"".join(delivery.source.chunks()) == MESSAGE
    delivery.source.close()


def test_oversizeTopIsCutFromTheOriginal() -> None:
    """
    TOP of an oversize message is cut from the original below the header.
    """
    run = Run(chain=ChainConfig(maxSize=10))
    delivery = run.deliver("TOP", 1, 0)
    assert isinstance(delivery, WholeMessage)
    assert delivery.status == TOP_STATUS
    assert delivery.message.endswith(topOf(MESSAGE, 0))
    assert delivery.message.startswith(b"X-Popproxy-Unchecked:")


def test_topFullFiltersTheWholeMessage() -> None:
    """
    With top = "full", TOP fetches and filters the whole message (not
    partial), caches it for RETR, and delivers its top.
    """
    run = Run(hook=FakeHook(answer=b"X-Tag: 1\r\n" + MESSAGE))
    delivery = run.deliver("TOP", 1, 1)
    assert run.upstream.sent[-1] == b"RETR 1"
    assert run.hook.contexts[0].partial is False
    assert delivery == WholeMessage(TOP_STATUS, topOf(b"X-Tag: 1\r\n" + MESSAGE, 1))
    assert run.mailbox.cached(1) is not None


def test_topPartialIsNeverCached() -> None:
    """
    With top = "partial", TOP fetches only the top, tells the chain it is
    partial, delivers what the chain returned, and caches nothing.
    """
    run = Run(chain=ChainConfig(top="partial"))
    delivery = run.deliver("TOP", 1, 2)
    assert run.upstream.sent[-1] == b"TOP 1 2"
    assert run.hook.contexts[0].partial is True
    assert delivery == Relayed(b"+OK 70 octets", wireOf(MESSAGE))
    assert run.mailbox.cached(1) is None


def test_bigChangedRetrIsStreamedFromMemory() -> None:
    """
    A changed message over the spool threshold is streamed in chunks.
    """
    big = b"Subject: x\r\n\r\n" + b"y" * 200 + b"\r\n"
    run = Run(hook=FakeHook(answer=big), chain=ChainConfig(spoolThreshold=100))
    delivery = run.deliver()
    assert isinstance(delivery, Streamed)
    assert isinstance(delivery.source, ChunkSource)
    assert delivery.status == b"+OK %d octets" % len(big)
    assert b"".join(delivery.source.chunks(64)) == big


def test_keepaliveThenContinuation() -> None:
    """
    A slow chain gets the +OK line and a growing header sent early; the
    delivery is the rest of the message below it.
    """
    slow: Deferred[bytes] = Deferred()
    run = Run(hook=FakeHook(answer=slow), chain=ChainConfig(keepaliveAfter=2, keepaliveInterval=1))
    results: list[Delivery] = []
    run.start().addCallback(results.append)
    run.clock.advance(2)
    run.clock.advance(1)
    assert run.written == [b"+OK message follows\r\nX-Popproxy-Wait: ", b"."]
    slow.callback(MESSAGE)
    assert results == [Continuation(b"\r\n" + MESSAGE)]
    assert run.clock.getDelayedCalls() == []
    cached = run.mailbox.cached(1)
    assert cached is not None and cached.message == b"X-Popproxy-Wait: .\r\n" + MESSAGE


def test_failureAfterKeepaliveCuts() -> None:
    """
    A chain failing after the keepalive began cuts the connection: the
    client never gets a refusal it could mistake for the end.
    """
    slow: Deferred[bytes] = Deferred()
    run = Run(hook=FakeHook(answer=slow), chain=ChainConfig(keepaliveAfter=2))
    results: list[Delivery] = []
    run.start().addCallback(results.append)
    run.clock.advance(2)
    slow.errback(TemporaryFailure("scanner down"))
    assert results == [Cut("scanner down")]


def test_closedSessionGetsNothingAndCachesNothing() -> None:
    """
    When the session ended while the chain ran, nothing is delivered or
    cached and the keepalive stops.
    """
    slow: Deferred[bytes] = Deferred()
    run = Run(hook=FakeHook(answer=slow))
    results: list[Delivery | None] = []
    run.start().addCallback(results.append)
    run.closed = True
    slow.callback(MESSAGE)
    assert results == [None]
    assert run.mailbox.cached(1) is None
    assert run.clock.getDelayedCalls() == []


def test_spoolKeepsSmallBodiesAndFilesBigOnes() -> None:
    """
    A small body is unstuffed into memory with its dot-lines noted (for a
    verbatim relay); a big one is unstuffed into a file as it arrives,
    without the terminating line (and stuffed anew).  Either way, an
    unchanged message entered as the flow enters it is relayed as it came.
    """
    for threshold, inMemory in ((1 << 20, True), (8, False)):
        spool = Spool(threshold)
        spool.statusReceived(StatusLine(b"+OK"))
        wire = wireOf(MESSAGE)
        for start in range(0, len(wire), 7):
            spool.bodyReceived(wire[start : start + 7])
        spool.responseFinished()
        assert spool.finished.called
        assert (spool.dotOffsets is not None) is inMemory
        entry = Filtered(spool.read(), b"+OK", spool.dotOffsets)
        assert deliveryOf(entry, "RETR", None) == Relayed(b"+OK", wire)
        assert spool.read() == MESSAGE
        assert spool.size == len(MESSAGE)
        assert b"".join(spool.chunks(5)) == MESSAGE
        assert spool.head(7) == MESSAGE[:7]
        spool.close()


def test_spoolFileInItsDirectory(tmp_path: Path) -> None:
    """
    A big body is spooled into the directory given ([chain]
    spool_directory), in a file without a name that is gone once closed.
    """
    spool = Spool(8, tmp_path)
    spool.statusReceived(StatusLine(b"+OK"))
    spool.bodyReceived(wireOf(MESSAGE))
    spool.responseFinished()
    assert spool.read() == MESSAGE
    assert spool._file is not None
    where = os.readlink(f"/proc/self/fd/{spool._file.fileno()}")
    assert where.startswith(f"{tmp_path}/")
    assert list(tmp_path.iterdir()) == []
    spool.close()


def test_deliveryOfEntries() -> None:
    """
    A cached entry gives TOP's cut, a verbatim relay, or a stuffed message.
    An unchanged message, entered as the flow enters it (the spooled
    message and where its dot-lines start, or no places noted), is relayed
    as the server sent it; the entry counts the message and the places
    noted.
    """
    spool = Spool(1 << 20)
    spool.statusReceived(StatusLine(b"+OK 70"))
    spool.bodyReceived(wireOf(MESSAGE))
    spool.responseFinished()
    assert spool.dotOffsets is not None and len(spool.dotOffsets) == 1
    unchanged = Filtered(spool.read(), b"+OK 70", spool.dotOffsets)
    unnoted = Filtered(spool.read(), b"+OK 70", None)
    changed = Filtered(MESSAGE, None)
    assert deliveryOf(unchanged, "TOP", 0) == WholeMessage(TOP_STATUS, topOf(MESSAGE, 0))
    assert deliveryOf(unchanged, "RETR", None) == Relayed(b"+OK 70", wireOf(MESSAGE))
    assert deliveryOf(unnoted, "RETR", None) == Relayed(b"+OK 70", wireOf(MESSAGE))
    assert deliveryOf(changed, "RETR", None) == WholeMessage(
        b"+OK %d octets" % len(MESSAGE), MESSAGE
    )
    assert unnoted.footprint == len(MESSAGE)
    assert unchanged.footprint > len(MESSAGE)


def test_cacheBudgetCountsTheNotedDotPlaces() -> None:
    """
    A message that fits the session's cache budget by its octets, but not
    with the places of its 10,000 dot-lines noted beside it (each a
    Python int), is not cached: the next RETR asks the upstream again,
    and the cache never holds more than its budget says.
    """
    dotted = b"Subject: dots\r\n\r\n" + b".a\r\n" * 10_000
    status = b"+OK %d octets" % len(dotted)
    run = Run(
        upstream=FakeUpstream(message=dotted, status=status),
        mailbox=MailboxView(len(dotted) + 1_000),
    )
    assert run.deliver() == Relayed(status, wireOf(dotted))
    assert run.deliver() == Relayed(status, wireOf(dotted))
    assert run.upstream.sent.count(b"RETR 1") == 2


def test_topOfAndContinueStuffed() -> None:
    """
    topOf keeps the headers and the asked body lines; continueStuffed
    stuffs a rest that starts mid-line without touching its first byte.
    """
    assert topOf(MESSAGE, 0) == b"Subject: hi\r\nFrom: a@example.com\r\n\r\n"
    assert topOf(MESSAGE, 1).endswith(b"\r\n\r\nline 1\r\n")
    assert topOf(MESSAGE, 99) == MESSAGE
    assert topOf(b"no header end", 1) == b"no header end"
    assert continueStuffed(b".x\r\n.y\r\n") == b".x\r\n..y\r\n.\r\n"


def test_spoolHoldsAMessageWithDotLinesOnce() -> None:
    """
    A 4 MB body with a line-starting dot every few lines, received in
    64 KiB reads through the parser, is unstuffed as it arrives and kept
    once: the memory it takes at its peak stays below 1.5 times the
    message (the body as received is not kept beside it), and it is the
    message, its wire form rebuilt exactly.
    """
    line = b"..a line that starts with a dot, stuffed by the server\r\n"
    message = (b"Subject: dots\r\n\r\n" + line[1:] * 70_000)[: 4 << 20]
    message = message[: message.rfind(b"\r\n") + 2]
    wire = b"+OK\r\n" + stuff(message)
    parser = ResponseParser()
    spool = Spool(threshold=16 << 20)
    chunks = [wire[i : i + 65536] for i in range(0, len(wire), 65536)]
    tracemalloc.start()
    try:
        parser.expect(True, spool.bodyScanner)
        for chunk in chunks:
            for event in parser.feed(chunk):
                if isinstance(event, StatusLine):
                    spool.statusReceived(event)
                elif event is None:
                    spool.responseFinished()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spool.finished.called and spool.read() == message
    assert peak < 1.5 * len(message), peak
    entry = Filtered(spool.read(), b"+OK", spool.dotOffsets)
    assert deliveryOf(entry, "RETR", None) == Relayed(b"+OK", wire[5:])
