"""
Tests for popproxy._transaction: the TRANSACTION state's mail commands of
one session, checked and turned into steps.  The upstream is an
L{UpstreamLink} over a fake send step that answers from a script and notes
each line; the mailbox view is a real one; the chain is a fake hook.  What
is checked is what the client is told when the arguments are refused (and
that nothing then reaches the upstream), which step each command comes to,
and what running an exchange or a retrieval step gives the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from popproxy._config import ChainConfig
from popproxy._framing import StatusLine, stuff
from popproxy._mailboxview import MailboxView
from popproxy._metrics import Metrics
from popproxy._retrievalflow import TOP_STATUS, Filtered, Spool, WholeMessage
from popproxy._transaction import Exchange, Forward, Retrieve, Step, Transaction
from popproxy._upstreamlink import Collector, UpstreamLink
from popproxy._verdicts import FilterContext

MESSAGE = b"Subject: hi\r\nFrom: a@example.com\r\n\r\nline 1\r\n.dotted\r\nline 2\r\n"


@dataclass
class FakeUpstream:
    """
    The session's send step: answers each line at once from C{script}
    (status line, and for a multi-line answer its unstuffed body), and
    notes what was sent.
    """

    script: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    sent: list[tuple[bytes, bool]] = field(default_factory=list)

    def send(self, line: bytes, multiLine: bool, handler: Collector | Spool) -> None:
        self.sent.append((line, multiLine))
        status, body = self.script.get(line, (b"-ERR not scripted", b""))
        handler.statusReceived(StatusLine(status))
        if multiLine and status.startswith(b"+OK"):
            handler.bodyReceived(stuff(body))
        handler.responseFinished()


@dataclass
class FakeHook:
    """
    A chain that tags the subject of every message; notes its contexts.
    """

    active: bool = True
    contexts: list[FilterContext] = field(default_factory=list)

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        self.contexts.append(context)
        return succeed(message.replace(b"Subject: ", b"Subject: [checked] ", 1))


class FakeMetrics(Metrics):
    """
    Notes the retrievals counted past the chain.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counted: list[tuple[str, str]] = []

    def retrieved(self, command: str, outcome: str) -> None:
        self.counted.append((command, outcome))


class Rig:
    """
    A Transaction over the fakes, with what it replied and the contexts it
    asked for noted.
    """

    def __init__(self, hookActive: bool = True, top: str = "full") -> None:
        self.upstream = FakeUpstream()
        self.mailbox: MailboxView[Filtered] = MailboxView(1 << 20)
        self.hook = FakeHook(active=hookActive)
        self.metrics = FakeMetrics()
        self.replies: list[bytes] = []
        self.written: list[bytes] = []
        self.asked: list[tuple[str, int, int | None]] = []
        self.transaction = Transaction(
            UpstreamLink(self.upstream.send),
            self.mailbox,
            hook=self.hook,
            chain=ChainConfig(top=top),
            clock=Clock(),
            reply=self.replies.append,
            write=self.written.append,
            closing=lambda: False,
            contextFor=self.contextFor,
            metrics=self.metrics,
        )

    def contextFor(self, command: str, index: int, lines: int | None) -> FilterContext:
        self.asked.append((command, index, lines))
        return FilterContext(
            command=command,
            index=index,
            lines=lines,
            user="alice",
            client="192.0.2.7:50000",
            upstream="127.0.0.1:1110",
            session="1f",
        )

    def command(self, name: str, arguments: bytes = b"") -> Step | None:
        return getattr(self.transaction, f"do_{name}")(arguments)

    def rewriting(self) -> None:
        """
        Message 1 went through the chain and shrank from 1000 to 400 octets.
        """
        self.mailbox.remember(1, Filtered(b"x" * 400, None), 400, 1000)


def run(step: Step | None) -> object:
    """
    What an exchange or retrieval step ends with (the fake answers at once).
    """
    assert isinstance(step, Exchange | Retrieve)
    coroutine = step.answer if isinstance(step, Exchange) else step.delivery
    results: list[object] = []
    Deferred.fromCoroutine(coroutine).addCallback(results.append)
    (result,) = results
    return result


@pytest.mark.parametrize(
    ("name", "arguments", "refusal"),
    [
        ("STAT", b"1", b"-ERR invalid arguments"),
        ("NOOP", b"x", b"-ERR invalid arguments"),
        ("RSET", b"1 2", b"-ERR invalid arguments"),
        ("LIST", b"1 2", b"-ERR invalid arguments"),
        ("LIST", b"0", b"-ERR no such message"),
        ("UIDL", b"abc", b"-ERR invalid arguments"),
        ("DELE", b"", b"-ERR invalid arguments"),
        ("DELE", b"0", b"-ERR no such message"),
        ("RETR", b"", b"-ERR invalid arguments"),
        ("RETR", b"1234567890", b"-ERR invalid arguments"),
        ("TOP", b"1", b"-ERR invalid arguments"),
        ("TOP", b"0 5", b"-ERR no such message"),
        ("TOP", b"1 -5", b"-ERR invalid arguments"),
    ],
)
def test_badArgumentsAreRefusedHere(name: str, arguments: bytes, refusal: bytes) -> None:
    """
    A command with arguments RFC 1939 does not allow is refused with one
    line to the client; it comes to no step and nothing reaches the
    upstream.
    """
    rig = Rig()
    assert rig.command(name, arguments) is None
    assert rig.replies == [refusal]
    assert rig.upstream.sent == []


@pytest.mark.parametrize(
    ("name", "arguments", "step"),
    [
        ("STAT", b"", Forward(b"STAT")),
        ("NOOP", b"", Forward(b"NOOP")),
        ("RSET", b"", Forward(b"RSET")),
        ("LIST", b"", Forward(b"LIST", multiLine=True)),
        ("LIST", b"2", Forward(b"LIST 2")),
        ("DELE", b"2", None),
    ],
)
def test_relayedWhileNothingWasFiltered(name: str, arguments: bytes, step: Forward | None) -> None:
    """
    Until a message went through the chain, STAT, NOOP, RSET and LIST are
    relayed as the upstream answers them; DELE always goes through an
    exchange (it notes the deletion).
    """
    rig = Rig()
    got = rig.command(name, arguments)
    if step is None:
        assert isinstance(got, Exchange)
        got.answer.close()
    else:
        assert got == step
    assert rig.replies == []


def test_uidlNotesUidsOnlyWithAChain() -> None:
    """
    UIDL is relayed; with a chain its UIDs are noted as they pass (a whole
    listing, or one message's), without one they are not.
    """
    assert Rig().command("UIDL") == Forward(b"UIDL", multiLine=True, notesUids=True)
    assert Rig().command("UIDL", b"3") == Forward(b"UIDL 3", notesUids=True)
    assert Rig(hookActive=False).command("UIDL") == Forward(b"UIDL", multiLine=True)


def test_listingsRewrittenOnceAMessageWasFiltered() -> None:
    """
    Once a message went through the chain, STAT and LIST are answered from
    an exchange that reports the size RETR delivers.
    """
    rig = Rig()
    rig.rewriting()
    rig.upstream.script = {
        b"STAT": (b"+OK 2 3000", b""),
        b"LIST 1": (b"+OK 1 1000", b""),
        b"LIST": (b"+OK 2 messages", b"1 1000\r\n2 2000\r\n"),
    }
    assert run(rig.command("STAT")) == b"+OK 2 2400\r\n"
    assert run(rig.command("LIST", b"1")) == b"+OK 1 400\r\n"
    assert run(rig.command("LIST")) == b"+OK 2 messages\r\n1 400\r\n2 2000\r\n.\r\n"
    assert rig.upstream.sent == [(b"STAT", False), (b"LIST 1", False), (b"LIST", True)]


def test_deleLeavesTheListingsAndRsetBringsItBack() -> None:
    """
    A deletion the upstream accepted leaves the rewritten STAT; RSET
    forgets the deletions before it is relayed.
    """
    rig = Rig()
    rig.rewriting()
    rig.upstream.script = {b"DELE 1": (b"+OK deleted", b""), b"STAT": (b"+OK 1 2000", b"")}
    assert run(rig.command("DELE", b"1")) == b"+OK deleted\r\n"
    assert run(rig.command("STAT")) == b"+OK 1 2000\r\n"
    assert rig.command("RSET") == Forward(b"RSET")
    rig.upstream.script[b"STAT"] = (b"+OK 2 3000", b"")
    assert run(rig.command("STAT")) == b"+OK 2 2400\r\n"


@pytest.mark.parametrize(
    ("name", "arguments", "line", "command"),
    [("RETR", b"3", b"RETR 3", "RETR"), ("TOP", b"3 0", b"TOP 3 0", "TOP")],
)
def test_withoutAChainRetrievalsAreRelayed(
    name: str, arguments: bytes, line: bytes, command: str
) -> None:
    """
    With no filter to run, RETR and TOP are relayed as they arrive and
    counted as relayed; no filter context is made.
    """
    rig = Rig(hookActive=False)
    assert rig.command(name, arguments) == Forward(line, multiLine=True)
    assert rig.metrics.counted == [(command, "relayed")]
    assert rig.asked == []


def test_retrThroughTheChain() -> None:
    """
    With a chain, RETR comes to a retrieval whose delivery is the message
    the chain returned; the chain is told the session's context for that
    message, with its UID.
    """
    rig = Rig()
    rig.upstream.script = {
        b"UIDL 2": (b"+OK 2 uid-two", b""),
        b"RETR 2": (b"+OK 70 octets", MESSAGE),
    }
    step = rig.command("RETR", b"2")
    assert isinstance(step, Retrieve)
    delivery = run(step)
    assert isinstance(delivery, WholeMessage)
    assert delivery.message.startswith(b"Subject: [checked] hi\r\n")
    assert rig.asked == [("RETR", 2, None)]
    (context,) = rig.hook.contexts
    assert (context.user, context.uidl, context.partial) == ("alice", "uid-two", False)


@pytest.mark.parametrize(
    ("mode", "fetched", "partial"), [("full", b"RETR 2", False), ("partial", b"TOP 2 0", True)]
)
def test_topThroughTheChain(mode: str, fetched: bytes, partial: bool) -> None:
    """
    With a chain, TOP comes to a retrieval: in C{full} mode the whole
    message is fetched and filtered (not partial) and the headers it
    delivers are those RETR delivers; in C{partial} mode the chain sees the
    upstream's TOP answer, marked partial.
    """
    rig = Rig(top=mode)
    rig.upstream.script = {
        b"UIDL 2": (b"+OK 2 uid-two", b""),
        fetched: (b"+OK", MESSAGE),
    }
    step = rig.command("TOP", b"2 0")
    assert isinstance(step, Retrieve)
    delivery = run(step)
    assert isinstance(delivery, WholeMessage)
    assert delivery.message.startswith(b"Subject: [checked] hi\r\nFrom: a@example.com\r\n\r\n")
    if mode == "full":
        assert delivery.status == TOP_STATUS
        assert delivery.message == b"Subject: [checked] hi\r\nFrom: a@example.com\r\n\r\n"
    assert (b"UIDL 2", False) in rig.upstream.sent and (fetched, True) in rig.upstream.sent
    assert rig.asked == [("TOP", 2, 0)]
    assert rig.hook.contexts[0].partial is partial
