"""
Release requests kept in the PostgreSQL quarantine: an L{IReleaseRequests}
over the C{popproxy_quarantine_releases} table (schema versions 2 and 3), in
blocking calls (the console runs them in threads, C{popproxy-quarantine}
directly), so every instance's console and the command line share one
queue.

One row per item, its id a foreign key to the record: a request for an
item that is not kept fails (L{KeyError}), and purging an item deletes its
release with it.  A request and an approval are each one statement that
changes nothing when there is already one (two consoles asking at once
keep the first request; an approval keeps the first approver, a refusal
the first to refuse, and a released item stays released).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import psycopg
from zope.interface import implementer

from popproxy._pgschema import RELEASES
from popproxy._pgstore import ConnectionPool
from popproxy._releases import IReleaseRequests, Release

__all__ = ["PostgresReleases"]

_COLUMNS = (
    "id, requested_by, extract(epoch FROM requested_at)::float8,"
    " approved_by, extract(epoch FROM approved_at)::float8,"
    " rejected_by, extract(epoch FROM rejected_at)::float8"
)

_REQUEST = f"""
    INSERT INTO {RELEASES} (id, requested_by, requested_at)
    VALUES (%s, %s, to_timestamp(%s))
    ON CONFLICT (id) DO NOTHING"""

_APPROVE = f"""
    INSERT INTO {RELEASES} (id, approved_by, approved_at)
    VALUES (%s, %s, to_timestamp(%s))
    ON CONFLICT (id) DO UPDATE
        SET approved_by = excluded.approved_by, approved_at = excluded.approved_at
        WHERE {RELEASES}.approved_by IS NULL"""

# The first administrator to refuse is kept; a released item stays released.
_REJECT = f"""
    INSERT INTO {RELEASES} (id, rejected_by, rejected_at)
    VALUES (%s, %s, to_timestamp(%s))
    ON CONFLICT (id) DO UPDATE
        SET rejected_by = excluded.rejected_by, rejected_at = excluded.rejected_at
        WHERE {RELEASES}.approved_by IS NULL AND {RELEASES}.rejected_by IS NULL"""


def _release(row: tuple[Any, ...]) -> Release:
    return Release(*row)


def _changed(statement: str, parameters: tuple[Any, ...], connection: Any) -> Release:
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(statement, parameters)
        cursor.execute(f"SELECT {_COLUMNS} FROM {RELEASES} WHERE id = %s", parameters[:1])
        return _release(cursor.fetchone())


@implementer(IReleaseRequests)
class PostgresReleases:
    """
    Release state in the quarantine's database, on C{pool}'s connections.

    @param clock: the time now, in POSIX seconds.
    """

    def __init__(self, pool: ConnectionPool, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._clock = clock

    def status(self, identifier: str) -> Release | None:
        query = f"SELECT {_COLUMNS} FROM {RELEASES} WHERE id = %s"
        row = self._pool.run(lambda c: c.execute(query, (identifier,)).fetchone())
        return None if row is None else _release(row)

    def statuses(self, identifiers: Sequence[str]) -> dict[str, Release]:
        if not identifiers:
            return {}
        query = f"SELECT {_COLUMNS} FROM {RELEASES} WHERE id = ANY(%s)"
        rows = self._pool.run(lambda c: c.execute(query, (list(identifiers),)).fetchall())
        return {release.id: release for release in map(_release, rows)}

    def isReleased(self, identifier: str) -> bool:
        found = self.status(identifier)
        return found is not None and found.released

    def request(self, identifier: str, user: str) -> Release:
        return self._change(_REQUEST, (identifier, user, self._clock()))

    def approve(self, identifier: str, admin: str) -> Release:
        return self._change(_APPROVE, (identifier, admin, self._clock()))

    def reject(self, identifier: str, admin: str) -> Release:
        return self._change(_REJECT, (identifier, admin, self._clock()))

    def _change(self, statement: str, parameters: tuple[Any, ...]) -> Release:
        """
        Run C{statement} and read the item's state back, in one transaction.

        @raise KeyError: the quarantine keeps no such item.
        """
        try:
            return self._pool.run(partial(_changed, statement, parameters))
        except psycopg.errors.ForeignKeyViolation:
            raise KeyError(parameters[0]) from None

    def pending(self) -> list[Release]:
        query = (
            f"SELECT {_COLUMNS} FROM {RELEASES} WHERE approved_by IS NULL AND rejected_by IS NULL"
            " ORDER BY requested_at, id"
        )
        rows = self._pool.run(lambda c: c.execute(query).fetchall())
        return [_release(row) for row in rows]
