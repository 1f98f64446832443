"""
Response handlers that pass an upstream answer on to the client as it
arrives: L{Relay} (verbatim) and L{UidRecorder} (verbatim, noting the UIDs
in it for the mailbox view).  They are given the session's write and
command-done steps, never the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from popproxy._framing import StatusLine
from popproxy._mailboxview import MAX_LISTING_OCTETS, CacheEntry, MailboxView

EntryT = TypeVar("EntryT", bound=CacheEntry)


class Relay:
    """
    Relays one upstream response to the client as it arrives.

    @ivar inBody: part of the response has reached the client (an upstream
        lost now leaves the client with half an answer).
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        done: Callable[[], None],
        onStatus: Callable[[StatusLine], None] | None = None,
    ) -> None:
        self._write = write
        self._done = done
        self._onStatus = onStatus
        self._statusLine = b""
        self.inBody = False

    def statusReceived(self, status: StatusLine) -> None:
        if self._onStatus is not None:
            self._onStatus(status)
        # Held back to go out with the body's first piece: one send(), and
        # one segment for the client, instead of two.
        self._statusLine = status.line + b"\r\n"

    def bodyReceived(self, data: bytes) -> None:
        if self._statusLine:
            data = self._statusLine + data
            self._statusLine = b""
        self.inBody = True
        self._write(data)

    def responseFinished(self) -> None:
        if self._statusLine:
            self._write(self._statusLine)
            self._statusLine = b""
        self.inBody = False
        self._done()


class UidRecorder(Relay, Generic[EntryT]):
    """
    Relays a C{UIDL} response verbatim and notes the UIDs in it (message
    numbers and UIDs do not change during a POP3 session): from the body of
    a listing (C{UIDL}), or from the status line of C{UIDL n}.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        done: Callable[[], None],
        mailbox: MailboxView[EntryT],
        listing: bool,
    ) -> None:
        """
        @param listing: the answer to C{UIDL} (a listing whose status line
            names no message, whatever its text), not to C{UIDL n}.
        """
        super().__init__(write, done, onStatus=None if listing else self._statusSeen)
        self._mailbox = mailbox
        self._body: list[bytes] = []
        self._bodySize = 0

    def _statusSeen(self, status: StatusLine) -> None:
        # "+OK 3 uid" (UIDL n) names one message.
        if status.ok:
            self._mailbox.noteUidAnswer(status.line)

    def bodyReceived(self, data: bytes) -> None:
        super().bodyReceived(data)
        self._bodySize += len(data)
        if self._bodySize <= MAX_LISTING_OCTETS:
            self._body.append(data)

    def responseFinished(self) -> None:
        if self._bodySize <= MAX_LISTING_OCTETS:
            self._mailbox.noteUidListing(b"".join(self._body))
        self._body = []
        super().responseFinished()
