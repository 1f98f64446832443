"""
Tests for the filter chain with L{FilterThreads}: a filter's synchronous
call and the work it offloads run off the reactor thread, and a filter past
its timeout is stopped for real (its thread stops using the CPU and serves
the next message) while the chain applies its error policy.

Real threads; the chain's clock is a L{Clock} and the reactor thread is the
test's (see L{tests.test_filterthreads.Reactor}).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from twisted.logger import capturedLogs
from zope.interface import implementer

from popproxy._chain import UNCHECKED_HEADER, ChainEntry, FilterChain
from popproxy._filterthreads import FilterThreads
from popproxy._retrieval import RetrievalContext, TemporaryFailure
from popproxy.interfaces import Deliver, FilterContext, IMessageFilter, Rewrite, Verdict
from popproxy.message import Message
from tests.test_filterthreads import Reactor, Spinner

RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = RetrievalContext("RETR", 3, None, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def chainOf(reactor: Reactor, *entries: ChainEntry, size: int = 1) -> FilterChain:
    threads = FilterThreads(reactor.callFromThread, reactor.clock, size=size)
    return FilterChain(list(entries), reactor.clock, threads=threads)


def run(reactor: Reactor, chain: FilterChain, advance: float = 0.0) -> Any:
    """
    The chain's result for one RETR of L{RAW}; after the filters have had
    the time to start, the clock jumps C{advance} seconds (past a timeout).
    """
    running = chain.processMessage(CONTEXT, RAW)
    if advance:
        for entry in chain.entries:
            reactor.pumpUntil(entry.filter.spinner.started.is_set)
        reactor.clock.advance(advance)
    return reactor.pump(running)


@implementer(IMessageFilter)
class Tagger:
    """
    A synchronous filter that tags the message with the thread it ran in.
    """

    name = "tagger"

    def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        return Rewrite(message.withHeaderAdded("X-Thread", str(threading.get_ident())))


@implementer(IMessageFilter)
class Spinning:
    """
    A filter stuck in a pure-Python loop: in its synchronous call, or in
    work it offloads with C{context.runInThread} from a coroutine.
    """

    name = "spin"

    def __init__(self, offload: bool = False) -> None:
        self.spinner = Spinner()
        self.offload = offload

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        if self.offload:
            return self._offloaded(context)
        self.spinner()
        return Deliver()

    async def _offloaded(self, context: FilterContext) -> Verdict:
        await context.runInThread(self.spinner)
        return Deliver()


@implementer(IMessageFilter)
class SpinningCoroutine:
    """
    A coroutine filter whose offloaded work loops.
    """

    name = "spin"

    def __init__(self) -> None:
        self.spinner = Spinner()
        self.reactorThread = 0

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        self.reactorThread = threading.get_ident()
        await context.runInThread(self.spinner)
        return Deliver()


def test_synchronousFilterRunsOffTheReactorThread(reactor: Reactor) -> None:
    """
    A filter's synchronous filterMessage is called in a filter thread, not
    in the reactor's.
    """
    out = run(reactor, chainOf(reactor, ChainEntry("tagger", Tagger())))
    thread = int(Message.fromBytes(out).headers.get("X-Thread") or 0)
    assert thread not in (0, threading.get_ident())


def test_loopingSynchronousFilterIsStoppedAtItsTimeout(reactor: Reactor) -> None:
    """
    A synchronous filterMessage that never returns: at its timeout the
    'deliver' policy applies (a fixed phrase in the header), its thread
    stops using the CPU, and the chain's one filter thread serves the next
    message.
    """
    spinning = Spinning()
    chain = chainOf(reactor, ChainEntry("spin", spinning, timeout=2.0, onError="deliver"), size=1)
    with capturedLogs():
        out = run(reactor, chain, advance=2.0)
    assert out == UNCHECKED_HEADER.encode() + b": spin timed out\r\n" + RAW
    assert spinning.spinner.cpuSpent(0.3) == 0
    tagged = chainOf(reactor, ChainEntry("tagger", Tagger()))
    tagged.threads = chain.threads
    out = run(reactor, tagged)
    assert Message.fromBytes(out).headers.get("X-Thread") == str(spinning.spinner.thread)


@pytest.mark.parametrize("kind", [Spinning, SpinningCoroutine])
def test_loopingOffloadedWorkIsStoppedAtTheTimeout(reactor: Reactor, kind: type) -> None:
    """
    Work a filter offloads with context.runInThread (from a coroutine, or
    from a Deferred a synchronous call returns) that never ends: at the
    filter's timeout the 'tempfail' policy applies and the work's thread
    stops using the CPU and is free again.
    """
    spinning = kind(offload=True) if kind is Spinning else kind()
    chain = chainOf(reactor, ChainEntry("spin", spinning, timeout=5.0), size=1)
    with capturedLogs():
        failure = run(reactor, chain, advance=5.0)
    assert failure.check(TemporaryFailure)
    assert "spin failed" in str(failure.value)
    assert spinning.spinner.cpuSpent(0.3) == 0
    assert reactor.pump(chain.threads.run(threading.get_ident)) == spinning.spinner.thread


def test_coroutineFilterRunsOnTheReactorThread(reactor: Reactor) -> None:
    """
    A coroutine filter runs on the reactor thread (it awaits I/O the
    reactor does); only what it offloads goes to a filter thread.
    """
    spinning = SpinningCoroutine()
    chain = chainOf(reactor, ChainEntry("spin", spinning, timeout=1.0))
    with capturedLogs():
        run(reactor, chain, advance=1.0)
    assert spinning.reactorThread == threading.get_ident()
    assert spinning.spinner.thread != threading.get_ident()


def test_workNotWaitedForIsStoppedWithItsFilter(reactor: Reactor) -> None:
    """
    Work a filter offloads and does not wait for is stopped when the
    filter has answered: nothing a filter started keeps using the CPU.
    """
    spinner = Spinner()

    @implementer(IMessageFilter)
    class FireAndForget:
        name = "forget"

        async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
            context.runInThread(spinner)
            # (Waiting here blocks the test, not a real reactor.)
            spinner.started.wait(10)
            return Deliver()

    chain = chainOf(reactor, ChainEntry("forget", FireAndForget()), size=1)
    assert run(reactor, chain) is RAW
    assert reactor.pump(chain.threads.run(threading.get_ident)) == spinner.thread
    assert spinner.cpuSpent(0.3) == 0
