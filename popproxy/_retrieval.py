"""
The seam between the relay and message filtering.

Every RETR and TOP response passes a L{MessageHook}.  An inactive hook (an
empty filter chain) lets the relay stream the response through untouched,
without holding the message in memory; an active one receives the whole,
dot-unstuffed message with the retrieval's L{FilterContext} and returns
the octets to deliver, or fails with L{TemporaryFailure} so the client gets
C{-ERR [SYS/TEMP]} and the message stays on the server.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from popproxy._verdicts import FilterContext


class TemporaryFailure(Exception):
    """
    The message cannot be delivered now; C{str()} is the reason the client
    sees after C{-ERR [SYS/TEMP]}.
    """


class MessageHook(Protocol):
    """
    What the relay needs from a filter chain.
    """

    @property
    def active(self) -> bool:
        """
        C{False} means every message passes unchanged and unread.
        """
        ...

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        """
        @return: the message octets to deliver (the same object when
            nothing changed); may fail with L{TemporaryFailure}.
        """
        ...


class PassThrough:
    """
    The empty filter chain.
    """

    active = False

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        return succeed(message)
