"""
The commands answered from what the upstream said, seen through the
session's L{MailboxView}: C{STAT} and C{LIST} with the sizes RETR delivers
for messages the chain changed, C{DELE} noted so those leave the listings.
L{ListingExchange} is given the upstream link and the mailbox view; each
method returns the bytes to send the client.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from popproxy._mailboxview import CacheEntry, MailboxView
from popproxy._upstreamlink import UpstreamLink

EntryT = TypeVar("EntryT", bound=CacheEntry)


class ListingExchange(Generic[EntryT]):
    """
    STAT, LIST and DELE for a mailbox whose listings the proxy rewrites.
    """

    def __init__(self, link: UpstreamLink, mailbox: MailboxView[EntryT]) -> None:
        self._link = link
        self._mailbox = mailbox

    async def stat(self) -> bytes:
        status = await self._link.shortCommand(b"STAT")
        return (self._mailbox.rewriteStat(status.line) if status.ok else status.line) + b"\r\n"

    async def listLine(self, index: int) -> bytes:
        status = await self._link.shortCommand(b"LIST %d" % index)
        line = self._mailbox.rewriteListLine(status.line) if status.ok else status.line
        return line + b"\r\n"

    async def listing(self) -> bytes:
        status, body = await self._link.longCommand(b"LIST")
        if not status.ok:
            return status.line + b"\r\n"
        return status.line + b"\r\n" + self._mailbox.rewriteListing(body) + b".\r\n"

    async def delete(self, index: int) -> bytes:
        status = await self._link.shortCommand(b"DELE %d" % index)
        if status.ok:
            self._mailbox.markDeleted(index)
        return status.line + b"\r\n"
