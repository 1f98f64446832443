"""
The TRANSACTION state's mail commands of one session: L{Transaction} checks
the arguments of C{STAT}, C{LIST}, C{UIDL}, C{DELE}, C{RSET}, C{NOOP},
C{RETR} and C{TOP} (refusing bad ones itself) and decides how each is
answered, as one frozen step for the session to run: relay the upstream's
answer as it arrives (L{Forward}), send what an exchange with the upstream
ends with (L{Exchange}: listings rewritten through the L{MailboxView}, a
deletion noted), or deliver what a retrieval through the filter chain
yields (L{Retrieve}, a L{RetrievalFlow}).

It is given the upstream link, the mailbox view, what the listener sets for
retrievals and narrow callables (reply to the client, write keepalive bytes,
whether the session is ending, the filter context of a retrieval), never the
session; running a step, and the send step that dot-stuffs, stay the
session's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from popproxy._commandsyntax import parseMessageNumbers, parseNumbers
from popproxy._config import ChainConfig
from popproxy._listings import ListingExchange
from popproxy._mailboxview import MailboxView
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._retrieval import MessageHook
from popproxy._retrievalflow import Delivery, Filtered, RetrievalFlow, RetrievalRequest
from popproxy._sessionsettings import SessionSettings
from popproxy._upstreamlink import UpstreamLink
from popproxy._verdicts import FilterContext

__all__ = ["Exchange", "Forward", "Retrieve", "Step", "Transaction"]


@dataclass(frozen=True, slots=True)
class Forward:
    """
    Send C{line} upstream and relay its answer to the client as it arrives.

    @ivar multiLine: the answer is a multi-line response.
    @ivar notesUids: the answer is a C{UIDL} one whose UIDs the mailbox view
        notes as they pass.
    """

    line: bytes
    multiLine: bool = False
    notesUids: bool = False


@dataclass(frozen=True, slots=True)
class Exchange:
    """
    Run C{answer} (it awaits upstream requests) and send the bytes it ends
    with.
    """

    answer: Coroutine[Any, Any, bytes]


@dataclass(frozen=True, slots=True)
class Retrieve:
    """
    Run C{delivery}, one retrieval through the chain, and send what it
    delivers (C{None}: the session ended meanwhile).
    """

    delivery: Coroutine[Any, Any, Delivery | None]


#: What a TRANSACTION command comes to once its arguments are accepted.
Step = Forward | Exchange | Retrieve

#: The filter context of one retrieval: its command, message number and
#: TOP line count, with the session's identity.
ContextFor = Callable[[str, int, "int | None"], FilterContext]


class Transaction:
    """
    One session's TRANSACTION commands.  Each command method (C{do_STAT}
    and so on, named as the session dispatches them) answers a refusal
    itself and returns C{None}, or returns the L{Step} to run.
    """

    def __init__(
        self,
        link: UpstreamLink,
        mailbox: MailboxView[Filtered],
        *,
        hook: MessageHook,
        chain: ChainConfig,
        clock: IReactorTime,
        reply: Callable[[bytes], None],
        write: Callable[[bytes], None],
        closing: Callable[[], bool],
        contextFor: ContextFor,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """
        @param hook: the filter chain; an inactive one relays retrievals.
        @param chain: the C{[chain]} settings (TOP mode, keepalive, spool).
        @param reply: sends one line (without CRLF) to the client.
        @param write: sends a retrieval's keepalive bytes to the client.
        @param closing: whether the session has ended meanwhile.
        @param contextFor: the filter context of a retrieval.
        @param metrics: counts the retrievals relayed past the chain.
        """
        self._link = link
        self._mailbox = mailbox
        self._listings = ListingExchange(link, mailbox)
        self._hook = hook
        self._chain = chain
        self._clock = clock
        self._reply = reply
        self._write = write
        self._closing = closing
        self._contextFor = contextFor
        self._metrics = metrics

    @classmethod
    def forSession(
        cls,
        settings: SessionSettings,
        link: UpstreamLink,
        mailbox: MailboxView[Filtered],
        *,
        reply: Callable[[bytes], None],
        write: Callable[[bytes], None],
        closing: Callable[[], bool],
        contextFor: ContextFor,
    ) -> Transaction:
        """
        A session's transaction over its listener's chain, clock and
        metrics.
        """
        return cls(
            link,
            mailbox,
            hook=settings.hook,
            chain=settings.chain,
            clock=settings.clock,
            metrics=settings.metrics,
            reply=reply,
            write=write,
            closing=closing,
            contextFor=contextFor,
        )

    def do_STAT(self, arguments: bytes) -> Step | None:
        if self._numbers(parseNumbers(arguments, 0, 0)) is None:
            return None
        if self._mailbox.rewritesListings:
            return Exchange(self._listings.stat())
        return Forward(b"STAT")

    def do_NOOP(self, arguments: bytes) -> Step | None:
        if self._numbers(parseNumbers(arguments, 0, 0)) is None:
            return None
        return Forward(b"NOOP")

    def do_RSET(self, arguments: bytes) -> Step | None:
        if self._numbers(parseNumbers(arguments, 0, 0)) is None:
            return None
        self._mailbox.reset()
        return Forward(b"RSET")

    def do_LIST(self, arguments: bytes) -> Step | None:
        numbers = self._numbers(parseMessageNumbers(arguments, 0, 1))
        if numbers is None:
            return None
        if not self._mailbox.rewritesListings:
            return Forward(b"LIST %d" % numbers[0] if numbers else b"LIST", not numbers)
        if numbers:
            # Report the size RETR delivers for messages the chain changed.
            return Exchange(self._listings.listLine(numbers[0]))
        return Exchange(self._listings.listing())

    def do_UIDL(self, arguments: bytes) -> Step | None:
        numbers = self._numbers(parseMessageNumbers(arguments, 0, 1))
        if numbers is None:
            return None
        # With a chain, most clients list UIDs before they retrieve: they
        # are noted, and the chain's context needs no "UIDL n" per message.
        line = b"UIDL %d" % numbers[0] if numbers else b"UIDL"
        return Forward(line, not numbers, notesUids=self._hook.active)

    def do_DELE(self, arguments: bytes) -> Step | None:
        numbers = self._numbers(parseMessageNumbers(arguments, 1, 1))
        if numbers is None:
            return None
        return Exchange(self._listings.delete(numbers[0]))

    def do_RETR(self, arguments: bytes) -> Step | None:
        numbers = self._numbers(parseMessageNumbers(arguments, 1, 1))
        if numbers is None:
            return None
        return self._retrieval(b"RETR %d" % numbers[0], "RETR", numbers[0], None)

    def do_TOP(self, arguments: bytes) -> Step | None:
        numbers = self._numbers(parseMessageNumbers(arguments, 2, 2))
        if numbers is None:
            return None
        index, lines = numbers
        return self._retrieval(b"TOP %d %d" % (index, lines), "TOP", index, lines)

    def _numbers(self, parsed: list[int] | bytes) -> list[int] | None:
        """
        Parsed command arguments, or C{None} once the refusal is sent.
        """
        if isinstance(parsed, bytes):
            self._reply(parsed)
            return None
        return parsed

    def _retrieval(self, line: bytes, command: str, index: int, lines: int | None) -> Step:
        """
        A retrieval relayed as it is when no filter runs, else through the
        chain.
        """
        if not self._hook.active:
            self._metrics.retrieved(command, "relayed")
            return Forward(line, multiLine=True)
        flow = RetrievalFlow(
            RetrievalRequest(command, index, lines, self._contextFor(command, index, lines)),
            hook=self._hook,
            mailbox=self._mailbox,
            chain=self._chain,
            upstream=self._link,
            write=self._write,
            clock=self._clock,
            closing=self._closing,
            metrics=self._metrics,
        )
        return Retrieve(flow.run())
