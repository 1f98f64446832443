"""
Tests for the PostgreSQL quarantine store against a real PostgreSQL 15
(tests/peers/postgres.py, one database per test): migrate creates the
versioned schema once, a store keeps the exact bytes once per SHA-256 and
each record once, what the directory store keeps is kept here too, and
the command line lists, shows, exports, purges and copies on it.  A
database that is not migrated is refused with a message saying what to run.
Every statement of the proxy's connections is bounded in time unless the
address or the database sets its own bound; a store waiting on a lock
fails within the bound and works once the lock is gone.
"""

from __future__ import annotations

import io
import json
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest

from popproxy._assembly import checkQuarantineSchema
from popproxy._config import ConfigError, loadConfig
from popproxy._pgschema import SCHEMA_VERSION, SchemaError
from popproxy._pgstore import PostgresStore, openConnection
from popproxy._quarantine import DirectoryQuarantine, partItems, storeItems, summaryFields
from popproxy._quarantineaddress import DatabaseAddress
from popproxy._quarantinecli import _open, main
from popproxy.interfaces import FilterContext, RemovedPart
from tests.peers.postgres import PostgresDatabase

PART = b'Content-Type: application/octet-stream; name="x.exe"\r\n\r\nTVqQAAMAAAAEAAAA\r\n'
MESSAGE = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\nSubject: your\r\n invoice\r\n"
    b"Date: Thu, 3 Dec 2026 18:00:00 +0000\r\n\r\nbody\x00with NUL\r\n"
)


def context(user: str = "alice", uidl: str = "u-1") -> FilterContext:
    return FilterContext("RETR", 1, user, "127.0.0.1:1", "tcp:u:110", "s1", uidl=uidl)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


def migrated(postgres: PostgresDatabase) -> PostgresStore:
    assert cli("migrate", postgres.url)[0] == 0
    return PostgresStore(DatabaseAddress(postgres.url))


def test_migrateCreatesTheSchemaOnceAndRecordsItsVersion(postgres: PostgresDatabase) -> None:
    """
    migrate creates the tables, their indexes and one row per version in
    popproxy_schema_version; run again it changes nothing and says so.
    """
    status, output = cli("migrate", postgres.url)
    assert status == 0 and "applied schema version(s) 1" in output, output
    assert "quarantine-secret" not in output
    status, output = cli("migrate", postgres.url)
    assert status == 0 and "up to date" in output, output
    versions = postgres.execute("SELECT version FROM popproxy_schema_version ORDER BY version")
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    indexes = {
        row[0]
        for row in postgres.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'popproxy_quarantine_records'"
        )
    }
    for column in ("user", "time", "upstream", "reason"):
        assert f"popproxy_quarantine_records_{column}" in indexes


def test_unmigratedDatabaseIsRefusedSayingWhatToRun(postgres: PostgresDatabase) -> None:
    """
    A store or a listing on a database without the schema fails with a
    message naming popproxy-quarantine migrate; nothing is created.
    """
    with pytest.raises(SchemaError, match="run popproxy-quarantine migrate"):
        openConnection(DatabaseAddress(postgres.url))
    status, _ = cli("list", postgres.url)
    assert status == 2
    tables = postgres.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'popproxy%'")
    assert tables == []


def test_storeKeepsExactBytesOnceAndRecordsOnce(postgres: PostgresDatabase) -> None:
    """
    The same part stored for two users is one blob and two records; the
    same store again (a retry) adds nothing; a message with a NUL and
    encoded From and folded Subject comes back byte for byte, its summary
    fields decoded, in the record and in the columns.
    """
    store = migrated(postgres)
    first = store.write(storeItems(PART, context(), "blocked extension .exe", "strip"))
    second = store.write(storeItems(PART, context("bob"), "blocked extension .exe", "strip"))
    again = store.write(storeItems(PART, context(), "blocked extension .exe", "strip"))
    assert first == again and first != second
    message = store.write(storeItems(MESSAGE, context(uidl="u-2"), "virus", "scan"))
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_blobs") == [(2,)]
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_records") == [(3,)]
    record = store.get(message[0])
    assert store.original(record) == MESSAGE
    assert (record.user, record.uidl, record.plugin, record.reason) == (
        "alice",
        "u-2",
        "scan",
        "virus",
    )
    assert record.messageFrom == "Jörg <j@example.com>"
    assert record.messageSubject == "your invoice"
    assert record.messageDate == "Thu, 3 Dec 2026 18:00:00 +0000"
    columns = postgres.execute(
        "SELECT message_from, message_subject, user_name, upstream FROM"
        f" popproxy_quarantine_records WHERE id = '{message[0]}'"
    )
    assert columns == [("Jörg <j@example.com>", "your invoice", "alice", "tcp:u:110")]
    assert [r.user for r in store.records(user="bob")] == ["bob"]


def test_partsKeepTheMessageSummary(postgres: PostgresDatabase) -> None:
    """
    Parts removed from a message are a record each, with their path, and
    the message's From and Subject (their own header block has none).
    """
    store = migrated(postgres)
    parts = [RemovedPart(PART, (2,), "blocked .exe"), RemovedPart(PART, (3,), "blocked .exe")]
    ids = store.write(partItems(MESSAGE, parts, context(), "strip"))
    records = [store.get(identifier) for identifier in ids]
    assert [r.data["path"] for r in records] == [[2], [3]]
    assert {r.messageSubject for r in records} == {"your invoice"}
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_blobs") == [(1,)]


def test_summaryFieldsOfAnOldRecordComeFromItsHeaders() -> None:
    """
    A record stored before the summary fields existed gets them from its
    header block; a field it lacks is None.
    """
    summary = summaryFields("From: a@b\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nX: y")
    assert summary == {"messageFrom": "a@b", "messageSubject": "Grüße", "messageDate": None}


def test_cliListShowExportPurge(postgres: PostgresDatabase, tmp_path: Path) -> None:
    """
    list, show, export and purge name the database as their store; the
    password in the URL is never printed; export gives the exact bytes.
    """
    store = migrated(postgres)
    [identifier] = store.write(storeItems(MESSAGE, context(), "virus", "scan"))
    status, listing = cli("list", postgres.url)
    assert status == 0 and listing.startswith(identifier) and "alice" in listing, listing
    status, shown = cli("show", postgres.url, identifier)
    assert status == 0 and json.loads(shown)["reason"] == "virus"
    assert cli("export", postgres.url, identifier, "-o", str(tmp_path / "out"))[0] == 0
    assert (tmp_path / "out").read_bytes() == MESSAGE
    assert cli("show", postgres.url, "m-none")[0] == 1
    status, output = cli("purge", postgres.url, "--max-bytes", "0")
    assert status == 0 and "removed 1 item(s)" in output
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_blobs") == [(0,)]


def test_passwordFromPgpassword(
    postgres: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A URL without a password works with PGPASSWORD (libpq reads it), and
    fails without it (status 1, the reason on stderr).
    """
    migrated(postgres)
    bare = postgres.server.url(postgres.name, password=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    assert cli("list", bare)[0] == 1
    monkeypatch.setenv("PGPASSWORD", "quarantine-secret")
    assert cli("list", bare) == (0, "")


def test_copyFromADirectoryIsIdempotent(postgres: PostgresDatabase, tmp_path: Path) -> None:
    """
    copy --from DIR --to postgresql://… brings every record with its
    bytes; run twice, it copies nothing more (no duplicates); the records
    are the directory's, field for field.
    """
    directory = DirectoryQuarantine(tmp_path / "q")
    directory.store(MESSAGE, context(), "virus", "scan")
    directory.storeParts(MESSAGE, [RemovedPart(PART, (2,), "blocked .exe")], context(), "strip")
    directory.store(PART, context("bob"), "blocked .exe", "strip")
    migrated(postgres)
    source = str(tmp_path / "q")
    assert cli("copy", "--from", source, "--to", postgres.url) == (
        0,
        "copied 3 item(s), 0 already there\n",
    )
    assert cli("copy", "--from", source, "--to", postgres.url) == (
        0,
        "copied 0 item(s), 3 already there\n",
    )
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_records") == [(3,)]
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_blobs") == [(2,)]
    copied = PostgresStore(DatabaseAddress(postgres.url))
    for record in directory.records():
        kept = copied.get(record.id)
        assert kept.data == record.data and kept.time == record.time
        assert copied.original(kept) == directory.original(record)
    assert cli("list", source)[1] == cli("list", postgres.url)[1]


def test_storeFailsWhileTheServerIsDownAndWorksWhenBack(postgres: PostgresDatabase) -> None:
    """
    With the server stopped, a store raises (the proxy turns that into a
    temporary failure); started again, the same store object works, on a
    new connection, without being rebuilt.
    """
    store = migrated(postgres)
    store.write(storeItems(PART, context(), "r", "strip"))
    postgres.server.stop()
    try:
        with pytest.raises(Exception) as raised:
            store.write(storeItems(MESSAGE, context(), "r", "strip"))
        assert "connect" in str(raised.value).lower() or "closed" in str(raised.value).lower()
    finally:
        postgres.server.start()
    store.write(storeItems(MESSAGE, context(), "r", "strip"))
    assert len(list(store.records())) == 2


def test_startUpRefusesAnUnmigratedDatabase(postgres: PostgresDatabase, tmp_path: Path) -> None:
    """
    Start-up stops with one line naming the file, the key and the command
    to run when the configured database answers without the schema; once
    migrated, it starts.
    """
    config = tmp_path / "twistd.conf"
    config.write_text(
        f'[upstream]\ndefault = "tcp:127.0.0.1:110"\n[chain]\nquarantine = "{postgres.url}"\n'
    )
    loaded = loadConfig(config)
    with pytest.raises(ConfigError) as raised:
        checkQuarantineSchema(loaded)
    message = str(raised.value)
    assert message.startswith(f"{config}: [chain] quarantine: postgresql://popproxy@")
    assert f"popproxy-quarantine --config {config} migrate" in message
    assert "quarantine-secret" not in message
    assert cli("--config", str(config), "migrate")[0] == 0
    checkQuarantineSchema(loaded)


def statementTimeout(store: PostgresStore) -> str:
    """
    The C{statement_timeout} of the store's connections, as PostgreSQL shows it.
    """
    return str(store.pool.run(lambda c: c.execute("SHOW statement_timeout").fetchone()[0]))


def test_statementsAreBoundedUnlessTheDatabaseSetsItsOwnBound(postgres: PostgresDatabase) -> None:
    """
    The proxy's connections run each statement for at most 10 s; a bound
    from the address's options (even 0, no bound) or the database's own
    setting is kept instead; the command line's connections are unbounded.
    """
    assert statementTimeout(migrated(postgres)) == "10s"
    for given, shown in [("0", "0"), ("2min", "2min")]:
        options = urllib.parse.quote(f"-c statement_timeout={given}")
        url = f"{postgres.url}?options={options}"
        assert statementTimeout(PostgresStore(DatabaseAddress(url))) == shown
    assert statementTimeout(_open(DatabaseAddress(postgres.url))) == "0"
    postgres.execute(f"ALTER DATABASE \"{postgres.name}\" SET statement_timeout = '42s'")
    assert statementTimeout(PostgresStore(DatabaseAddress(postgres.url))) == "42s"


def test_storeWaitingOnALockFailsWithinTheBoundThenWorks(postgres: PostgresDatabase) -> None:
    """
    While another session holds the blobs table locked, a store fails
    with QueryCanceled after the bound (0.5 s here) instead of waiting for
    the lock, and keeps nothing; once the lock is released, the same
    store object writes on its kept connection.
    """
    migrated(postgres).close()
    store = PostgresStore(DatabaseAddress(postgres.url), statementTimeout=0.5)
    store.ping()
    with psycopg.connect(postgres.url) as holder:
        holder.execute("LOCK TABLE popproxy_quarantine_blobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            store.write(storeItems(MESSAGE, context(), "r", "strip"))
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5, waited
        holder.rollback()
    store.write(storeItems(MESSAGE, context(), "r", "strip"))
    assert [r.user for r in store.records()] == ["alice"]
    store.close()


def test_pingFailsWhileATableIsLockedAgainstReaders(postgres: PostgresDatabase) -> None:
    """
    The health check's ping reads the quarantine's tables: while another
    session holds one locked against readers it fails after the bound, so
    health says unreachable as long as writes would wait; once the lock is
    released it answers again.
    """
    migrated(postgres).close()
    store = PostgresStore(DatabaseAddress(postgres.url), statementTimeout=0.5)
    store.ping()
    with psycopg.connect(postgres.url) as holder:
        holder.execute("LOCK TABLE popproxy_quarantine_records IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            store.ping()
        holder.rollback()
    store.ping()
    store.close()
