"""
Protocol tests for RETR and TOP through an active filter hook: what the
hook sees, what the client receives, TOP/RETR consistency, LIST/STAT sizes,
temporary failures and the keepalive that stops slow chains from tripping
client timeouts.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPullProducer
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._framing import stuff
from popproxy._retrieval import TemporaryFailure
from popproxy._retrievalflow import topOf
from popproxy.interfaces import FilterContext
from tests.sessionharness import Harness

MESSAGE = b"Subject: s\r\n\r\n.dot\r\nline 2\r\nline 3\r\n"


class AddHeader:
    """
    A filter hook that prepends a header, or fails, or waits, as told.
    """

    active = True

    def __init__(self, failWith: Exception | None = None, wait: bool = False) -> None:
        self.failWith = failWith
        self.wait = wait
        self.pending: list[Deferred[bytes]] = []
        self.seen: list[tuple[FilterContext, bytes]] = []

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        self.seen.append((context, message))
        if self.failWith is not None:
            return fail(self.failWith)
        if self.wait:
            waiting: Deferred[bytes] = Deferred()
            self.pending.append(waiting)
            return waiting
        return succeed(b"X-Filtered: yes\r\n" + message)


def serveRetr(h: Harness, index: int, message: bytes = MESSAGE, uidl: bytes = b"uid-1") -> None:
    """
    Play the upstream for the UIDL n (or, for a second message, the whole
    UIDL listing) + RETR n the proxy sends.
    """
    request = h.upstream.received()
    if request == b"UIDL\r\n":
        h.upstream.reply(b"+OK\r\n%d %s\r\n.\r\n" % (index, uidl))
    else:
        assert request == b"UIDL %d\r\n" % index
        h.upstream.reply(b"+OK %d %s\r\n" % (index, uidl))
    assert h.upstream.received() == b"RETR %d\r\n" % index
    h.upstream.reply(b"+OK %d octets\r\n" % len(message) + stuff(message))


def test_hookSeesUnstuffedAndRestuffs() -> None:
    """
    An active hook gets the dot-unstuffed message and a context with the
    UIDL; what it returns is stuffed and sent with its own size.
    """
    hook = AddHeader()
    h = Harness(hook=hook)
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    context, message = hook.seen[0]
    assert message == MESSAGE
    assert (context.command, context.index, context.uidl, context.user) == (
        "RETR",
        1,
        "uid-1",
        "alice",
    )
    out = b"X-Filtered: yes\r\n" + MESSAGE
    assert h.received() == b"+OK %d octets\r\n" % len(out) + stuff(out)


def test_unchangedKeepsUpstreamStatus() -> None:
    """
    A message the chain did not change goes out with the upstream's own
    status line and the exact bytes.
    """

    class Nothing(AddHeader):
        def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
            return succeed(message)

    h = Harness(hook=Nothing())
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    assert h.received() == b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE)


# A needless dot before ".x": a client reads the line as "x".
ODDLY_STUFFED = b"Subject: s\r\n\r\n.x\r\n..dot\r\nend\r\n.\r\n"
ODDLY_STUFFED_MESSAGE = b"Subject: s\r\n\r\nx\r\n.dot\r\nend\r\n"


def retrieveUnchanged(h: Harness) -> bytes:
    """
    RETR 1 through a chain that changes nothing, the upstream sending
    L{ODDLY_STUFFED}; return what the client received.
    """
    h.login()
    h.send(b"RETR 1\r\n")
    assert h.upstream.received() == b"UIDL 1\r\n"
    h.upstream.reply(b"+OK 1 uid-1\r\n")
    assert h.upstream.received() == b"RETR 1\r\n"
    h.upstream.reply(b"+OK 40 octets\r\n" + ODDLY_STUFFED)
    drain(h)
    return h.received()


def test_unchangedRelayedAsReceived() -> None:
    """
    An unchanged message is relayed exactly as the upstream stuffed it, not
    unstuffed and stuffed again (the needless dot stays), while the chain
    saw the unstuffed message; a repeated RETR from the session cache sends
    the same bytes without asking the upstream.
    """
    hook = Unchanged()
    h = Harness(hook=hook)
    assert retrieveUnchanged(h) == b"+OK 40 octets\r\n" + ODDLY_STUFFED
    assert hook.seen[0][1] == ODDLY_STUFFED_MESSAGE
    h.send(b"RETR 1\r\n")
    assert h.upstream.received() == b""
    assert h.received() == b"+OK 40 octets\r\n" + ODDLY_STUFFED


def test_unchangedSpooledMessageStuffedAgain() -> None:
    """
    Above the spool threshold the message was unstuffed into a file, so an
    unchanged one is stuffed anew: the same message for the client.
    """
    hook = Unchanged()
    h = Harness(hook=hook, chain={"spoolThreshold": 10})
    assert retrieveUnchanged(h) == b"+OK 40 octets\r\n" + stuff(ODDLY_STUFFED_MESSAGE)
    assert hook.seen[0][1] == ODDLY_STUFFED_MESSAGE


def test_uidsListedToTheClientAreReused() -> None:
    """
    After the client's own UIDL (relayed verbatim), RETR asks the upstream
    for the message only: the chain's context takes the UID from the
    listing, saving a round trip per message; "UIDL n" is remembered too.
    """
    hook = AddHeader()
    h = Harness(hook=hook)
    h.login()
    h.send(b"UIDL\r\n")
    assert h.upstream.received() == b"UIDL\r\n"
    listing = b"+OK\r\n1 first-uid\r\n2 second-uid\r\n.\r\n"
    h.upstream.reply(listing)
    assert h.received() == listing
    h.send(b"RETR 2\r\n")
    assert h.upstream.received() == b"RETR 2\r\n"
    h.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    out = b"X-Filtered: yes\r\n" + MESSAGE
    assert h.received() == b"+OK %d octets\r\n" % len(out) + stuff(out)
    assert hook.seen[0][0].uidl == "second-uid"
    h.send(b"UIDL 3\r\n")
    assert h.upstream.received() == b"UIDL 3\r\n"
    h.upstream.reply(b"+OK 3 third-uid\r\n")
    assert h.received() == b"+OK 3 third-uid\r\n"
    h.send(b"RETR 3\r\n")
    assert h.upstream.received() == b"RETR 3\r\n"
    h.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    assert hook.seen[1][0].uidl == "third-uid"
    h.send(b"RETR 1\r\n")
    assert h.upstream.received() == b"RETR 1\r\n"


def test_severalRetrievalsFetchTheUidListingOnce() -> None:
    """
    A client that does not list UIDs itself: the first filtered RETR asks
    "UIDL n"; the second asks for the whole listing once, and every later
    RETR needs no UIDL round trip at all.  A refused listing still lets
    the message through (without a UID in the chain's context).
    """
    hook = AddHeader()
    h = Harness(hook=hook)
    h.login()
    h.send(b"RETR 1\r\n")
    assert h.upstream.received() == b"UIDL 1\r\n"
    h.upstream.reply(b"+OK 1 one\r\n")
    assert h.upstream.received() == b"RETR 1\r\n"
    h.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    h.send(b"RETR 2\r\n")
    assert h.upstream.received() == b"UIDL\r\n"
    h.upstream.reply(b"+OK\r\n1 one\r\n2 two\r\n3 three\r\n.\r\n")
    assert h.upstream.received() == b"RETR 2\r\n"
    h.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    h.send(b"RETR 3\r\n")
    assert h.upstream.received() == b"RETR 3\r\n"
    h.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    assert [context.uidl for context, _ in hook.seen] == ["one", "two", "three"]
    out = b"X-Filtered: yes\r\n" + MESSAGE
    assert h.received() == (b"+OK %d octets\r\n" % len(out) + stuff(out)) * 3

    refused = Harness(hook=AddHeader())
    refused.login()
    for index in (1, 2):
        refused.send(b"RETR %d\r\n" % index)
        request = refused.upstream.received()
        refused.upstream.reply(b"-ERR no UIDL here\r\n")
        assert request == (b"UIDL 1\r\n" if index == 1 else b"UIDL\r\n")
        assert refused.upstream.received() == b"RETR %d\r\n" % index
        refused.upstream.reply(b"+OK %d octets\r\n" % len(MESSAGE) + stuff(MESSAGE))
    assert refused.received() == (b"+OK %d octets\r\n" % len(out) + stuff(out)) * 2


def test_topIsCutFromFilteredMessage() -> None:
    """
    TOP fetches and filters the whole message (so 'TOP n 99999999' is a
    full retrieval) and shows the filtered headers; a later RETR is served
    from the session cache, identical, without asking the upstream again.
    """
    hook = AddHeader()
    h = Harness(hook=hook)
    h.login()
    h.send(b"TOP 1 1\r\n")
    serveRetr(h, 1)
    out = b"X-Filtered: yes\r\n" + MESSAGE
    assert h.received() == b"+OK top of message follows\r\n" + stuff(topOf(out, 1))
    assert topOf(out, 1) == b"X-Filtered: yes\r\nSubject: s\r\n\r\n.dot\r\n"
    h.send(b"RETR 1\r\nTOP 1 99999999\r\n")
    assert h.upstream.received() == b""
    assert h.received() == (
        b"+OK %d octets\r\n" % len(out)
        + stuff(out)
        + b"+OK top of message follows\r\n"
        + stuff(out)
    )
    assert len(hook.seen) == 1


def test_topPartialMode() -> None:
    """
    In 'partial' mode TOP is relayed as TOP and filtered as a partial
    message, and not cached.
    """
    hook = AddHeader()
    h = Harness(hook=hook, chain={"top": "partial"})
    h.login()
    h.send(b"TOP 1 0\r\n")
    assert h.upstream.received() == b"UIDL 1\r\n"
    h.upstream.reply(b"+OK 1 u\r\n")
    assert h.upstream.received() == b"TOP 1 0\r\n"
    h.upstream.reply(b"+OK\r\nSubject: s\r\n\r\n.\r\n")
    context, message = hook.seen[0]
    assert context.partial and message == b"Subject: s\r\n\r\n"


def test_listAndStatReportFilteredSizes() -> None:
    """
    After the chain changed message 1, LIST (both forms) and STAT report the
    size RETR delivers; a deleted message no longer counts in STAT.
    """
    h = Harness(hook=AddHeader())
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    h.received()
    grown = len(b"X-Filtered: yes\r\n")
    h.send(b"LIST\r\n")
    h.upstream.reply(b"+OK 2 messages\r\n1 %d\r\n2 500\r\n.\r\n" % len(MESSAGE))
    assert h.received() == b"+OK 2 messages\r\n1 %d\r\n2 500\r\n.\r\n" % (len(MESSAGE) + grown)
    h.send(b"LIST 1\r\n")
    h.upstream.reply(b"+OK 1 %d\r\n" % len(MESSAGE))
    assert h.received() == b"+OK 1 %d\r\n" % (len(MESSAGE) + grown)
    h.send(b"STAT\r\n")
    h.upstream.reply(b"+OK 2 %d\r\n" % (len(MESSAGE) + 500))
    assert h.received() == b"+OK 2 %d\r\n" % (len(MESSAGE) + 500 + grown)
    h.send(b"DELE 1\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"STAT\r\n")
    h.upstream.reply(b"+OK 1 500\r\n")
    assert h.received() == b"+OK\r\n+OK 1 500\r\n"


def test_emptyListingAfterFilteringIsTerminated() -> None:
    """
    A LIST whose listing is empty (every message deleted) after the chain
    changed a message still ends with the terminating dot line, so the
    client does not wait for it forever.
    """
    h = Harness(hook=AddHeader())
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    h.send(b"DELE 1\r\n")
    assert h.upstream.received() == b"DELE 1\r\n"
    h.upstream.reply(b"+OK\r\n")
    h.received()
    h.send(b"LIST\r\n")
    assert h.upstream.received() == b"LIST\r\n"
    h.upstream.reply(b"+OK 0 messages\r\n.\r\n")
    assert h.received() == b"+OK 0 messages\r\n.\r\n"


def test_hookTemporaryFailure() -> None:
    """
    A hook failing with TemporaryFailure gives -ERR [SYS/TEMP] and nothing
    of the message.
    """
    h = Harness(hook=AddHeader(TemporaryFailure("virus scanner unavailable")))
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    assert h.received() == b"-ERR [SYS/TEMP] virus scanner unavailable\r\n"


def test_hookCrashFailsClosed() -> None:
    """
    A hook that raises unexpectedly does not crash the session nor deliver
    the unfiltered message: -ERR [SYS/TEMP], and the session goes on.
    """
    h = Harness(hook=AddHeader(RuntimeError("bug")))
    h.login()
    with capturedLogs() as events:
        h.send(b"RETR 1\r\n")
        serveRetr(h, 1)
    assert h.received() == b"-ERR [SYS/TEMP] the message could not be filtered\r\n"
    assert any("filtering RETR 1 failed" in formatEvent(e) for e in events)
    h.send(b"NOOP\r\n")
    assert h.upstream.received().endswith(b"NOOP\r\n")


def test_keepaliveDuringSlowChain() -> None:
    """
    When the chain is slow, the client gets '+OK' and a header line that
    grows every few seconds; the message then follows below that header,
    correctly stuffed and terminated, and LIST reports the delivered size.
    """
    hook = AddHeader(wait=True)
    h = Harness(hook=hook, chain={"keepaliveAfter": 10})
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    h.clock.advance(9)
    assert h.received() == b""
    h.clock.advance(1)
    assert h.received() == b"+OK message follows\r\nX-Popproxy-Wait: "
    h.clock.advance(5)
    h.clock.advance(5)
    assert h.received() == b".."
    hook.pending[0].callback(b".starts with a dot\r\n" + MESSAGE)
    delivered = b"X-Popproxy-Wait: ..\r\n.starts with a dot\r\n" + MESSAGE
    wire = b"+OK message follows\r\nX-Popproxy-Wait: .." + h.received()
    assert wire == b"+OK message follows\r\n" + stuff(delivered)
    h.clock.advance(60)
    assert h.received() == b""
    h.send(b"RETR 1\r\n")
    assert h.received() == b"+OK %d octets\r\n" % len(delivered) + stuff(delivered)


def test_failureAfterKeepaliveCutsConnection() -> None:
    """
    If the chain fails after keepalive bytes went out, the connection is
    closed without the final dot line: the client stores nothing and the
    message stays upstream.
    """
    hook = AddHeader(wait=True)
    h = Harness(hook=hook, chain={"keepaliveAfter": 1})
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    h.clock.advance(1)
    hook.pending[0].errback(TemporaryFailure("scanner died"))
    assert not h.received().endswith(b".\r\n")
    assert h.client.disconnecting
    assert b"QUIT" not in h.upstream.received()


def drain(h: Harness) -> None:
    """
    Act as a transport that wants more: pull from a registered pull
    producer until it unregisters.
    """
    for _ in range(100_000):
        producer = h.client.registeredProducer()
        if producer is None or h.client.streaming:
            return
        IPullProducer(producer).resumeProducing()
    raise AssertionError("the producer never finished")


BIG = b"Subject: big\r\n\r\n" + b"".join(b".line %d\r\n" % n for n in range(400))


class Unchanged(AddHeader):
    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        self.seen.append((context, message))
        return succeed(message)


def test_bigMessageSpooledAndStreamed() -> None:
    """
    Above the spool threshold a message is received into a temporary file,
    the hook still sees it whole, and a changed result is sent dot-stuffed
    in chunks; then the upstream throttle is back in place.
    """
    hook = AddHeader()
    h = Harness(hook=hook, chain={"spoolThreshold": 100})
    h.login()
    h.send(b"RETR 1\r\nNOOP\r\n")
    serveRetr(h, 1, BIG)
    assert hook.seen[0][1] == BIG
    drain(h)
    out = b"X-Filtered: yes\r\n" + BIG
    assert h.received() == b"+OK %d octets\r\n" % len(out) + stuff(out)
    assert h.upstream.received() == b"NOOP\r\n"
    assert h.client.streaming  # the throttle (a push producer) is registered again


def test_oversizeDeliveredUntouched() -> None:
    """
    Above max_size the message is not parsed: the hook never sees it and the
    client gets it untouched below an X-Popproxy-Unchecked header, streamed.
    """
    hook = Unchanged()
    h = Harness(hook=hook, chain={"spoolThreshold": 100, "maxSize": 1000})
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1, BIG)
    drain(h)
    header = b"X-Popproxy-Unchecked: too large to filter (%d octets)\r\n" % len(BIG)
    assert hook.seen == []
    assert h.received() == b"+OK %d octets\r\n" % (len(BIG) + len(header)) + stuff(header + BIG)


def test_oversizeTempfail() -> None:
    """
    With oversize = tempfail, a message above max_size is refused for now.
    """
    h = Harness(hook=Unchanged(), chain={"maxSize": 1000, "oversize": "tempfail"})
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1, BIG)
    assert h.received() == b"-ERR [SYS/TEMP] the message is too large to be filtered\r\n"


def test_closedSessionDropsItsCache() -> None:
    """
    A closed session lets go of its filtered messages at once (not only
    when the cycle collector runs).
    """
    h = Harness(hook=AddHeader())
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    assert h.session._mailbox.cachedIndexes
    h.client.dropped(Failure(Exception("client went away")))
    assert not h.session._mailbox.cachedIndexes and not h.session._mailbox.rewritesListings
    assert h.upstream.connection.onLost is None


def test_closedSessionLogsItsCachePeak() -> None:
    """
    A session that kept filtered messages says, as it closes, the most its
    cache held at once and its budget (what the benchmark reads to show the
    cache stays within [chain] cache_bytes under load).
    """
    hook = AddHeader()
    out = b"X-Filtered: yes\r\n" + MESSAGE
    h = Harness(hook=hook, chain={"cacheBytes": 2 * len(out) + 1})
    h.login()
    for index in (1, 2, 3):
        h.send(b"RETR %d\r\n" % index)
        serveRetr(h, index, uidl=b"u%d" % index)
    with capturedLogs() as events:
        h.client.dropped(Failure(Exception("client went away")))
    session = h.session.record.sessionId
    assert f"session {session} cache: peak {2 * len(out)} of {2 * len(out) + 1} bytes" in [
        formatEvent(e) for e in events
    ]


def test_sessionWithoutCachedMessagesLogsNoCacheLine() -> None:
    """
    A session that never kept a filtered message writes no cache line.
    """
    h = Harness(hook=AddHeader())
    h.login()
    with capturedLogs() as events:
        h.client.dropped(Failure(Exception("client went away")))
    assert not [e for e in events if " cache: " in formatEvent(e)]


def test_cacheKeepsWithinBudget() -> None:
    """
    The per-session cache drops the oldest filtered messages beyond its
    budget; a dropped one is fetched and filtered again, identically.
    """
    hook = AddHeader()
    out = b"X-Filtered: yes\r\n" + MESSAGE
    h = Harness(hook=hook, chain={"cacheBytes": 2 * len(out)})
    h.login()
    for index in (1, 2, 3):
        h.send(b"RETR %d\r\n" % index)
        serveRetr(h, index, uidl=b"u%d" % index)
    assert sorted(h.session._mailbox.cachedIndexes) == [2, 3]
    assert h.session._mailbox.cachedBytes == 2 * len(out)
    h.received()
    h.send(b"RETR 3\r\n")
    assert h.upstream.received() == b""
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1)
    assert h.received() == (b"+OK %d octets\r\n" % len(out) + stuff(out)) * 2
    assert len(hook.seen) == 4
