"""
The context a filter gets in a filter thread: the same values, with every
member that touches the reactor made safe to use from that thread.

A plain C{def filterMessage} runs in one of the chain's filter threads
(L{popproxy._filterthreads}), but the quarantine and the log it is handed
belong to the reactor thread: the quarantine starts its file writes with
the reactor's thread pool and answers with a Deferred fired there, and log
observers (a file, the terminal) are called without a lock.  Called from a
filter thread, L{ReactorQuarantine} hands each store to the reactor thread
and waits for its ids, which it returns directly; the log hands each event
to the reactor thread.  Called from the reactor thread (by a coroutine the
synchronous call returned), both act as the originals do.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from twisted.logger import ILogObserver, LogEvent, Logger
from zope.interface import implementer

from popproxy._filterthreads import FilterThreads
from popproxy.interfaces import FilterContext, IPartQuarantine, IQuarantine, RemovedPart


def threadContext(context: FilterContext, threads: FilterThreads) -> FilterContext:
    """
    C{context}, for a filter that runs in one of C{threads}.
    """
    quarantine = context.quarantine
    if quarantine is not None:
        kind = (
            ReactorPartQuarantine if IPartQuarantine.providedBy(quarantine) else ReactorQuarantine
        )
        quarantine = kind(quarantine, threads)
    return replace(context, quarantine=quarantine, log=_reactorLogger(context.log, threads))


@implementer(IQuarantine)
class ReactorQuarantine:
    """
    A quarantine whose calls from a filter thread run on the reactor
    thread: they wait there for the store and return its id (or raise its
    exception) instead of a Deferred.
    """

    def __init__(self, quarantine: Any, threads: FilterThreads) -> None:
        self._quarantine = quarantine
        self._threads = threads

    def store(self, original: bytes, context: FilterContext, reason: str, plugin: str = "") -> Any:
        if not self._threads.inPool():
            return self._quarantine.store(original, context, reason, plugin)
        return self._threads.callInReactor(
            self._quarantine.store, original, context, reason, plugin
        )


@implementer(IPartQuarantine)
class ReactorPartQuarantine(ReactorQuarantine):
    """
    A L{ReactorQuarantine} for an L{IPartQuarantine}.
    """

    def storeParts(
        self, message: bytes, parts: Sequence[RemovedPart], context: FilterContext, plugin: str = ""
    ) -> Any:
        if not self._threads.inPool():
            return self._quarantine.storeParts(message, parts, context, plugin)
        return self._threads.callInReactor(
            self._quarantine.storeParts, message, parts, context, plugin
        )


@implementer(ILogObserver)
class _ReactorObserver:
    """
    Hands the events emitted in a filter thread to C{observer} on the
    reactor thread.
    """

    def __init__(self, observer: ILogObserver, threads: FilterThreads) -> None:
        self._observer = observer
        self._threads = threads

    def __call__(self, event: LogEvent) -> None:
        if self._threads.inPool():
            self._threads.callFromThread(self._observer, event)
        else:
            self._observer(event)


def _reactorLogger(log: Logger, threads: FilterThreads) -> Logger:
    """
    A copy of C{log} (of its class, so a L{PrintableLogger} still escapes
    its fields) whose events reach its observer on the reactor thread.
    """
    forwarding = copy.copy(log)
    forwarding.observer = _ReactorObserver(log.observer, threads)
    return forwarding
