"""
Release requests kept in the PostgreSQL quarantine, on a real PostgreSQL
15: a request is remembered once, an approval releases (the first
approver kept), pending lists what waits oldest first, an item that is
not kept cannot be asked for, purging an item deletes its release; the
command line's requests, release and reject work on the database; and a
database at schema version 1 is refused at start-up saying to migrate,
after which migrate fills in the file names of the records it kept.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from popproxy._assembly import checkQuarantineSchema
from popproxy._config import ConfigError, loadConfig
from popproxy._pgreleases import PostgresReleases
from popproxy._pgschema import SchemaError, migrate
from popproxy._pgstore import PostgresStore, openConnection
from popproxy._quarantineaddress import DatabaseAddress
from popproxy._quarantinecli import main
from popproxy._releases import IReleaseRequests
from tests.peers.postgres import PostgresDatabase
from tests.test_console_pgview import keep, migrated


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


def releases(store: PostgresStore, *times: float) -> PostgresReleases:
    clock = iter(times)
    return PostgresReleases(store.pool, clock=lambda: next(clock))


def test_requestThenApprove(postgres: PostgresDatabase) -> None:
    """
    A request is pending until approved; then the item is released,
    naming who asked and who approved, and is no longer pending; asking
    or approving again changes nothing.
    """
    store = migrated(postgres)
    item = keep(store, "alice", "a.exe", 1.0)
    queue = releases(store, 100.0, 200.0, 300.0, 400.0)
    assert verifyObject(IReleaseRequests, queue)
    assert queue.status(item) is None and not queue.isReleased(item)
    asked = queue.request(item, "alice")
    assert (asked.requestedBy, asked.requestedAt, asked.released) == ("alice", 100.0, False)
    assert queue.request(item, "alice").requestedAt == 100.0
    assert [release.id for release in queue.pending()] == [item]
    approved = queue.approve(item, "admin")
    assert (approved.requestedBy, approved.approvedBy, approved.approvedAt) == (
        "alice",
        "admin",
        300.0,
    )
    assert queue.approve(item, "other").approvedBy == "admin"
    assert queue.isReleased(item) and queue.pending() == []


def test_pendingOldestFirstAndApprovalUnasked(postgres: PostgresDatabase) -> None:
    """
    The queue is in the order the requests came; an administrator may
    release an item nobody asked for.
    """
    store = migrated(postgres)
    ids = [keep(store, "alice", f"{name}.exe", 1.0) for name in "cab"]
    queue = releases(store, 3.0, 1.0, 2.0, 4.0)
    for identifier in ids:
        queue.request(identifier, "alice")
    assert [release.id for release in queue.pending()] == [ids[1], ids[2], ids[0]]
    unasked = keep(store, "bob", "b.exe", 1.0)
    release = queue.approve(unasked, "admin")
    assert release.released and release.requestedBy is None


def test_unknownItemAndPurge(postgres: PostgresDatabase) -> None:
    """
    An item the quarantine does not keep cannot be asked for; purging an
    item deletes its release with it.
    """
    store = migrated(postgres)
    queue = releases(store, 1.0, 2.0)
    with pytest.raises(KeyError):
        queue.request("nope", "alice")
    item = keep(store, "alice", "old.exe", 1.0)
    queue.request(item, "alice")
    assert [record.id for record in store.purge(olderThan=86400)] == [item]
    assert queue.status(item) is None and queue.pending() == []
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_releases") == [(0,)]


def test_cliRequestsAndRelease(postgres: PostgresDatabase) -> None:
    """
    popproxy-quarantine requests lists the pending requests of the
    database, release approves one (status 1 for an unknown id).
    """
    store = migrated(postgres)
    item = keep(store, "alice", "a.exe", 1.0)
    assert cli("requests", postgres.url) == (0, "")
    PostgresReleases(store.pool).request(item, "alice")
    status, output = cli("requests", postgres.url)
    assert status == 0 and output.startswith(item) and output.rstrip().endswith("alice")
    status, output = cli("release", postgres.url, item, "--by", "root")
    assert status == 0 and output.startswith(f"released {item}")
    assert cli("requests", postgres.url) == (0, "")
    assert PostgresReleases(store.pool).status(item).approvedBy == "root"  # type: ignore[union-attr]
    assert cli("release", postgres.url, "nope")[0] == 1


def test_cliReject(postgres: PostgresDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """
    popproxy-quarantine reject refuses a pending request of the database,
    naming the administrator, after which it is no longer listed (status
    1 for an unknown id); rejecting an item already released says it
    stays released, exits 1, and leaves the row released.
    """
    store = migrated(postgres)
    asked = keep(store, "alice", "a.exe", 1.0)
    approved = keep(store, "bob", "b.exe", 2.0)
    queue = PostgresReleases(store.pool)
    queue.request(asked, "alice")
    assert cli("reject", postgres.url, "nope")[0] == 1
    assert capsys.readouterr().err == "popproxy-quarantine: no item nope\n"
    status, output = cli("reject", postgres.url, asked, "--by", "root")
    assert status == 0 and output.startswith(f"rejected {asked}")
    assert cli("requests", postgres.url) == (0, "")
    refused = queue.status(asked)
    assert refused is not None and (refused.rejectedBy, refused.released) == ("root", False)
    queue.approve(approved, "admin")
    assert cli("reject", postgres.url, approved, "--by", "root") == (1, "")
    assert capsys.readouterr().err == (
        f"popproxy-quarantine: {approved} was released by admin already;"
        " a released item stays released\n"
    )
    assert postgres.execute(
        f"SELECT approved_by, rejected_by FROM popproxy_quarantine_releases WHERE id = '{approved}'"
    ) == [("admin", None)]


def test_versionOneIsRefusedThenMigrated(
    postgres: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A database at schema version 1 stops start-up with the command to
    run; migrate applies versions 2 and 3, filling in the file names (and the
    subject, from the header lines) of the records kept before, a batch
    at a time; the proxy then starts.
    """
    monkeypatch.setattr("popproxy._pgschema._BACKFILL_BATCH", 1)
    address = DatabaseAddress(postgres.url)
    with openConnection(address, check=False) as connection:
        migrate(connection, upTo=1)
    postgres.execute(
        "INSERT INTO popproxy_quarantine_blobs VALUES ('d', 2, 'MZ');"
        " INSERT INTO popproxy_quarantine_records (id, stored_at, reason, plugin, user_name,"
        " upstream, size, sha256, headers, data) VALUES ('m1', now(), 'virus', 'scan', 'alice',"
        " 'tcp:u:110', 2, 'd', E'Subject: old one\\r\\nContent-Type: application/x;"
        ' name="old.exe"\', \'{"id": "m1", "time": 1.0, "sha256": "d", "user": "alice"}\');'
        " INSERT INTO popproxy_quarantine_records (id, stored_at, reason, plugin, user_name,"
        " upstream, size, sha256, headers, data) VALUES ('m2', now(), 'virus', 'scan', 'alice',"
        " 'tcp:u:110', 2, 'd', 'Subject: whole',"
        ' \'{"id": "m2", "time": 2.0, "sha256": "d"}\')'
    )
    config = tmp_path / "twistd.conf"
    config.write_text(
        f'[upstream]\ndefault = "tcp:127.0.0.1:110"\n[chain]\nquarantine = "{postgres.url}"\n'
    )
    with pytest.raises(ConfigError, match="version 1, this popproxy needs 3: run popproxy"):
        checkQuarantineSchema(loadConfig(config))
    with pytest.raises(SchemaError):
        openConnection(address)
    status, output = cli("--config", str(config), "migrate")
    assert status == 0 and "applied schema version(s) 2, 3" in output
    checkQuarantineSchema(loadConfig(config))
    assert postgres.execute(
        "SELECT filename, message_subject FROM popproxy_quarantine_records ORDER BY id"
    ) == [("old.exe", "old one"), ("", "whole")]


def test_rejectionLeavesTheQueueAndKeepsTheFirst(postgres: PostgresDatabase) -> None:
    """
    An administrator's refusal takes a request out of the queue, naming
    who refused; a second refusal keeps the first, an approval after it
    releases the item (approval wins), and refusing a released item
    changes nothing.
    """
    store = migrated(postgres)
    item = keep(store, "alice", "a.exe", 1.0)
    other = keep(store, "bob", "b.exe", 2.0)
    queue = releases(store, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0)
    queue.request(item, "alice")
    queue.request(other, "bob")
    refused = queue.reject(item, "admin")
    assert (refused.rejectedBy, refused.rejectedAt, refused.rejected) == ("admin", 300.0, True)
    assert [release.id for release in queue.pending()] == [other]
    assert queue.reject(item, "root").rejectedBy == "admin"
    assert queue.approve(other, "admin").released
    assert queue.reject(other, "root").rejectedBy is None and queue.isReleased(other)
    with pytest.raises(KeyError):
        queue.reject("no-such-item", "admin")


def test_statusesOfAPage(postgres: PostgresDatabase) -> None:
    """
    The states of a page of items come in one call (one statement), by identifier,
    the same as asking for each; items nobody asked for are left out.
    """
    store = migrated(postgres)
    ids = [keep(store, "alice", f"{name}.exe", 1.0) for name in "abc"]
    queue = releases(store, 1.0, 2.0)
    queue.request(ids[0], "alice")
    queue.approve(ids[2], "admin")
    found = queue.statuses([*ids, "unknown"])
    assert found == {ids[0]: queue.status(ids[0]), ids[2]: queue.status(ids[2])}
    assert found[ids[2]].released and not found[ids[0]].released
    assert queue.statuses([]) == {}
