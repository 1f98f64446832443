"""
The PostgreSQL quarantine's schema and its versions: the migrations, in
order, that C{popproxy-quarantine migrate} applies, and the check that a
database has the version this popproxy needs.  Nothing here runs at
start-up on its own: the proxy only reads the version and refuses a
database that is not migrated (L{SchemaError} says what to run).

Each migration is applied once, in its own transaction, under an advisory
lock (two C{migrate} commands at once wait for each other), and recorded
as a row of C{popproxy_schema_version}.  A later migration (the console's
release queue, say) is appended to L{MIGRATIONS}; a newer schema than
this popproxy knows is accepted, because migrations only add.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "MIGRATIONS",
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

#: The migrations, version 1 first: each a list of statements.
MIGRATIONS: tuple[Sequence[str], ...] = (_VERSION_1,)

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


def migrate(connection: Any) -> list[int]:
    """
    Apply the migrations the database lacks, each in its own transaction.

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
        for version, statements in enumerate(MIGRATIONS[start:], start + 1):
            with connection.transaction(), connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                cursor.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
            applied.append(version)
    finally:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return applied
