"""
The seam between the relay and message filtering.

Every RETR and TOP response passes a L{MessageHook}.  An inactive hook (an
empty filter chain) lets the relay stream the response through untouched,
without holding the message in memory; an active one receives the whole,
dot-unstuffed message and returns the octets to deliver, or fails with
L{TemporaryFailure} so the client gets C{-ERR [SYS/TEMP]} and the message
stays on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed


class TemporaryFailure(Exception):
    """
    The message cannot be delivered now; C{str()} is the reason the client
    sees after C{-ERR [SYS/TEMP]}.
    """


@dataclass(frozen=True, slots=True)
class RetrievalContext:
    """
    What is known about one retrieval.  Never holds a password.

    @ivar command: C{"RETR"} or C{"TOP"}.
    @ivar lines: the body line count asked for by TOP, else C{None}.
    @ivar partial: the message is incomplete (a TOP relayed as such, with
        C{[chain] top = "partial"}): filters must not treat a missing body
        part as removed.  A TOP in C{"full"} mode filters the whole message
        and is not partial, so it gets exactly what RETR gets.
    """

    command: str
    index: int
    lines: int | None
    user: str
    client: str
    upstream: str
    session: str
    uidl: str | None = None
    partial: bool = False


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

    def processMessage(self, context: RetrievalContext, message: bytes) -> Deferred[bytes]:
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

    def processMessage(self, context: RetrievalContext, message: bytes) -> Deferred[bytes]:
        return succeed(message)
