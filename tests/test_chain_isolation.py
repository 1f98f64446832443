"""
Tests for the filter chain with L{FilterThreads}: a filter's synchronous
call and the work it offloads run off the reactor thread, and a filter past
its timeout is stopped for real (its thread stops using the CPU and serves
the next message) while the chain applies its error policy.

Real threads; the chain's clock is a L{Clock} and the reactor thread is the
test's (see L{tests.test_filterthreads.Reactor}).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, LogEvent, capturedLogs, formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer, provider

from popproxy._chain import UNCHECKED_HEADER, ChainEntry, FilterChain
from popproxy._filterthreads import FilterThreads
from popproxy._quarantine import DirectoryQuarantine
from popproxy._retrieval import TemporaryFailure
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IQuarantine,
    RemovedPart,
    Rewrite,
    TempFail,
    Verdict,
)
from popproxy.message import Message
from tests.test_filterthreads import Reactor, Spinner

RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = FilterContext("RETR", 3, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def chainOf(
    reactor: Reactor, *entries: ChainEntry, size: int = 1, quarantine: Any = None
) -> FilterChain:
    threads = FilterThreads(reactor.callFromThread, reactor.clock, size=size)
    return FilterChain(list(entries), reactor.clock, quarantine, threads=threads)


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

    def __init__(self, offload: bool = False, swallow: bool = False) -> None:
        self.spinner = Spinner(swallow)
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
    assert re.fullmatch(
        re.escape(UNCHECKED_HEADER.encode()) + rb": spin timed out; error id [0-9a-f]{10}\r\n",
        out[: -len(RAW)],
    )
    assert out.endswith(RAW)
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
    assert chain.threads is not None
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


@implementer(IMessageFilter)
class CoroutineTagger:
    """
    A coroutine filter that answers at once, tagging the thread it ran in.
    """

    name = "tagger"

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        return Rewrite(message.withHeaderAdded("X-Coroutine", str(threading.get_ident())))


def test_entriesOfOneNameRunEachTheirOwnWay(reactor: Reactor) -> None:
    """
    Two entries may share a name (the configuration does not forbid it):
    each still runs its own way, the coroutine on the reactor thread, the
    synchronous call in a filter thread.
    """
    chain = chainOf(
        reactor, ChainEntry("tagger", Tagger()), ChainEntry("tagger", CoroutineTagger())
    )
    headers = Message.fromBytes(run(reactor, chain)).headers
    assert headers.get("X-Coroutine") == str(threading.get_ident())
    assert int(headers.get("X-Thread") or 0) not in (0, threading.get_ident())


@implementer(IMessageFilter)
class PromisesForever:
    """
    A synchronous filter that returns, from its filter thread, something
    that never completes: a Deferred, or a coroutine awaiting one.  The
    Deferred notes when it is waited on and when it is cancelled.
    """

    name = "promise"

    def __init__(self, coroutine: bool) -> None:
        self.coroutine = coroutine
        self.cancelled = False
        self.pending: Deferred[None] = Deferred(canceller=self._cancel)

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        return self._waiting() if self.coroutine else self.pending

    async def _waiting(self) -> Verdict:
        await self.pending
        return Deliver()

    def _cancel(self, deferred: Deferred[None]) -> None:
        self.cancelled = True


@pytest.mark.parametrize("coroutine", [False, True], ids=["deferred", "coroutine"])
def test_synchronousFilterReturningWhatNeverEndsTimesOut(reactor: Reactor, coroutine: bool) -> None:
    """
    A synchronous filter whose answer (a Deferred or a coroutine) never
    completes is cut at its timeout like any other: what it returned is
    cancelled and the 'tempfail' policy applies.
    """
    promising = PromisesForever(coroutine)
    chain = chainOf(reactor, ChainEntry("promise", promising, timeout=3.0))
    running = chain.processMessage(CONTEXT, RAW)
    # The chain waits on what the filter returned before its time is up:
    # the one filter thread's next call is answered after it came back.
    assert chain.threads is not None
    reactor.pump(chain.threads.run(lambda: None))
    with capturedLogs():
        reactor.clock.advance(3.0)
        failure = reactor.pump(running)
    assert failure.check(TemporaryFailure)
    assert "promise failed" in str(failure.value)
    assert promising.cancelled


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
    assert chain.threads is not None
    assert reactor.pump(chain.threads.run(threading.get_ident)) == spinner.thread
    assert spinner.cpuSpent(0.3) == 0


class RecordingQuarantine(DirectoryQuarantine):
    """
    A directory quarantine noting the thread its stores are called in; its
    files are written in a real thread pool, whose results reach the
    reactor thread through its C{callFromThread}.
    """

    def __init__(self, directory: Path, reactor: Reactor, pool: ThreadPool) -> None:
        self.storeThreads: list[int] = []
        self.startThreads: list[int] = []

        def runInThread(function: Callable[[], Any]) -> Deferred[Any]:
            self.startThreads.append(threading.get_ident())
            return deferToThreadPool(reactor, pool, function)  # type: ignore[arg-type]

        super().__init__(directory, runInThread)

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str]:
        self.storeThreads.append(threading.get_ident())
        return super().store(original, context, reason, plugin)

    def storeParts(
        self, message: bytes, parts: Sequence[RemovedPart], context: FilterContext, plugin: str = ""
    ) -> Deferred[list[str]]:
        self.storeThreads.append(threading.get_ident())
        return super().storeParts(message, parts, context, plugin)


@implementer(IMessageFilter)
class SynchronousKeeper:
    """
    A synchronous filter that keeps the body in the quarantine twice (with
    C{store} and C{storeParts}), logs, and shows the ids it got.
    """

    name = "keeper"

    def __init__(self) -> None:
        self.thread = 0

    def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        self.thread = threading.get_ident()
        body = message.raw[message.raw.index(b"\r\n\r\n") + 4 :]
        identifier = context.quarantine.store(body, context, "kept whole", self.name)
        [partId] = context.quarantine.storeParts(
            message.raw, [RemovedPart(body, (1,), "kept as a part")], context, self.name
        )
        context.log.info(
            "kept {identifier} and {partId} {text}",
            identifier=identifier,
            partId=partId,
            text="of\nnote",
        )
        edited = message.withHeaderAdded("X-Kept", f"{identifier} {partId}")
        return Rewrite(edited)


def test_synchronousFilterStoresAndLogsThroughTheReactorThread(
    reactor: Reactor, tmp_path: Path
) -> None:
    """
    A synchronous filter, in its filter thread, stores with the quarantine
    and logs: it gets the record ids at once (no Deferred), the records
    are on disk, and every store call, the start of the file writes and
    the log observer ran in the reactor thread, not the filter's; the log
    still escapes what it is given.
    """
    pool = ThreadPool(minthreads=1, maxthreads=2)
    pool.start()
    quarantine = RecordingQuarantine(tmp_path, reactor, pool)
    keeper = SynchronousKeeper()
    seen: list[tuple[int, LogEvent]] = []

    @provider(ILogObserver)
    def observer(event: LogEvent) -> None:
        seen.append((threading.get_ident(), event))

    globalLogPublisher.addObserver(observer)
    try:
        out = run(reactor, chainOf(reactor, ChainEntry("keeper", keeper), quarantine=quarantine))
    finally:
        globalLogPublisher.removeObserver(observer)
        pool.stop()
    identifier, partId = (Message.fromBytes(out).headers.get("X-Kept") or "").split()
    assert quarantine.original(quarantine.get(identifier)) == b"body\r\n"
    assert quarantine.get(partId).reason == "kept as a part"
    me = threading.get_ident()
    assert keeper.thread not in (0, me)
    assert quarantine.storeThreads == [me, me]
    assert quarantine.startThreads == [me, me]
    [(thread, event)] = [
        (thread, event)
        for thread, event in seen
        if event.get("log_namespace") == "popproxy.filter.keeper"
    ]
    assert thread == me
    assert formatEvent(event) == f"kept {identifier} and {partId} of\\x0anote"


@implementer(IMessageFilter)
class FailingStore:
    """
    A synchronous filter whose quarantine store fails: it sees the error
    as an exception and answers TempFail with it.
    """

    name = "failing"

    def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        try:
            context.quarantine.store(message.raw, context, "kept", self.name)
        except OSError as e:
            return TempFail(f"cannot keep it: {e.strerror}")
        return Deliver()


def test_synchronousFilterSeesAFailedStoreAsAnException(reactor: Reactor) -> None:
    """
    A store that fails raises its exception in the synchronous filter's
    thread (a sync filter gets no Deferred to look at), so the filter can
    answer for it.
    """

    @implementer(IQuarantine)
    class DiskFull:
        def store(
            self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
        ) -> Any:
            return fail(OSError(28, "No space left on device"))

    chain = chainOf(reactor, ChainEntry("failing", FailingStore()), quarantine=DiskFull())
    failure = run(reactor, chain)
    assert failure.check(TemporaryFailure)
    assert str(failure.value) == "cannot keep it: No space left on device"


def test_synchronousFilterSetsNoTimerFromItsThread(reactor: Reactor) -> None:
    """
    Work a synchronous filter offloads with context.runInThread runs at once
    in its filter thread, under the filter's own time limit: even when the
    work answers with a Deferred still waiting, no timer is set from the
    filter thread (the clock belongs to the reactor thread).
    """
    timers: list[int] = []
    callLater = reactor.clock.callLater

    def recordingCallLater(*args: Any, **kwargs: Any) -> Any:
        timers.append(threading.get_ident())
        return callLater(*args, **kwargs)

    reactor.clock.callLater = recordingCallLater  # type: ignore[method-assign]
    results: list[object] = []

    @implementer(IMessageFilter)
    class Offloading:
        name = "offloading"

        def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
            context.runInThread(lambda: 42).addCallback(results.append)
            results.append(context.runInThread(Deferred).called)
            return Deliver()

    assert run(reactor, chainOf(reactor, ChainEntry("offloading", Offloading()))) is RAW
    assert results == [42, False]
    assert timers and set(timers) == {threading.get_ident()}


def test_tooManyLostThreadsFailFiltersAtOnceUntilOneEnds(reactor: Reactor) -> None:
    """
    A filter that swallows its interruption costs a thread; once as many
    threads as the pool has are lost (here one), the next message's filter
    fails at once under its on_error policy, with a loud log, instead of a
    new thread being started; when the lost thread's work finally returns,
    filters run again.
    """
    spinning = Spinning(swallow=True)
    chain = chainOf(reactor, ChainEntry("spin", spinning, timeout=2.0, onError="deliver"))
    threads = chain.threads
    assert threads is not None
    tagged = chainOf(reactor, ChainEntry("tagger", Tagger(), onError="deliver"))
    tagged.threads = threads
    try:
        with capturedLogs():
            assert run(reactor, chain, advance=2.0).startswith(b"X-Popproxy-Unchecked: spin")
        running = threading.active_count()
        with capturedLogs() as events:
            reactor.clock.advance(2.0)
            out = run(reactor, tagged)
        assert re.fullmatch(
            re.escape(UNCHECKED_HEADER.encode()) + rb": tagger failed; error id [0-9a-f]{10}\r\n",
            out[: -len(RAW)],
        )
        assert out.endswith(RAW)
        assert threading.active_count() == running
        assert spinning.spinner.cpuSpent(0.2) > 0
        logged = [formatEvent(e) for e in events]
        assert any("every filter call fails at once" in line for line in logged)
        assert any(
            "filter tagger failed" in line and "written-off threads" in line for line in logged
        )
    finally:
        spinning.spinner.release.set()
    with capturedLogs() as events:
        reactor.pumpUntil(
            lambda: any("written-off filter thread ended" in formatEvent(e) for e in events)
        )
    assert threads.stillLost == 0
    out = run(reactor, tagged)
    # (The new thread may reuse the ended one's id.)
    assert Message.fromBytes(out).headers.get("X-Thread") not in (
        None,
        str(threading.get_ident()),
    )
