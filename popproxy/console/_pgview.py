"""
The PostgreSQL quarantine as the console reads it: an L{IQuarantineView}
whose every question is SQL on the records table, so that every instance
sharing the database shows the same items at once, and nothing is held
in memory between requests.

A user's page is two statements in one transaction: how many of their
items match, and the page itself, newest first, by the index on
C{(user_name, stored_at DESC, id DESC)}.  A search is one C{LIKE} per
word on the record's C{search_text} (its file name, subject and sender,
lower-cased when it was written), the word lower-cased the same way and
its C{%}, C{_} and C{\\} escaped so that they match themselves.  A record written by an
instance older than schema version 2 has no file name column yet: it is
searched in its header lines and its name read from them.

The blocking work (L{PostgresStore}'s connections) runs where
C{runInThread} puts it: the reactor's thread pool in the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from popproxy._pgschema import RECORDS
from popproxy._pgstore import PostgresStore
from popproxy._quarantine import headerFilename, recordFromFields
from popproxy.console._view import Download, IQuarantineView, Item, ItemPage, downloadOf

__all__ = ["PostgresView", "likePattern"]


def likePattern(word: str) -> str:
    """
    The C{LIKE} pattern (escape character C{\\}) that finds C{word}
    anywhere, its own C{%}, C{_} and C{\\} taken literally.
    """
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _selection(user: str, search: str) -> tuple[str, list[Any]]:
    """
    The C{WHERE} clause and its parameters for C{user}'s items with every
    word of C{search}.
    """
    words = search.split()
    clause = "user_name = %s" + " AND search_text LIKE lower(%s) ESCAPE '\\'" * len(words)
    return clause, [user, *map(likePattern, words)]


def _item(filename: str | None, data: dict[str, Any]) -> Item:
    record = recordFromFields(data)
    if filename is None:
        filename = headerFilename(record.headers)
    return Item(record, filename or None)


@implementer(IQuarantineView)
class PostgresView:
    """
    The items of the quarantine in C{store}'s database.
    """

    def __init__(
        self, store: PostgresStore, runInThread: Callable[[Callable[[], Any]], Deferred[Any]]
    ) -> None:
        self.store = store
        self._runInThread = runInThread

    def userItems(
        self, user: str, search: str = "", offset: int = 0, limit: int = 25
    ) -> Deferred[ItemPage]:
        work = partial(_page, user=user, search=search, offset=offset, limit=limit)
        return self._runInThread(partial(self.store.pool.run, work))

    def item(self, identifier: str) -> Deferred[Item | None]:
        return self._runInThread(lambda: self._item(identifier))

    def original(self, item: Item) -> Deferred[bytes]:
        return self._runInThread(lambda: self.store.original(item.record))

    def download(self, item: Item) -> Deferred[Download]:
        return self._runInThread(lambda: downloadOf(item, self.store.original(item.record)))

    def _item(self, identifier: str) -> Item | None:
        query = f"SELECT filename, data FROM {RECORDS} WHERE id = %s"
        row = self.store.pool.run(lambda c: c.execute(query, (identifier,)).fetchone())
        return None if row is None else _item(*row)


def _page(connection: Any, user: str, search: str, offset: int, limit: int) -> ItemPage:
    """
    The page of C{user}'s items matching C{search} from C{offset} on (cut
    to the last one), and how many match, in one transaction.
    """
    where, parameters = _selection(user, search)
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {RECORDS} WHERE {where}", parameters)
        (total,) = cursor.fetchone()
        offset = max(0, min(offset, max(0, total - 1)))
        cursor.execute(
            f"SELECT filename, data FROM {RECORDS} WHERE {where}"
            " ORDER BY stored_at DESC, id DESC LIMIT %s OFFSET %s",
            [*parameters, limit, offset],
        )
        rows = cursor.fetchall()
    return ItemPage(tuple(_item(*row) for row in rows), total, offset)
