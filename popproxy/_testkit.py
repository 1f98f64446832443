"""
Run one filter, or the chain a configuration file describes, on one message
without sockets and without a running reactor, and say what each filter
answered.

This is the test support plugin authors get from L{popproxy.testing}
(L{makeContext}, L{loadPlugin}, L{runFilter}, L{runChain}) and the engine
of the offline runner C{popproxy-filter} (L{loadObservedChain}, which runs
the daemon's own L{FilterChain} and reads each filter's answer from the
chain's L{ChainOutcome}, with what goes to the quarantine recorded).  It
needs nothing beyond popproxy's own dependencies.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from popproxy._assembly import buildChain, configuredQuarantine, reactorThreads
from popproxy._chain import FilterChain, verdictProblem
from popproxy._config import Config, loadConfig
from popproxy._outcome import FilterStep
from popproxy._plugins import PluginError, loadFilter
from popproxy._quarantine import partRecordId, storeRecordId
from popproxy.interfaces import (
    FilterContext,
    IMessageFilter,
    IPartQuarantine,
    IQuarantine,
    RemovedPart,
    Replace,
    Rewrite,
    TempFail,
    Verdict,
)
from popproxy.message import Message

__all__ = [
    "ChainResult",
    "FilterOutcome",
    "FilterResult",
    "InlineReactor",
    "MemoryQuarantine",
    "ObservedChain",
    "PluginError",
    "QuarantinedMessage",
    "VerdictPending",
    "loadObservedChain",
    "loadPlugin",
    "makeContext",
    "runChain",
    "runFilter",
    "runInline",
]

T = TypeVar("T")


class VerdictPending(Exception):
    """
    The filter (or chain) did not answer without a running reactor: it
    waits for something a test has to fire, or for real I/O or a thread.
    """


# The quarantine, in memory.


@dataclass(frozen=True)
class QuarantinedMessage:
    """
    What was put in the quarantine: a whole message a L{Replace} verdict
    replaced, or a part a filter stored before removing it.

    @ivar plugin: the name of the filter that removed it.
    """

    identifier: str
    original: bytes = field(repr=False)
    context: FilterContext
    reason: str
    plugin: str = ""


@implementer(IPartQuarantine)
class MemoryQuarantine:
    """
    A quarantine that only remembers what it was given, under the ids a
    directory quarantine would give (derived from the message, see
    docs/quarantine.md) and, as there, once: storing the same thing of
    the same message again adds nothing.  For tests, and for trying a
    policy without writing to the real quarantine.
    """

    def __init__(self) -> None:
        self.stored: list[QuarantinedMessage] = []

    def store(self, original: bytes, context: FilterContext, reason: str, plugin: str = "") -> str:
        identifier = storeRecordId(original, context, reason, plugin)
        if all(item.identifier != identifier for item in self.stored):
            self.stored.append(QuarantinedMessage(identifier, original, context, reason, plugin))
        return identifier

    def storeParts(
        self,
        message: bytes,
        parts: Sequence[RemovedPart],
        context: FilterContext,
        plugin: str = "",
    ) -> list[str]:
        kept = {item.identifier for item in self.stored}
        identifiers = []
        for part in parts:
            identifier = partRecordId(message, part, context, plugin)
            if identifier not in kept:
                kept.add(identifier)
                self.stored.append(
                    QuarantinedMessage(identifier, part.original, context, part.reason, plugin)
                )
            identifiers.append(identifier)
        return identifiers


# Contexts and plugins.


def makeContext(**overrides: Any) -> FilterContext:
    """
    A L{FilterContext} for a C{RETR} of message 1 by C{alice@example.com},
    with a fresh L{MemoryQuarantine} (what a filter stores there is in
    C{context.quarantine.stored}), and any field replaced by a keyword
    argument: C{makeContext(command="TOP", partial=True)},
    C{makeContext(quarantine=None)}.
    """
    defaults: dict[str, Any] = {
        "command": "RETR",
        "index": 1,
        "uidl": "uidl-1",
        "user": "alice@example.com",
        "client": "192.0.2.10:50000",
        "upstream": "tcp:pop.example.com:110",
        "session": "test",
        "quarantine": MemoryQuarantine(),
        "runInThread": runInline,
    }
    defaults.update(overrides)
    return FilterContext(**defaults)


def loadPlugin(
    plugin: str | Path,
    settings: Mapping[str, Any] | None = None,
    *,
    base: Path | None = None,
    pluginDirs: tuple[Path, ...] = (),
    reactor: Any = None,
) -> Any:
    """
    Load a filter exactly as a C{[[filter]]} entry of the configuration
    does: C{plugin} is a bare name (looked up in C{pluginDirs}, then among
    the shipped plugins), a path to a C{.py} file, or C{"module:object"};
    C{settings} is the entry's C{settings} table.

    @param base: what relative paths are relative to (the configuration
        file's directory in the daemon; here the current directory by
        default).
    @param reactor: what a C{makeFilter(settings, reactor)} factory gets:
        by default a fresh L{InlineReactor} (a L{Clock} that only moves
        when told, with work "in threads" done at once), so nothing waits
        for a running reactor.
    @raise PluginError: the plugin cannot be found or loaded, rejects its
        settings, or does not provide L{IMessageFilter}.
    """
    if reactor is None:
        reactor = InlineReactor()
    return loadFilter(str(plugin), settings or {}, base or Path.cwd(), pluginDirs, reactor)


# One filter.


@dataclass(frozen=True)
class FilterResult:
    """
    What one filter answered about one message.

    @ivar verdict: the verdict itself.
    @ivar output: what the client would receive if this were the only
        filter: the original octets for L{Deliver}, the rewritten message
        for L{Rewrite}, the notice for L{Replace} (without the quarantine
        id header the chain adds), C{None} for L{TempFail}.
    @ivar quarantined: what the filter itself stored in the context's
        L{MemoryQuarantine} (parts it removed), if it is one.  (The
        original a L{Replace} asks for is stored by the chain, not here.)
    """

    verdict: Verdict
    output: bytes | None = field(repr=False)
    quarantined: tuple[QuarantinedMessage, ...] = ()

    @property
    def message(self) -> Message | None:
        """
        L{output} as a L{Message} to read headers and parts from.
        """
        return None if self.output is None else Message.fromBytes(self.output)


def runFilter(
    filter: Any, raw: bytes | Message, context: FilterContext | None = None
) -> FilterResult:
    """
    Ask C{filter} about one message, as the chain would, and wait for its
    verdict without a reactor: it may answer directly, with a Deferred or
    from a coroutine, as long as nothing it waits for needs a running
    reactor (a filter offloading work with C{deferToThread} should let a
    test pass L{runInline} instead).

    Errors are not hidden: an exception from the filter propagates, so a
    test sees its traceback.

    @param raw: the message octets, or a L{Message}.
    @param context: by default L{makeContext}C{()}.
    @raise zope.interface.Invalid: C{filter} does not provide
        L{IMessageFilter} (what loading it from the configuration checks).
    @raise VerdictPending: the filter has not answered.
    @raise TypeError: it answered something that is not a verdict.
    """
    verifyObject(IMessageFilter, filter)
    message = raw if isinstance(raw, Message) else Message.fromBytes(raw)
    context = context or makeContext()
    memory = context.quarantine if isinstance(context.quarantine, MemoryQuarantine) else None
    before = len(memory.stored) if memory is not None else 0
    answer = settle(
        maybeDeferred(_callFilter, filter, message, context),
        what=f"filter {getattr(filter, 'name', filter)!r}",
    )
    stored = tuple(memory.stored[before:]) if memory is not None else ()
    problem = verdictProblem(answer)
    if problem is not None:
        raise TypeError(f"filter {filter.name!r} {problem}")
    if isinstance(answer, Rewrite):
        output: bytes | None = answer.message.toBytes()
    elif isinstance(answer, Replace):
        output = answer.notice.toBytes()
    elif isinstance(answer, TempFail):
        output = None
    else:
        output = message.toBytes()
    return FilterResult(answer, output, stored)


def _callFilter(filter: Any, message: Message, context: FilterContext) -> Any:
    result = filter.filterMessage(message, context)
    if inspect.isawaitable(result) and not isinstance(result, Deferred):
        return ensureDeferred(result)  # type: ignore[arg-type]
    return result


def settle(deferred: Deferred[T], clock: Clock | None = None, what: str = "the work") -> T:
    """
    The result of C{deferred}, which must come without a running reactor.

    @param clock: if given, time is advanced from one delayed call to the
        next until C{deferred} has a result (so the chain's timeouts fire
        as they would in the daemon).
    @raise VerdictPending: C{deferred} still has no result; it is cancelled.
    """
    results: list[Any] = []
    deferred.addBoth(results.append)
    steps = 0
    # Bounded, in case something keeps rescheduling itself on the clock.
    while not results and clock is not None and clock.getDelayedCalls() and steps < 100_000:
        due = min(call.getTime() for call in clock.getDelayedCalls())
        clock.advance(max(0.0, due - clock.seconds()))
        steps += 1
    if not results:
        deferred.cancel()
        raise VerdictPending(
            f"{what} did not answer without a running reactor: it waits for "
            "something nothing in this test fires (real I/O, a thread, another "
            "Deferred); give it a runner or a clock the test controls"
        )
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


# Work "in a thread", done inline.


def runInline(function: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    A stand-in for C{twisted.internet.threads.deferToThread} that runs
    C{function} at once, in the caller's thread: give it to a filter that
    offloads CPU-heavy work, so a test needs no reactor.
    """
    return maybeDeferred(function, *args, **kwargs)


class _InlineThreadPool:
    """
    The part of L{twisted.python.threadpool.ThreadPool} that
    C{deferToThreadPool} uses, running each call at once.
    """

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object],
        function: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        try:
            result = function(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def callInThread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        function(*args, **kwargs)


class InlineReactor(Clock):
    """
    What the daemon's filter chain needs from a reactor, without threads:
    time is a L{Clock} that only moves when told, and work sent "to a
    thread" (the parse of big messages, quarantine writes) runs at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = _InlineThreadPool()

    def getThreadPool(self) -> _InlineThreadPool:
        return self._pool

    def callFromThread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        function(*args, **kwargs)

    def callInThread(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        function(*args, **kwargs)


# A whole configured chain, observed.


#: What one filter of the chain answered (L{FilterStep}: its C{name},
#: C{verdict}, C{error}, C{onError}, C{kind} and C{note}), read from the
#: chain's own outcome.
FilterOutcome = FilterStep


@dataclass(frozen=True)
class ChainResult:
    """
    What the configured chain made of one message.

    @ivar output: the octets the client would receive (C{original} itself
        when nothing changed), or C{None} after a temporary failure.
    @ivar tempFailReason: the text after C{-ERR [SYS/TEMP]}, if it failed.
    @ivar filters: each filter that ran, in order (those after a temporary
        failure did not run).
    @ivar quarantined: what went to the quarantine: originals replaced by
        L{Replace} verdicts, and parts filters stored before removing them.
    """

    original: bytes = field(repr=False)
    output: bytes | None = field(repr=False)
    tempFailReason: str | None
    filters: tuple[FilterOutcome, ...]
    quarantined: tuple[QuarantinedMessage, ...] = ()

    @property
    def changed(self) -> bool:
        """
        The client would receive other octets than the original.
        """
        return self.output is not None and self.output != self.original

    @property
    def message(self) -> Message | None:
        return None if self.output is None else Message.fromBytes(self.output)


@dataclass
class _Observation:
    """
    What has gone to the quarantine in one run so far.
    """

    quarantined: list[QuarantinedMessage] = field(default_factory=list)


@implementer(IPartQuarantine)
class _ObservedQuarantine:
    """
    A quarantine, wrapped to record what it kept.
    """

    def __init__(self, quarantine: Any, observations: dict[str, _Observation]) -> None:
        self._quarantine = quarantine
        self._observations = observations

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str] | str:
        def stored(identifier: object) -> str:
            observation = self._observations.get(context.session)
            if observation is not None:
                observation.quarantined.append(
                    QuarantinedMessage(str(identifier), original, context, reason, plugin)
                )
            return str(identifier)

        # An answer given at once is passed on as one, as a synchronous
        # filter gets it in the daemon.
        storing = self._quarantine.store(original, context, reason, plugin)
        if isinstance(storing, Deferred):
            return storing.addCallback(stored)
        return stored(storing)

    def storeParts(
        self,
        message: bytes,
        parts: Sequence[RemovedPart],
        context: FilterContext,
        plugin: str = "",
    ) -> Deferred[list[str]] | list[str]:
        def stored(identifiers: list[object]) -> list[str]:
            observation = self._observations.get(context.session)
            for identifier, part in zip(identifiers, parts, strict=True):
                if observation is not None:
                    observation.quarantined.append(
                        QuarantinedMessage(
                            str(identifier), part.original, context, part.reason, plugin
                        )
                    )
            return [str(identifier) for identifier in identifiers]

        if IPartQuarantine.providedBy(self._quarantine):
            storing = self._quarantine.storeParts(message, parts, context, plugin)
            if isinstance(storing, Deferred):
                return storing.addCallback(stored)
            return stored(storing)
        return ensureDeferred(self._storeEach(parts, context, plugin)).addCallback(stored)

    async def _storeEach(
        self, parts: Sequence[RemovedPart], context: FilterContext, plugin: str
    ) -> list[object]:
        return [
            await maybeDeferred(self._quarantine.store, part.original, context, part.reason, plugin)
            for part in parts
        ]


class ObservedChain:
    """
    The daemon's L{FilterChain} for a configuration, with every filter's
    answer (the steps of its outcome) and everything kept in the quarantine
    recorded.  Build it
    with L{loadObservedChain}.

    Runs may overlap if their contexts name different sessions.

    @ivar quarantine: where originals go (the L{MemoryQuarantine} standing
        in for the configured one, by default), or C{None}.
    """

    def __init__(
        self, chain: FilterChain, observations: dict[str, _Observation], quarantine: Any
    ) -> None:
        self.chain = chain
        self.quarantine = quarantine
        self._observations = observations

    @property
    def names(self) -> tuple[str, ...]:
        """
        The entries' names, in order.
        """
        return tuple(entry.name for entry in self.chain.entries)

    async def run(self, raw: bytes, context: FilterContext | None = None) -> ChainResult:
        """
        Run the chain over C{raw} as a retrieval described by C{context}
        (by default L{makeContext}C{()}; its C{partial} is what filters see,
        as in the daemon, where only a TOP with C{top = "partial"} is; its
        log, notes, quarantine and C{runInThread} are the chain's own).

        @raise ValueError: a run for the same session has not ended.
        """
        context = context or makeContext()
        if context.session in self._observations:
            raise ValueError(f"session {context.session!r} is already running")
        self._observations[context.session] = _Observation()
        try:
            outcome = await self.chain.outcome(context, raw)
        finally:
            seen = self._observations.pop(context.session)
        return ChainResult(
            raw, outcome.output, outcome.tempFailure, outcome.steps, tuple(seen.quarantined)
        )


def loadObservedChain(
    config: Config, reactor: Any, quarantine: IQuarantine | str | None = "memory"
) -> ObservedChain:
    """
    Load the filter chain of a configuration as the daemon does (with
    L{popproxy._assembly.buildChain}: the same plugin loading, order, names,
    timeouts, error policies and thread threshold), with its quarantine
    observed.

    @param reactor: the chain's clock and thread pool: the real reactor,
        or an L{InlineReactor}.
    @param quarantine: C{"memory"} (the default): a L{MemoryQuarantine}
        stands in for the configured one, which is not touched (not even
        created); C{"configured"}: the configured directory, written to as
        by the daemon; or an L{IQuarantine} provider.  Without C{[chain]
        quarantine} in the file there is none in any case, as in the
        daemon: a L{Replace} then becomes a temporary failure.
    @raise popproxy._config.ConfigError: a plugin is unusable, or the
        configured quarantine cannot be created.
    """
    configured = config.chain.quarantine
    # Only the loaded entries are taken from this chain: it is built
    # without the quarantine, so without the policy that needs one.
    withoutQuarantine = replace(config.chain, quarantine=None, overLimits="deliver")
    built = buildChain(replace(config, chain=withoutQuarantine), reactor)

    runInThread = reactorThreads(reactor)
    keeper: Any = None
    if configured is not None:
        if quarantine == "memory":
            keeper = MemoryQuarantine()
        elif quarantine == "configured":
            keeper = configuredQuarantine(config.source, configured, runInThread, reactor)
        else:
            keeper = quarantine
    observations: dict[str, _Observation] = {}
    chain = FilterChain(
        list(built.entries),
        reactor,
        None if keeper is None else _ObservedQuarantine(keeper, observations),
        runInThread,
        threadThreshold=config.chain.threadThreshold,
        limits=config.chain.limits,
        overLimits=config.chain.overLimits if keeper is not None else "deliver",
        threads=built.threads,
    )
    return ObservedChain(chain, observations, keeper)


def runChain(configPath: Path, raw: bytes, context: FilterContext | None = None) -> ChainResult:
    """
    Run the C{[[filter]]} chain of a configuration file on one message, as
    the daemon would for a C{RETR} (or the command in C{context}), without
    a reactor.

    The configured quarantine is not written to: a L{MemoryQuarantine}
    stands in (see L{ChainResult.quarantined}).  The chain's clock is a
    L{Clock}: if a filter has not answered once everything else is done,
    time jumps past its timeout and its C{on_error} policy applies, as in
    the daemon when a filter hangs.

    @raise popproxy._config.ConfigError: the file or a plugin is unusable.
    """
    reactor = InlineReactor()
    chain = loadObservedChain(loadConfig(configPath), reactor)
    return settle(ensureDeferred(chain.run(raw, context)), reactor, what="the chain")
