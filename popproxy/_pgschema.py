"""
The PostgreSQL quarantine's schema and its versions: the migrations, in
order, that C{popproxy-quarantine migrate} applies, and the check that a
database has the version this popproxy needs.  Nothing here runs at
start-up on its own: the proxy only reads the version and refuses a
database that is not migrated (L{SchemaError} says what to run).

Each migration is applied once, in its own transaction, under an advisory
lock (two C{migrate} commands at once wait for each other), and recorded
as a row of C{popproxy_schema_version}.  A later migration is appended to
L{MIGRATIONS}; a newer schema than this popproxy knows is accepted,
because migrations only add.  A step of a migration is a statement, or a
function of a cursor for what SQL alone cannot do (reading file names
from stored header lines).

Version 2 is the console's: each record's file name, the text its search
looks in (file name, subject, sender; lower-cased once, when written), an
index that gives a user's newest items in order, and the release
requests, deleted with their record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from popproxy._quarantine import headerFilename, summaryFields

__all__ = [
    "MIGRATIONS",
    "RELEASES",
    "SCHEMA_VERSION",
    "SchemaError",
    "checkSchema",
    "migrate",
    "schemaVersion",
]

#: The table that says which migrations a database has.
VERSION_TABLE = "popproxy_schema_version"

#: Records: one row per quarantined item, the fields the directory store
#: keeps (C{data}: the whole record document, as C{show} prints it).
RECORDS = "popproxy_quarantine_records"

#: Blobs: the exact octets, once per SHA-256.
BLOBS = "popproxy_quarantine_blobs"

_VERSION_1 = (
    f"""
    CREATE TABLE {BLOBS} (
        sha256 text PRIMARY KEY,
        size bigint NOT NULL,
        octets bytea NOT NULL
    )""",
    f"""
    CREATE TABLE {RECORDS} (
        id text PRIMARY KEY,
        stored_at timestamptz NOT NULL,
        reason text NOT NULL,
        plugin text NOT NULL,
        user_name text NOT NULL,
        uidl text,
        upstream text NOT NULL,
        command text,
        message_index integer,
        client text,
        session text,
        part_path text,
        size bigint NOT NULL,
        sha256 text NOT NULL REFERENCES {BLOBS} (sha256),
        headers text NOT NULL,
        message_from text,
        message_subject text,
        message_date text,
        data json NOT NULL
    )""",
    f"CREATE INDEX {RECORDS}_user ON {RECORDS} (user_name, stored_at)",
    f"CREATE INDEX {RECORDS}_time ON {RECORDS} (stored_at)",
    f"CREATE INDEX {RECORDS}_upstream ON {RECORDS} (upstream, stored_at)",
    f"CREATE INDEX {RECORDS}_reason ON {RECORDS} (reason)",
    f"CREATE INDEX {RECORDS}_sha256 ON {RECORDS} (sha256)",
)

#: Release requests and approvals of the console, one row per item.
RELEASES = "popproxy_quarantine_releases"

#: Rows updated per statement when version 2 fills in file names.
_BACKFILL_BATCH = 500


def _fillFilenames(cursor: Any) -> None:
    """
    Version 2's new C{filename} column of the records kept before it
    (C{''}: the item has none), and their From, Subject and Date where
    they were stored without (records copied from an older directory);
    a batch at a time, so that a large quarantine is never all in memory.
    """
    while True:
        cursor.execute(
            f"SELECT id, headers, message_from, message_subject, message_date FROM {RECORDS}"
            " WHERE filename IS NULL LIMIT %s",
            (_BACKFILL_BATCH,),
        )
        rows = cursor.fetchall()
        if not rows:
            return
        cursor.executemany(
            f"UPDATE {RECORDS} SET filename = %s, message_from = %s, message_subject = %s,"
            " message_date = %s WHERE id = %s",
            [_filled(*row) for row in rows],
        )


def _filled(
    identifier: str, headers: str, sender: str | None, subject: str | None, date: str | None
) -> tuple[Any, ...]:
    """
    The new values of one record's file name and summary fields, and its id.
    """
    summary = summaryFields(headers)
    values = (
        headerFilename(headers) or "",
        sender if sender is not None else summary["messageFrom"],
        subject if subject is not None else summary["messageSubject"],
        date if date is not None else summary["messageDate"],
        identifier,
    )
    return tuple(map(_noNul, values))


def _noNul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


_VERSION_2: tuple[str | Callable[[Any], None], ...] = (
    # NULL: not known (a record written by an older instance during an
    # upgrade: the console then reads it from the header lines).
    f"ALTER TABLE {RECORDS} ADD COLUMN filename text",
    _fillFilenames,
    f"CREATE INDEX {RECORDS}_user_newest ON {RECORDS} (user_name, stored_at DESC, id DESC)",
    # What the console's search looks in, lower-cased once when written.
    f"""
    ALTER TABLE {RECORDS} ADD COLUMN search_text text GENERATED ALWAYS AS (lower(
        coalesce(filename, headers) || ' ' || coalesce(message_subject, '') || ' '
        || coalesce(message_from, '')
    )) STORED""",
    f"""
    CREATE TABLE {RELEASES} (
        id text PRIMARY KEY REFERENCES {RECORDS} (id) ON DELETE CASCADE,
        requested_by text,
        requested_at timestamptz,
        approved_by text,
        approved_at timestamptz
    )""",
    f"CREATE INDEX {RELEASES}_pending ON {RELEASES} (requested_at, id) WHERE approved_by IS NULL",
)

#: The migrations, version 1 first: each a list of statements (or
#: functions of a cursor).
MIGRATIONS: tuple[Sequence[str | Callable[[Any], None]], ...] = (_VERSION_1, _VERSION_2)

#: The version this popproxy writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)

#: Taken by C{migrate} for its whole run: one migration at a time.
_MIGRATE_LOCK = 0x706F7071  # "popq"


class SchemaError(Exception):
    """
    The database does not have the schema this popproxy needs; the message
    says what to do.
    """


def schemaVersion(connection: Any) -> int:
    """
    The newest migration applied to the database (0: none, not even the
    version table).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,))
        (exists,) = cursor.fetchone()
        if not exists:
            return 0
        cursor.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}")
        (version,) = cursor.fetchone()
    return int(version)


def checkSchema(connection: Any, description: str) -> int:
    """
    The database's schema version, if this popproxy can use it.

    @param description: the database, as the message names it.
    @raise SchemaError: it is not migrated (far enough).
    """
    version = schemaVersion(connection)
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"{description} has quarantine schema version {version}, this popproxy needs "
            f"{SCHEMA_VERSION}: run popproxy-quarantine migrate first"
        )
    return version


def migrate(connection: Any, upTo: int = SCHEMA_VERSION) -> list[int]:
    """
    Apply the migrations the database lacks, each in its own transaction.

    @param upTo: the last version to apply (the tests make older schemas).
    @return: the versions applied now (none when it is up to date).
    """
    applied: list[int] = []
    connection.autocommit = True
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
    try:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        start = schemaVersion(connection)
        for version, statements in enumerate(MIGRATIONS[start:upTo], start + 1):
            with connection.transaction(), connection.cursor() as cursor:
                for statement in statements:
                    if callable(statement):
                        statement(cursor)
                    else:
                        cursor.execute(statement)
                cursor.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
            applied.append(version)
    finally:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return applied
