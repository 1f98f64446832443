"""
The filter chain: runs the configured filters, in order, over one message.

L{FilterChain} is the relay's L{MessageHook}: it receives the dot-unstuffed
message bytes of a RETR or TOP, runs each filter with its own timeout and
error policy, keeps replaced originals in the quarantine, and says what it
did in a frozen L{ChainOutcome} (L{FilterChain.outcome}): one step per
filter, and the bytes to deliver (the very same object when no filter
changed anything) or the reason for a temporary failure.  Every verdict is
applied in one place (L{FilterChain._apply}); C{processMessage} gives the
session the bytes or fails with L{TemporaryFailure}.  A filter that raises, hangs or returns
garbage is logged with its name and the message's UIDL and handled by its
policy: never a crashed session, never a silent pass.  Each such failure
gets an error id, in its log line (with the traceback of what the filter
raised) and in what the recipient sees (the C{X-Popproxy-Unchecked} header,
or the client's C{-ERR}), never the error's text.  A message over the
parse limits reaches no filter: it meets the C{over_limits} policy.

L{FilterChain.start}, called once when the proxy starts serving, starts
the filters that provide L{IStartable} (scanners ask their daemons
whether they are there).

With L{FilterThreads}, a filter's synchronous C{filterMessage} and the work
it offloads with C{context.runInThread} run off the reactor thread and are
stopped (interrupted in their thread) when the filter's timeout passes; the
synchronous call gets a context whose quarantine and log hand their work
to the reactor thread (L{popproxy._threadcontext}).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from popproxy._filterthreads import FilterThreads
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._mimelimits import LimitExceeded, ParseLimits
from popproxy._mimewrite import textPart
from popproxy._outcome import ChainOutcome, FilterFailed, FilterStep, OverLimit
from popproxy._printable import PrintableLogger
from popproxy._retrieval import TemporaryFailure
from popproxy._threadcontext import threadContext
from popproxy._verdicts import (
    Deliver,
    FilterContext,
    Replace,
    Rewrite,
    TempFail,
    Verdict,
    contextWith,
    noItemUrl,
)
from popproxy.interfaces import IStartable
from popproxy.message import Message

T = TypeVar("T")

#: The error policies a chain entry may have.
ON_ERROR = ("tempfail", "deliver")

#: Header added when a filter failed and its policy delivers anyway.
UNCHECKED_HEADER = "X-Popproxy-Unchecked"

#: Header added to a notice that replaced a quarantined original.
QUARANTINE_HEADER = "X-Popproxy-Quarantine-Id"

#: What a message over a parse limit can get: delivered untouched with an
#: L{UNCHECKED_HEADER}, or replaced by a notice with the original quarantined.
OVER_LIMITS = ("deliver", "quarantine")

#: The parse limits of a chain that is given none.
DEFAULT_LIMITS = ParseLimits()

#: The name quarantine records and logs give the over-limit policy.
LIMITS_NAME = "parse-limits"


@dataclass(frozen=True)
class ChainEntry:
    """
    One configured filter.

    @ivar filter: the object providing L{IMessageFilter}.
    @ivar timeout: seconds the filter may take for one message.
    @ivar onError: C{"tempfail"}: a failing filter makes the client retry
        later; C{"deliver"}: deliver with an L{UNCHECKED_HEADER} header.
    """

    name: str
    filter: Any
    timeout: float = 30.0
    onError: str = "tempfail"


def verdictProblem(answer: object) -> str | None:
    """
    Why the chain refuses C{answer} as a verdict, or C{None} if it is a
    proper one (also used by the test kit, so tests judge the same way).
    """
    if not isinstance(answer, Verdict) or type(answer) is Verdict:
        return f"returned {type(answer).__name__}, not a verdict"
    # Plugins are not type-checked: what a verdict carries is checked as any object.
    if isinstance(answer, Rewrite) and not isinstance(cast(object, answer.message), Message):
        return "returned a Rewrite that carries no Message"
    if isinstance(answer, Replace) and not isinstance(cast(object, answer.notice), Message):
        return "returned a Replace that carries no Message"
    if not isinstance(answer, Deliver | Rewrite | Replace | TempFail):
        return f"returned an unknown verdict {type(answer).__name__}"
    return None


def newErrorId() -> str:
    """
    A fresh id for one filter failure: ten random hex digits, shown to the
    recipient and logged, so the two can be matched.
    """
    return secrets.token_hex(5)


def runHere(function: Callable[[], T]) -> Deferred[T]:
    """
    Run C{function} now (the default for tests and tiny messages).
    """
    return maybeDeferred(function)


class FilterChain:
    """
    The ordered filters of the configuration.

    @param quarantine: an L{IQuarantine} provider, or C{None}: then a
        L{Replace} verdict cannot keep the original and becomes a temporary
        failure (nothing a filter removes is ever thrown away).
    @param runInThread: runs a callable off the reactor thread (for the
        CPU-heavy parse of big messages), returning a Deferred.
    @param threadThreshold: messages at least this big are parsed in a
        thread before the filters run.
    @param limits: the parse limits every message is checked against
        before any filter sees it.
    @param overLimits: what a message over them gets (L{OVER_LIMITS}); it
        never becomes a temporary failure, which every retry would repeat.
        C{"quarantine"} needs a quarantine.
    @param threads: where filters' synchronous calls and offloaded work
        run, stopped at the filter's timeout; C{None}: synchronous calls
        run in the caller's thread and C{runInThread} is given to filters.
    @param metrics: where each message's outcome, verdicts and timings
        are counted.
    @param errorIds: makes the id of each filter failure (L{newErrorId}).
    @param itemUrl: the console's link to a quarantined item, for filters'
        notices (L{FilterContext.itemUrl}).
    """

    #: Filters' logs, and this one, escape every text field: file names,
    #: subjects and reasons come from the messages.
    log = PrintableLogger()

    def __init__(
        self,
        entries: list[ChainEntry],
        clock: IReactorTime,
        quarantine: Any = None,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = runHere,
        threadThreshold: int = 64 * 1024,
        limits: ParseLimits = DEFAULT_LIMITS,
        overLimits: str = "deliver",
        threads: FilterThreads | None = None,
        metrics: Metrics = NO_METRICS,
        errorIds: Callable[[], str] = newErrorId,
        itemUrl: Callable[[str], str] = noItemUrl,
    ) -> None:
        if overLimits not in OVER_LIMITS:
            raise ValueError(f"overLimits must be one of {OVER_LIMITS}, not {overLimits!r}")
        if overLimits == "quarantine" and quarantine is None:
            raise ValueError("overLimits='quarantine' needs a quarantine")
        self.entries = tuple(entries)
        self._loggers = {
            e.name: PrintableLogger(namespace=f"popproxy.filter.{e.name}") for e in entries
        }
        self._clock = clock
        self._quarantine = quarantine
        self._runInThread = runInThread
        self._threadThreshold = threadThreshold
        self._limits = limits
        self._overLimits = overLimits
        self.threads = threads
        self._metrics = metrics
        self._errorIds = errorIds
        self._itemUrl = itemUrl
        self._started = False
        # Whether each filter's filterMessage is a coroutine function,
        # asked once rather than per message (by identity: an entry holds a
        # plugin object, which need not be hashable).
        self._coroutines = {
            id(e): inspect.iscoroutinefunction(e.filter.filterMessage) for e in self.entries
        }

    @property
    def active(self) -> bool:
        return bool(self.entries)

    @property
    def quarantine(self) -> Any:
        """
        Where originals go (the health page and the metrics read its state).
        """
        return self._quarantine

    def start(self) -> None:
        """
        Start every filter that provides L{IStartable}, once (later calls
        do nothing).  A filter that raises is logged; the others start
        and the proxy serves regardless.
        """
        if self._started:
            return
        self._started = True
        for entry in self.entries:
            if not IStartable.providedBy(entry.filter):
                continue
            try:
                entry.filter.startFilter()
            except Exception:
                self.log.failure("filter {filter} failed to start", filter=entry.name)

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        return ensureDeferred(self.run(context, message))

    async def run(self, retrieval: FilterContext, raw: bytes) -> bytes:
        """
        Run every filter over C{raw}; return the bytes to deliver.

        @raise TemporaryFailure: a filter asked for it, or failed under the
            C{tempfail} policy.
        """
        started = self._clock.seconds()
        outcome = await self.outcome(retrieval, raw)
        self._metrics.chainRan(retrieval.command, outcome, self._clock.seconds() - started)
        return outcome.delivered()

    async def outcome(self, retrieval: FilterContext, raw: bytes) -> ChainOutcome:
        """
        Run every filter over C{raw} and say what each did and what is to
        be delivered.
        """
        limits = self._limits
        if len(raw) >= self._threadThreshold:
            message, exceeded = await self._runInThread(lambda: _parsed(raw, limits))
        else:
            message, exceeded = _parsed(raw, limits)
        if exceeded is not None:
            return await self._overLimit(retrieval, raw, message, exceeded)
        notes: list[tuple[str, str]] = []
        steps: list[FilterStep] = []
        for entry in self.entries:
            context = self._context(retrieval, self._loggers[entry.name], tuple(notes))
            answer: Verdict | FilterFailed
            started = self._clock.seconds()
            try:
                answer = await self._judge(entry, message, context)
            except FilterFailed as e:
                e.errorId = self._errorIds()
                self._logFailure(entry, retrieval, e)
                answer = e
            took = self._clock.seconds() - started
            if isinstance(answer, Verdict) and answer.note:
                notes.append((entry.name, answer.note))
                self._logNote(entry, retrieval, answer.note)
            step, message, failure = await self._apply(entry, answer, took, raw, message, context)
            steps.append(step)
            if failure is not None:
                return ChainOutcome.failing(failure, steps)
        unchanged = not message.changed and message.raw is raw
        return ChainOutcome.delivering(raw, None if unchanged else message.toBytes(), steps)

    async def _apply(
        self,
        entry: ChainEntry,
        answer: Verdict | FilterFailed,
        seconds: float,
        raw: bytes,
        message: Message,
        context: FilterContext,
    ) -> tuple[FilterStep, Message, str | None]:
        """
        Apply one filter's answer (a verdict, or its failure under its
        policy), given after C{seconds}, to the message as it stands: what
        the step records, the message after it, and the reason for a
        temporary failure if the answer (or keeping the original it
        replaces) is one.
        """
        if isinstance(answer, FilterFailed):
            step = FilterStep(
                entry.name,
                None,
                str(answer),
                entry.onError,
                answer.timedOut,
                errorId=answer.errorId,
                seconds=seconds,
            )
            # A fixed phrase and the id of the log line: what went wrong
            # inside is for the log, not for the recipient.
            said = f"error id {answer.errorId}"
            if entry.onError == "tempfail":
                return step, message, f"filter {entry.name} failed ({said}), try again later"
            value = f"{entry.name} {step.failure}; {said}"
            return step, message.withHeaderAdded(UNCHECKED_HEADER, value), None
        step = FilterStep(entry.name, answer, None, entry.onError, seconds=seconds)
        if isinstance(answer, TempFail):
            return step, message, answer.reason
        if isinstance(answer, Rewrite):
            return step, answer.message, None
        if isinstance(answer, Replace):
            try:
                identifier = await self._keep(raw, context, answer.reason, entry.name)
            except TemporaryFailure as e:
                return step, message, str(e)
            notice = answer.notice.withHeaderAdded(QUARANTINE_HEADER, identifier)
            return replace(step, quarantineId=identifier), notice, None
        return step, message, None

    async def _overLimit(
        self, retrieval: FilterContext, raw: bytes, message: Message, exceeded: LimitExceeded
    ) -> ChainOutcome:
        """
        Apply the C{over_limits} policy to a message no filter may see.
        """
        reason = f"message exceeds parse limit {exceeded.limit} ({exceeded.value})"
        self.log.warn(
            "{command} {index} (UIDL {uidl}) not filtered: {reason} at part {path}; "
            "over_limits: {policy}",
            command=retrieval.command,
            index=retrieval.index,
            uidl=retrieval.uidl,
            reason=reason,
            path=".".join(str(index) for index in exceeded.path) or "top",
            policy=self._overLimits,
        )
        overLimit = OverLimit(reason, self._overLimits)
        if self._overLimits == "deliver":
            output = message.withHeaderAdded(UNCHECKED_HEADER, reason).toBytes()
            return replace(ChainOutcome.delivering(raw, output), overLimit=overLimit)
        context = self._context(retrieval, self.log, ())
        try:
            identifier = await self._keep(raw, context, reason, LIMITS_NAME)
        except TemporaryFailure as e:
            return replace(ChainOutcome.failing(str(e)), overLimit=overLimit)
        notice = _overLimitNotice(message, reason).withHeaderAdded(QUARANTINE_HEADER, identifier)
        return replace(
            ChainOutcome.delivering(raw, notice.toBytes()),
            overLimit=replace(overLimit, quarantineId=identifier),
        )

    def _context(
        self, retrieval: FilterContext, log: Any, notes: tuple[tuple[str, str], ...]
    ) -> FilterContext:
        """
        What a filter (or the chain itself, keeping an original) is told
        about the retrieval at hand: the chain's quarantine and thread
        runner, whatever the caller's context held.
        """
        return contextWith(
            retrieval,
            log=log,
            notes=notes,
            quarantine=self._quarantine,
            runInThread=self._runInThread,
            itemUrl=self._itemUrl,
        )

    def _logNote(self, entry: ChainEntry, retrieval: FilterContext, note: str) -> None:
        self.log.info(
            "filter {filter} on {command} {index} (UIDL {uidl}): {note}",
            filter=entry.name,
            command=retrieval.command,
            index=retrieval.index,
            uidl=retrieval.uidl,
            note=note,
        )

    def _logFailure(self, entry: ChainEntry, retrieval: FilterContext, e: FilterFailed) -> None:
        """
        One log line per failure, with its error id; with the traceback
        when the filter raised (a timeout or a bad answer has none).
        """
        format = (
            "filter {filter} failed on {command} {index} (UIDL {uidl}), error id {errorId}: {error}"
        )
        fields: dict[str, Any] = {
            "filter": entry.name,
            "command": retrieval.command,
            "index": retrieval.index,
            "uidl": retrieval.uidl,
            "errorId": e.errorId,
            "error": str(e),
        }
        cause = e.__cause__
        if cause is not None:
            # With the traceback: the exception's text stays in the log.
            self.log.failure(format, failure=Failure(cause), **fields)
        else:
            self.log.error(format, **fields)

    async def _judge(self, entry: ChainEntry, message: Message, context: FilterContext) -> Verdict:
        try:
            if self.threads is None:
                result = entry.filter.filterMessage(message, context)
                if inspect.isawaitable(result):
                    # Only a filter that waits can be given a time limit; one
                    # that answers at once skips the Deferred and its timer.
                    running: Deferred[Any] = ensureDeferred(result)  # type: ignore[arg-type]
                    if not running.called:
                        # One that answered without waiting needs no timer.
                        running.addTimeout(entry.timeout, self._clock)
                    result = await running
            else:
                result = await self._answerInThreads(entry, message, context, self.threads)
        except (CancelledError, DeferredTimeoutError):
            raise FilterFailed(f"no verdict within {entry.timeout:g} s", timedOut=True) from None
        except Exception as e:
            raise FilterFailed(f"{type(e).__name__}: {e}") from e
        problem = verdictProblem(result)
        if problem is not None:
            raise FilterFailed(problem)
        return result

    async def _answerInThreads(
        self, entry: ChainEntry, message: Message, context: FilterContext, threads: FilterThreads
    ) -> Any:
        """
        The filter's answer, with everything it computes kept off the
        reactor where it can be and stopped at its timeout.

        A coroutine function runs on the reactor thread (it awaits I/O the
        reactor does); any other C{filterMessage} is called in a filter
        thread.  Work either kind offloads with C{context.runInThread}
        runs in a filter thread too, cancelled at the filter's deadline.
        A filter that answered without waiting (most coroutines, on most
        messages) needs no timer.
        """
        offloads = _Offloads(threads, self._clock, entry.timeout)
        context = contextWith(context, runInThread=offloads.run)
        filterMessage = entry.filter.filterMessage
        running: Deferred[Any]
        if self._coroutines[id(entry)]:
            running = ensureDeferred(filterMessage(message, context))
        else:
            # Its quarantine and log reach the reactor from the thread.
            inThread = threadContext(context, threads)
            running = threads.run(partial(filterMessage, message, inThread))
            running.addCallback(_awaited)
        if not running.called:
            running.addTimeout(entry.timeout, self._clock)
        try:
            return await running
        finally:
            offloads.stopUnfinished()

    async def _keep(self, raw: bytes, context: FilterContext, reason: str, name: str) -> str:
        if self._quarantine is None:
            raise TemporaryFailure(
                f"filter {name} would replace the message but no quarantine is configured"
            )
        try:
            identifier = await maybeDeferred(self._quarantine.store, raw, context, reason, name)
        except Exception as e:
            self.log.failure("cannot quarantine a message for filter {filter}", filter=name)
            raise TemporaryFailure(
                "the quarantine cannot keep the original, try again later"
            ) from e
        return str(identifier)


def _parsed(raw: bytes, limits: ParseLimits) -> tuple[Message, LimitExceeded | None]:
    """
    A message with its whole MIME tree built up to the limits, and the
    first limit it goes over, if any (done in a thread for big messages, so
    other sessions are not blocked).
    """
    message = Message.fromBytes(raw, limits=limits)
    try:
        message.checkLimits()
    except LimitExceeded as e:
        return message, e
    return message, None


def _overLimitNotice(message: Message, reason: str) -> Message:
    """
    What stands in for a message over a parse limit: its identifying
    header fields and a text saying why it is not delivered.
    """
    eol = message.lineEnding
    head = b""
    for name in ("From", "To", "Cc", "Date", "Message-ID", "Subject"):
        for value in message.headers.rawValues(name):
            head += name.encode("ascii") + b":" + value + eol
    text = (
        f"This message was not delivered: its structure goes beyond what the mail gateway "
        f"checks ({reason}).\n"
        "The whole message is kept in quarantine under the id in the "
        "X-Popproxy-Quarantine-Id header of this notice; ask your administrator if you "
        "need it.\n"
    )
    return Message.fromBytes(head + b"MIME-Version: 1.0" + eol + textPart(text, lineEnding=eol))


def _awaited(result: Any) -> Any:
    """
    What a synchronous C{filterMessage} returned, awaited if it is
    awaitable (the chain's Deferred then waits for it).
    """
    if inspect.isawaitable(result):
        return ensureDeferred(result)  # type: ignore[arg-type]
    return result


class _Offloads:
    """
    The work one filter call offloads with C{context.runInThread}: run in
    a filter thread under what is left of the call's time limit, and
    stopped if it is still running when the call has answered.
    """

    def __init__(self, threads: FilterThreads, clock: IReactorTime, timeout: float) -> None:
        self._threads = threads
        self._clock = clock
        self._deadline = clock.seconds() + timeout
        self._running: list[Deferred[Any]] = []

    def run(self, function: Callable[[], T]) -> Deferred[T]:
        threads = self._threads
        if threads.inPool():
            # Run inline in the filter thread, under the time limit of the
            # call that offloads it: no timer may be set from here.
            return threads.run(function)
        work = threads.run(function)
        if not work.called:
            work.addTimeout(max(0.0, self._deadline - self._clock.seconds()), self._clock)
            self._running.append(work)
        return work

    def stopUnfinished(self) -> None:
        """
        Work the filter started and no longer waits for is stopped.
        """
        for work in self._running:
            if not work.called:
                work.cancel()
                work.addErrback(_ignoreStopped)


def _ignoreStopped(failure: Failure) -> None:
    failure.trap(DeferredTimeoutError, CancelledError)
