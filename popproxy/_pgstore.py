"""
The quarantine's records and blobs in PostgreSQL, through psycopg 3, in
blocking calls: the proxy runs them in threads (L{popproxy._pgquarantine}),
C{popproxy-quarantine} directly.

Connections are kept in a small pool (L{ConnectionPool}): at most as many
as the proxy lets run at once, each opened when needed, given back after a
clean transaction, closed when it broke.  A connection that was kept idle
may have died with a restarted server: a failure on it is retried once on
a new connection, so the first store after PostgreSQL comes back works.
Every new connection first checks the schema version (L{checkSchema}).

Every statement the proxy and its console run is bounded in time
(L{DEFAULT_STATEMENT_TIMEOUT}): a PostgreSQL that accepts connections but
does not finish a statement (a lock held by another session, an overloaded
server) fails the store with C{QueryCanceled}, the "store down" the
quarantine already handles, before the chain's keepalive begins (so the
client still gets C{-ERR [SYS/TEMP]}), instead of holding a thread and a
connection (and a console page) for as long as the database does not
answer.  The bound is PostgreSQL's own C{statement_timeout}, set on each
new connection unless something already set one for it (the address's
C{options=-c statement_timeout=…}, C{PGOPTIONS}, C{ALTER ROLE/DATABASE …
SET}, C{postgresql.conf}): a server-side bound frees the server's side of
the statement too, and it costs nothing per statement.
C{popproxy-quarantine} runs unbounded (a migration or a purge of a large
quarantine may take long, and its user is there to interrupt it).

Blobs are stored once per SHA-256 (those already kept are not even sent
again), records once per id; everything of one store is one transaction,
committed before the store succeeds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Json

from popproxy._pgschema import BLOBS, RECORDS, checkSchema
from popproxy._quarantine import (
    SUMMARY_FIELDS,
    Record,
    StoreItem,
    headerFilename,
    purgeSelection,
    recordFromFields,
    summaryFields,
)
from popproxy._quarantineaddress import DatabaseAddress

__all__ = ["ConnectionPool", "PostgresStore", "connectionSettings", "openConnection"]

T = TypeVar("T")

#: Seconds to connect when the address does not say (libpq waits forever).
DEFAULT_CONNECT_TIMEOUT = 5

#: Seconds a statement may run when nothing else sets C{statement_timeout}.
#: The largest store, a 100 MB message (C{[limits] max_size}'s default),
#: took 2.3-4.3 s in all on the 2-vCPU test machine at a load of 10
#: (PostgreSQL 15 on loopback, fsync on), of which its blob's INSERT
#: 1.3-2.0 s in the server: a bound 2.3 times the slowest whole store.
DEFAULT_STATEMENT_TIMEOUT = 10.0

#: Sets C{statement_timeout} (milliseconds) for the session unless it came
#: from anywhere but PostgreSQL's built-in default.
_BOUND_STATEMENTS = (
    "SELECT set_config('statement_timeout', %s, false) FROM pg_settings"
    " WHERE name = 'statement_timeout' AND source = 'default'"
)


def connectionSettings(address: DatabaseAddress) -> str:
    """
    The libpq connection string of C{address}, with a connect timeout and
    the application name popproxy unless it sets them.

    @raise ValueError: libpq cannot read it.
    """
    try:
        given = conninfo_to_dict(address.conninfo)
    except psycopg.ProgrammingError as e:
        raise ValueError(f"not a PostgreSQL URL or connection string: {e}") from None
    defaults: dict[str, str | int] = {
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "application_name": "popproxy",
    }
    extra = {key: value for key, value in defaults.items() if key not in given}
    return make_conninfo(address.conninfo, **extra)


def openConnection(
    address: DatabaseAddress,
    check: bool = True,
    statementTimeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
) -> Any:
    """
    A new autocommit connection to C{address} (every change in an explicit
    transaction), its statements bounded, its schema checked unless
    C{check} is false.

    @param statementTimeout: seconds each statement may run, unless the
        address or the server sets C{statement_timeout} itself; C{None}:
        no bound of popproxy's.
    @raise psycopg.Error: it cannot connect.
    @raise SchemaError: the schema is missing or old.
    """
    connection = psycopg.connect(connectionSettings(address), autocommit=True)
    try:
        if statementTimeout is not None:
            connection.execute(_BOUND_STATEMENTS, (str(round(statementTimeout * 1000)),))
        if check:
            checkSchema(connection, address.describe())
    except BaseException:
        connection.close()
        raise
    return connection


class ConnectionPool:
    """
    Connections to one database, at most C{maxIdle} kept between uses
    (the caller bounds how many are in use at once).
    """

    def __init__(self, connect: Callable[[], Any], maxIdle: int) -> None:
        self._connect = connect
        self._maxIdle = maxIdle
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def run(self, work: Callable[[Any], T]) -> T:
        """
        C{work(connection)} on a kept connection or a new one; once more on
        a new one if a kept one turned out broken.
        """
        with self._lock:
            kept = self._idle.pop() if self._idle else None
        if kept is not None:
            try:
                return self._attempt(kept, work)
            except psycopg.OperationalError:
                if not kept.broken:
                    raise
        return self._attempt(self._connect(), work)

    def _attempt(self, connection: Any, work: Callable[[Any], T]) -> T:
        try:
            result = work(connection)
        except BaseException:
            self._giveBack(connection)
            raise
        self._giveBack(connection)
        return result

    def _giveBack(self, connection: Any) -> None:
        idle = connection.info.transaction_status == pq.TransactionStatus.IDLE
        if not connection.broken and idle:
            with self._lock:
                if len(self._idle) < self._maxIdle:
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """
        Close the kept connections.
        """
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(value: Any) -> Any:
    """
    C{value} fit for a text column: PostgreSQL's text holds no NUL.
    """
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _recordRow(identifier: str, metadata: dict[str, Any]) -> tuple[Any, ...]:
    """
    The columns of a record: its fields, the file name read from its
    header lines (C{''}: none) and its message's From, Subject and Date
    (read from the header lines if a record copied over lacks them), so
    that the console finds them by SQL.
    """
    path = metadata.get("path")
    headers = metadata.get("headers", "")
    kept = {key: metadata[key] for key in SUMMARY_FIELDS.values() if key in metadata}
    # The proxy's own records keep all three: their headers are read
    # again only for a record copied over without them.
    summary = {} if len(kept) == len(SUMMARY_FIELDS) else summaryFields(headers)
    summary.update(kept)
    row = (
        identifier,
        metadata["time"],
        metadata.get("reason", ""),
        metadata.get("plugin", ""),
        metadata.get("user", ""),
        metadata.get("uidl"),
        metadata.get("upstream", ""),
        metadata.get("command"),
        metadata.get("index"),
        metadata.get("client"),
        metadata.get("session"),
        ".".join(map(str, path)) if path is not None else None,
        metadata.get("size", 0),
        metadata["sha256"],
        headers,
        summary["messageFrom"],
        summary["messageSubject"],
        summary["messageDate"],
        headerFilename(headers) or "",
    )
    return (*map(_text, row), Json(metadata))


_INSERT_RECORD = f"""
    INSERT INTO {RECORDS} (
        id, stored_at, reason, plugin, user_name, uidl, upstream, command,
        message_index, client, session, part_path, size, sha256, headers,
        message_from, message_subject, message_date, filename, data
    ) VALUES (
        %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
        %s, %s, %s, %s, %s
    ) ON CONFLICT (id) DO NOTHING"""


def _readBothTables(connection: Any) -> None:
    """
    Read nothing from each quarantine table: enough to take the lock any
    reader needs, and to fail if a table is missing.
    """
    for table in (RECORDS, BLOBS):
        connection.execute(f"SELECT 1 FROM {table} LIMIT 0")


class PostgresStore:
    """
    The quarantine in one PostgreSQL database, in blocking calls that may
    run in several threads at once (each on its own connection).
    """

    def __init__(
        self,
        address: DatabaseAddress,
        maxConnections: int = 4,
        statementTimeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    ) -> None:
        self.address = address
        self.pool = ConnectionPool(
            lambda: openConnection(address, statementTimeout=statementTimeout), maxConnections
        )

    def ping(self) -> None:
        """
        Succeed when the database answers and the quarantine's tables can
        be read: a missing table fails, and so does a table locked against
        readers (as a migration or an administrator's C{LOCK TABLE} does)
        once the statement time limit is over, so the health page does not
        call the store reachable while every write would wait.
        """
        self.pool.run(_readBothTables)

    # Writing

    def write(self, items: Sequence[StoreItem]) -> list[str]:
        """
        Keep every item not kept yet, in one transaction; their ids.
        """
        self.pool.run(lambda connection: self._write(connection, items))
        return [identifier for identifier, _, _ in items]

    def _write(self, connection: Any, items: Sequence[StoreItem]) -> int:
        """
        Insert the blobs not kept yet, then the records; how many records
        are new.
        """
        blobs = {_digest(original): original for _, original, _ in items}
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(f"SELECT sha256 FROM {BLOBS} WHERE sha256 = ANY(%s)", (list(blobs),))
            kept = {digest for (digest,) in cursor.fetchall()}
            cursor.executemany(
                f"INSERT INTO {BLOBS} (sha256, size, octets) VALUES (%s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                [(d, len(data), data) for d, data in blobs.items() if d not in kept],
            )
            added = 0
            for identifier, original, metadata in items:
                fields = {**metadata, "sha256": _digest(original)}
                cursor.execute(_INSERT_RECORD, _recordRow(identifier, fields))
                added += cursor.rowcount
        return added

    def add(self, record: Record, original: bytes) -> bool:
        """
        Keep C{record} (read from another store) with its C{original},
        unless a record of its id is kept already (C{copy}): whether new.
        """
        item = (record.id, original, dict(record.data))
        return self.pool.run(lambda connection: self._write(connection, [item])) > 0

    # Reading (the CLI)

    def records(self, user: str | None = None, since: float | None = None) -> Iterator[Record]:
        """
        Every record (of C{user}, from time C{since} on), oldest first.
        """
        query = f"SELECT data FROM {RECORDS} WHERE TRUE"
        parameters: list[Any] = []
        if user is not None:
            query += " AND user_name = %s"
            parameters.append(user)
        if since is not None:
            query += " AND stored_at >= to_timestamp(%s)"
            parameters.append(since)
        query += " ORDER BY stored_at, id"
        rows = self.pool.run(lambda connection: connection.execute(query, parameters).fetchall())
        for (data,) in rows:
            yield recordFromFields(data)

    def get(self, identifier: str) -> Record:
        """
        @raise KeyError: no such record.
        """
        query = f"SELECT data FROM {RECORDS} WHERE id = %s"
        row = self.pool.run(lambda connection: connection.execute(query, (identifier,)).fetchone())
        if row is None:
            raise KeyError(identifier)
        return recordFromFields(row[0])

    def original(self, record: Record) -> bytes:
        """
        The exact bytes that were quarantined.
        """
        query = f"SELECT octets FROM {BLOBS} WHERE sha256 = %s"
        row = self.pool.run(lambda c: c.execute(query, (record.sha256,)).fetchone())
        if row is None:
            raise KeyError(record.sha256)
        return bytes(row[0])

    def purge(
        self, olderThan: float | None = None, maxBytes: int | None = None, dryRun: bool = False
    ) -> list[Record]:
        """
        The documented cleanup, as L{DirectoryQuarantine.purge} does it:
        the records removed (or that would be, with C{dryRun}).
        """
        removed = purgeSelection(list(self.records()), time.time(), olderThan, maxBytes)
        if not dryRun and removed:
            self.pool.run(lambda connection: self._delete(connection, removed))
        return removed

    def _delete(self, connection: Any, removed: Sequence[Record]) -> None:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {RECORDS} WHERE id = ANY(%s)", ([r.id for r in removed],))
            cursor.execute(
                f"DELETE FROM {BLOBS} b WHERE b.sha256 = ANY(%s) AND NOT EXISTS"
                f" (SELECT 1 FROM {RECORDS} r WHERE r.sha256 = b.sha256)",
                (list({r.sha256 for r in removed}),),
            )

    def close(self) -> None:
        self.pool.close()
