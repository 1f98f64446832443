"""
The quarantine as the console reads it (L{IQuarantineView}: a user's
items, newest first, searched and cut into pages; an item; its bytes),
and that view of a directory quarantine, without reading every record
file on every request (the PostgreSQL one is L{popproxy.console._pgview}).

L{DirectoryView} keeps the records in memory, indexed by user.  Record
files never change once written (their ids say what they hold; only the
purge deletes them), so a refresh lists the C{records/} directory and
reads only the files it has not seen, and forgets those that went.  A
listing of 10,000 names costs a few milliseconds; reading them all, once.
The blocking work runs where C{runInThread} puts it (the reactor's thread
pool in the daemon), one refresh at a time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from popproxy._chain import runHere
from popproxy._quarantine import DirectoryQuarantine, Record, headerFilename, recordFromFields
from popproxy.message import Message


@dataclass(frozen=True, slots=True)
class Item:
    """
    A record with what the console shows of it.

    @ivar filename: the removed part's file name, for display (C{None}: it
        had none, or the item is a whole message).
    """

    record: Record
    filename: str | None

    def matches(self, words: tuple[str, ...]) -> bool:
        """
        Whether every one of C{words} (case-folded) is in the file name,
        the subject or the sender.
        """
        record = self.record
        text = " ".join(
            value or "" for value in (self.filename, record.messageSubject, record.messageFrom)
        ).casefold()
        return all(word in text for word in words)


@dataclass(frozen=True, slots=True)
class ItemPage:
    """
    One page of a user's items.

    @ivar total: how many items match, on every page.
    """

    items: tuple[Item, ...]
    total: int
    offset: int


@dataclass(frozen=True, slots=True)
class Download:
    """
    What a user downloads of an item: the file itself (an attachment's
    content, its transfer encoding undone) or, for a whole message or an
    attached message, the message as kept (C{.eml}).
    """

    content: bytes
    filename: str


def downloadOf(item: Item, original: bytes) -> Download:
    """
    The download of C{item}, whose quarantined octets are C{original}.
    """
    record = item.record
    if "path" in record.data:
        part = Message.fromBytes(original).root
        if not part.isMultipart and not part.contentType.startswith("message/"):
            return Download(part.payload(), item.filename or f"item-{record.id}.bin")
    name = item.filename or f"message-{record.id}"
    return Download(original, name if name.lower().endswith(".eml") else name + ".eml")


def recordFilename(record: Record) -> str | None:
    """
    The file name the removed part's stored header lines give, for display.
    """
    return headerFilename(record.headers)


class IQuarantineView(Interface):
    """
    What the console's pages read of a quarantine; every answer comes
    later (the store is read in a thread).
    """

    def userItems(
        user: str, search: str = "", offset: int = 0, limit: int = 25
    ) -> Deferred[ItemPage]:
        """
        The page of C{user}'s items from C{offset} on (cut to the last
        item), newest first, only those with every word of C{search}
        (case-insensitive) in the file name, the subject or the sender.
        """

    def allItems(
        user: str | None, search: str = "", offset: int = 0, limit: int = 25
    ) -> Deferred[ItemPage]:
        """
        For administrators: the page of every user's items (or only
        C{user}'s; C{None} or empty: everyone's), newest first, matching
        every word of C{search}.
        """

    def users() -> Deferred[tuple[tuple[str, int], ...]]:
        """
        Every user with items, with how many, by name.
        """

    def item(identifier: str) -> Deferred[Item | None]:
        """
        The item C{identifier}, whoever's it is (C{None}: there is none);
        the pages check the user.
        """

    def original(item: Item) -> Deferred[bytes]:
        """
        The exact bytes quarantined as C{item}.
        """

    def download(item: Item) -> Deferred[Download]:
        """
        What the user downloads of C{item} (see L{downloadOf}).
        """


@implementer(IQuarantineView)
class DirectoryView:
    """
    A directory quarantine's records, by user, refreshed on each question.
    """

    def __init__(
        self,
        quarantine: DirectoryQuarantine,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = runHere,
    ) -> None:
        self.quarantine = quarantine
        self._runInThread = runInThread
        self._lock = threading.Lock()
        self._items: dict[str, Item] = {}
        #: Each user's items, newest first (rebuilt for users whose items changed).
        self._byUser: dict[str, list[Item]] = {}

    def userItems(
        self, user: str, search: str = "", offset: int = 0, limit: int = 25
    ) -> Deferred[ItemPage]:
        """
        The page of C{user}'s items from C{offset} on, newest first, only
        those matching every word of C{search}.
        """
        return self._runInThread(lambda: self._page(user, search, offset, limit))

    def item(self, identifier: str) -> Deferred[Item | None]:
        """
        The item C{identifier} (C{None}: there is none).
        """
        return self._runInThread(lambda: self._item(identifier))

    def original(self, item: Item) -> Deferred[bytes]:
        """
        The exact bytes quarantined as C{item}.
        """
        return self._runInThread(lambda: self.quarantine.original(item.record))

    def download(self, item: Item) -> Deferred[Download]:
        """
        What the user downloads of C{item} (see L{downloadOf}).
        """
        return self._runInThread(lambda: downloadOf(item, self.quarantine.original(item.record)))

    def allItems(
        self, user: str | None, search: str = "", offset: int = 0, limit: int = 25
    ) -> Deferred[ItemPage]:
        """
        For administrators: the page of every user's items (or only
        C{user}'s), newest first, matching every word of C{search}.
        """
        return self._runInThread(lambda: self._everyone(user, search, offset, limit))

    def users(self) -> Deferred[tuple[tuple[str, int], ...]]:
        """
        Every user with items, with how many, by name.
        """
        return self._runInThread(self._users)

    def _everyone(self, user: str | None, search: str, offset: int, limit: int) -> ItemPage:
        if user:
            return self._page(user, search, offset, limit)
        with self._lock:
            self._refresh()
            items = sorted(
                self._items.values(),
                key=lambda item: (item.record.time, item.record.id),
                reverse=True,
            )
        return _cut(items, search, offset, limit)

    def _users(self) -> tuple[tuple[str, int], ...]:
        with self._lock:
            self._refresh()
            return tuple(
                sorted((user, len(items)) for user, items in self._byUser.items() if items)
            )

    def _page(self, user: str, search: str, offset: int, limit: int) -> ItemPage:
        with self._lock:
            self._refresh()
            items = self._byUser.get(user, [])
        return _cut(items, search, offset, limit)

    def _item(self, identifier: str) -> Item | None:
        try:
            record = self.quarantine.get(identifier)
        except (KeyError, ValueError, OSError):
            return None
        if record.id != identifier:
            return None  # a path that ends in an id is not that id
        return Item(record, recordFilename(record))

    def _refresh(self) -> None:
        """
        Read the record files not seen yet, forget those gone, and re-sort
        the items of every user they belong to.
        """
        directory = self.quarantine.directory / "records"
        try:
            names = {
                entry.name[:-5]
                for entry in os.scandir(directory)
                if entry.name.endswith(".json") and not entry.name.startswith(".")
            }
        except FileNotFoundError:
            names = set()
        changed: set[str] = set()
        for gone in self._items.keys() - names:
            changed.add(self._items.pop(gone).record.user)
        for new in names - self._items.keys():
            item = self._load(directory / f"{new}.json")
            if item is not None:
                self._items[new] = item
                changed.add(item.record.user)
        if not changed:
            return
        for user in changed:
            self._byUser[user] = []
        for item in self._items.values():
            if item.record.user in changed:
                self._byUser[item.record.user].append(item)
        for user in changed:
            self._byUser[user].sort(
                key=lambda item: (item.record.time, item.record.id), reverse=True
            )

    @staticmethod
    def _load(path: os.PathLike[str]) -> Item | None:
        try:
            with open(path, encoding="utf-8") as file:
                record = recordFromFields(json.load(file))
        except (OSError, ValueError, KeyError):
            return None  # removed meanwhile, or being written by hand
        return Item(record, recordFilename(record))


def _cut(items: list[Item], search: str, offset: int, limit: int) -> ItemPage:
    """
    The page of C{items} matching every word of C{search} from C{offset}.
    """
    words = tuple(search.casefold().split())
    if words:
        items = [item for item in items if item.matches(words)]
    offset = max(0, min(offset, max(0, len(items) - 1)))
    return ItemPage(tuple(items[offset : offset + limit]), len(items), offset)
