"""
What one client was told about its mailbox, kept for the rest of its session.

L{MailboxView} remembers the UIDs the upstream listed (message numbers and
UIDs do not change during a POP3 session), the size each filtered message
has as RETR delivers it, the messages the client deleted, and the filtered
messages themselves within a byte budget, so a repeated RETR or TOP is
served without fetching and filtering again.  From those it rewrites the
upstream's LIST and STAT answers so that they report what RETR delivers.

It is a plain object fed values and lines: no transport, no Twisted.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

#: A UIDL listing longer than this is not remembered.
MAX_REMEMBERED_UIDS = 20_000
#: A client's UIDL listing is kept (to note its UIDs) up to this size:
#: a number, a space, a UID of at most 70 octets and CRLF per line.
MAX_LISTING_OCTETS = MAX_REMEMBERED_UIDS * 80
#: The longest UID RFC 1939 allows.
MAX_UID = 70


class CacheEntry(Protocol):
    """
    What the cache needs to know of a filtered message.
    """

    @property
    def footprint(self) -> int:
        """
        The octets this entry keeps in memory.
        """


EntryT = TypeVar("EntryT", bound=CacheEntry)


class MailboxView(Generic[EntryT]):
    """
    One session's view of its mailbox: UIDs, sizes as delivered, deletions
    and the byte-budgeted cache of filtered messages.
    """

    def __init__(self, cacheBytes: int) -> None:
        """
        @param cacheBytes: the most octets the cached entries may keep.
        """
        self._budget = cacheBytes
        self._cache: dict[int, EntryT] = {}
        self._cachedBytes = 0
        self._peakCachedBytes = 0
        # Message number -> (size as delivered, size as the upstream had it).
        self._sizes: dict[int, tuple[int, int]] = {}
        # Message number -> UID, as the upstream listed them to the client.
        self._uids: dict[int, str] = {}
        self._uidLookups = 0
        self._deleted: set[int] = set()

    # UIDs

    def noteUid(self, number: bytes, uid: bytes) -> None:
        """
        Remember one C{number uid} pair the upstream named; malformed pairs
        and pairs beyond L{MAX_REMEMBERED_UIDS} are ignored.
        """
        if number.isdigit() and 0 < len(uid) <= MAX_UID and len(self._uids) < MAX_REMEMBERED_UIDS:
            self._uids[int(number)] = uid.decode("ascii", "replace")

    def noteUidAnswer(self, line: bytes) -> None:
        """
        Remember the UID in a positive answer to C{UIDL n} (C{+OK n uid}).
        """
        parts = line.split(b" ")
        if len(parts) == 3:
            self.noteUid(parts[1], parts[2])

    def noteUidListing(self, body: bytes) -> None:
        """
        Remember the C{number uid} lines of a UIDL listing.
        """
        for entry in body.split(b"\r\n"):
            fields = entry.split(b" ")
            if len(fields) == 2:
                self.noteUid(fields[0], fields[1])

    def uidOf(self, index: int) -> str | None:
        """
        The UID of message C{index}, if the upstream named it.
        """
        return self._uids.get(index)

    def lookupWholeListing(self) -> bool:
        """
        Count one lookup of an unknown UID and say whether it should ask for
        the whole listing: only the second time, when the client is fetching
        several messages, so one listing replaces a round trip per message
        (a client that fetches one message never pays for it).
        """
        self._uidLookups += 1
        return self._uidLookups == 2

    # Filtered messages and their sizes

    def remember(self, index: int, entry: EntryT, size: int, originalSize: int) -> None:
        """
        Note that message C{index} is C{size} octets as delivered
        (C{originalSize} upstream), and keep C{entry} for a repeated RETR or
        TOP if it fits the budget, dropping the oldest entries beyond it.
        """
        self._sizes[index] = (size, originalSize)
        if entry.footprint > self._budget:
            return
        previous = self._cache.pop(index, None)
        if previous is not None:
            self._cachedBytes -= previous.footprint
        self._cache[index] = entry
        self._cachedBytes += entry.footprint
        while self._cachedBytes > self._budget:
            oldest = self._cache.pop(next(iter(self._cache)))
            self._cachedBytes -= oldest.footprint
        self._peakCachedBytes = max(self._peakCachedBytes, self._cachedBytes)

    def cached(self, index: int) -> EntryT | None:
        """
        The kept entry for message C{index}, if any.
        """
        return self._cache.get(index)

    @property
    def cachedIndexes(self) -> tuple[int, ...]:
        """
        The message numbers with a kept entry, oldest first.
        """
        return tuple(self._cache)

    @property
    def cachedBytes(self) -> int:
        """
        The octets the kept entries hold, never above the budget.
        """
        return self._cachedBytes

    @property
    def peakCachedBytes(self) -> int:
        """
        The most octets the kept entries held at once in this session (not
        reset by L{clear}, so the session can report it as it closes).
        """
        return self._peakCachedBytes

    @property
    def cacheBudget(self) -> int:
        """
        The most octets the kept entries may hold (C{[chain] cache_bytes}).
        """
        return self._budget

    def sizeOf(self, index: int) -> int | None:
        """
        The size of message C{index} as delivered, if it went through the
        chain in this session.
        """
        known = self._sizes.get(index)
        return None if known is None else known[0]

    @property
    def rewritesListings(self) -> bool:
        """
        Whether LIST and STAT answers need rewriting (some message went
        through the chain).
        """
        return bool(self._sizes)

    def clear(self) -> None:
        """
        Let go of everything kept (the session has ended).
        """
        self._cache.clear()
        self._cachedBytes = 0
        self._sizes.clear()
        self._uids.clear()
        self._deleted.clear()

    # Deletions

    def markDeleted(self, index: int) -> None:
        """
        The upstream accepted C{DELE index}.
        """
        self._deleted.add(index)

    def reset(self) -> None:
        """
        The client sent C{RSET}: no message is deleted any more.
        """
        self._deleted.clear()

    # Rewriting the upstream's answers

    def rewriteStat(self, line: bytes) -> bytes:
        """
        A positive STAT answer (C{+OK count octets}) with the octets changed
        by the sizes of the undeleted messages the chain changed.
        """
        parts = line.split(b" ")
        if len(parts) >= 3 and parts[2].isdigit():
            change = sum(
                filtered - original
                for index, (filtered, original) in self._sizes.items()
                if index not in self._deleted
            )
            parts[2] = b"%d" % max(0, int(parts[2]) + change)
        return b" ".join(parts)

    def rewriteListLine(self, line: bytes) -> bytes:
        """
        A positive answer to C{LIST n} (C{+OK n size}) with the size RETR
        delivers.
        """
        parts = line.split(b" ")
        if len(parts) >= 3:
            self._resize(parts, 1)
        return b" ".join(parts)

    def rewriteListing(self, body: bytes) -> bytes:
        """
        The lines of a LIST listing (C{n size}, each ending in CRLF, without
        the terminating dot line) with the sizes RETR delivers.
        """
        lines = []
        for entry in body.split(b"\r\n")[:-1]:
            fields = entry.split(b" ")
            if len(fields) >= 2:
                self._resize(fields, 0)
            lines.append(b" ".join(fields) + b"\r\n")
        return b"".join(lines)

    def _resize(self, fields: list[bytes], at: int) -> None:
        """
        Replace C{fields[at + 1]} by the size as delivered of the message
        numbered C{fields[at]}, if it is known.
        """
        if fields[at].isdigit():
            size = self.sizeOf(int(fields[at]))
            if size is not None:
                fields[at + 1] = b"%d" % size
