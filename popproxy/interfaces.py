"""
The public plugin API: the interface a filter provides and the values it
receives and returns.

A filter plugin is an object providing L{IMessageFilter}.  The chain calls
C{filterMessage(message, context)} for every message a client retrieves;
the method returns a verdict (L{Deliver}, L{Rewrite}, L{Replace},
L{TempFail}) directly, as a Deferred, or from a coroutine (C{async def}).
Its factory checks the entry's settings with L{SettingsReader}.  A filter
that talks to a daemon also provides L{IScannerStatus} (kept with a
L{ScannerReachability}) and, to check the daemon when the proxy starts,
L{IStartable}.  See docs/writing-plugins.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zope.interface import Attribute, Interface

from popproxy._filterthreads import FilterInterrupted
from popproxy._scannerreachability import ScannerReachability
from popproxy._scannerstatus import ScannerStatus
from popproxy._settings import SettingsError, SettingsReader
from popproxy._verdicts import (
    Deliver,
    FilterContext,
    RemovedPart,
    Replace,
    Rewrite,
    TempFail,
    Verdict,
)

__all__ = [
    "Deliver",
    "FilterContext",
    "FilterInterrupted",
    "IMessageFilter",
    "IPartQuarantine",
    "IQuarantine",
    "IScannerStatus",
    "IStartable",
    "RemovedPart",
    "Replace",
    "Rewrite",
    "ScannerReachability",
    "ScannerStatus",
    "SettingsError",
    "SettingsReader",
    "TempFail",
    "Verdict",
]


class IMessageFilter(Interface):
    """
    A filter in the chain.
    """

    name = Attribute("A short name for logs and status headers, e.g. 'strip'.")

    def filterMessage(message: Any, context: FilterContext) -> Any:
        """
        Judge one message.

        A plain method is called in one of the chain's filter threads (it
        must not call the reactor); a coroutine function runs on the
        reactor thread.  Past the entry's timeout, what runs in a filter
        thread is interrupted with L{FilterInterrupted}.

        @param message: a L{popproxy.message.Message}.
        @return: a L{Verdict}, a Deferred firing with one, or an awaitable
            (coroutine) returning one.
        """


class IQuarantine(Interface):
    """
    Where originals replaced by a notice are kept.
    """

    def store(original: bytes, context: FilterContext, reason: str, plugin: str = "") -> Any:
        """
        Keep C{original} (a whole message, or one MIME part with its
        headers) safely, with why (C{reason}) and who removed it (C{plugin}).

        @return: a Deferred firing with (or directly) the quarantine id,
            which notices may show; failing means the original could not be
            kept, so the message must not be replaced.  A synchronous
            C{filterMessage} (a plain C{def}, run in a filter thread) gets
            the id itself, never a Deferred: its context's quarantine does
            the store on the reactor thread and waits for it (a failure is
            raised in the filter).
        """


class IPartQuarantine(IQuarantine):
    """
    A quarantine that keeps many removed parts of one message at once, each
    as its own record under an id derived from the message and the part
    (see docs/quarantine.md): storing the same parts of the same message
    again, as a retry does, finds them kept and writes nothing.
    """

    def storeParts(
        message: bytes, parts: Sequence[RemovedPart], context: FilterContext, plugin: str = ""
    ) -> Any:
        """
        Keep every one of C{parts}, removed from C{message} (the message's
        octets as the filter received them: they name the message when the
        upstream has no UIDL) by C{plugin}.

        @return: a Deferred firing with (or directly) the ids, one per part
            and in order; failing means some may not be kept, so the
            message must not be delivered without them (storing them again
            later keeps each once).  A synchronous C{filterMessage} gets the
            list itself, as with L{IQuarantine.store}.
        """


class IScannerStatus(Interface):
    """
    Provided, beside L{IMessageFilter}, by a filter that depends on a daemon
    (a virus or spam scanner): the proxy reads its state for the start-up
    log, the health check and the metrics.
    """

    def scannerStatus() -> ScannerStatus:
        """
        The last known state of the filter's daemon (cheap: no I/O).
        """


class IStartable(Interface):
    """
    Optionally provided, beside L{IMessageFilter}, by a filter with work to
    start when the proxy starts serving, e.g. asking its daemon once
    whether it answers (and logging what it learns).
    """

    def startFilter() -> None:
        """
        Start that work; called once, on the reactor thread, when the proxy
        has started (its listeners are up, privileges dropped).

        It must return at once: start what takes time (a connection) on
        the reactor the factory was given and log the result when it
        arrives.  What it raises is logged; start-up goes on regardless.
        """
