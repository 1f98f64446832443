"""
The console's view of a PostgreSQL quarantine, on a real PostgreSQL 15
(tests/peers/postgres.py, one database per test): a user's items only,
newest first, paged and searched by SQL (the search's C{%}, C{_} and C{\\}
match themselves), items by id with their bytes, records written before
schema version 2 found by name; and the console's pages over it, through
its real twisted.web site: a user sees and downloads their items, not
another user's, and a release requested on the page and approved by the
command line makes an item downloadable; a page on a locked table is an
error page once the statement bound has passed, not a request that never
ends.
"""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from popproxy._chain import runHere
from popproxy._pgreleases import PostgresReleases
from popproxy._pgschema import migrate
from popproxy._pgstore import PostgresStore, openConnection
from popproxy._quarantine import partItems
from popproxy._quarantineaddress import DatabaseAddress
from popproxy._quarantinecli import main as quarantineMain
from popproxy._testkit import settle
from popproxy.console._pgview import PostgresView, likePattern
from popproxy.console._view import IQuarantineView
from popproxy.interfaces import FilterContext, RemovedPart
from tests.consoleharness import ConsoleClient, ScriptedUpstream, makeAdmin, makeConsole
from tests.peers.postgres import PostgresDatabase


def migrated(postgres: PostgresDatabase) -> PostgresStore:
    with openConnection(DatabaseAddress(postgres.url), check=False) as connection:
        migrate(connection)
    return PostgresStore(DatabaseAddress(postgres.url))


def keep(
    store: PostgresStore,
    user: str,
    filename: str,
    when: float,
    subject: str = "Invoice",
    content: bytes = b"MZ",
    sender: str = "Sender <sender@example.com>",
) -> str:
    """
    Keep one attachment of a message to C{user}, stored at time C{when}; its id.
    """
    part = (
        f'Content-Type: application/octet-stream; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'
    ).encode() + content
    message = f"From: {sender}\r\nSubject: {subject}\r\n\r\n".encode() + part
    context = FilterContext("RETR", 1, user, "127.0.0.1:1", "tcp:u:110", "s1", uidl=f"{when}")
    [(identifier, original, metadata)] = partItems(
        message, [RemovedPart(part, (0,), "blocked extension .exe")], context, "strip"
    )
    store.write([(identifier, original, {**metadata, "time": when})])
    return identifier


def names(view: PostgresView, user: str, search: str = "", offset: int = 0, limit: int = 25) -> Any:
    page = settle(view.userItems(user, search, offset, limit))
    return [item.filename for item in page.items]


def test_usersItemsOnlyNewestFirst(postgres: PostgresDatabase) -> None:
    """
    A user gets their own items only, newest first (equal times in a
    fixed order), with file names and the message's summary.
    """
    store = migrated(postgres)
    for number in (1, 3, 2):
        keep(store, "alice", f"f{number}.exe", 1000.0 + number)
    keep(store, "bob", "b.exe", 5000.0)
    view = PostgresView(store, runHere)
    assert verifyObject(IQuarantineView, view)
    page = settle(view.userItems("alice"))
    assert [item.filename for item in page.items] == ["f3.exe", "f2.exe", "f1.exe"]
    assert page.total == 3 and page.offset == 0
    assert {item.record.user for item in page.items} == {"alice"}
    assert page.items[0].record.messageSubject == "Invoice"
    assert names(view, "bob") == ["b.exe"] and names(view, "carol") == []
    tied = [keep(store, "dave", f"t{number}.exe", 7.0) for number in range(3)]
    ids = [item.record.id for item in settle(view.userItems("dave")).items]
    assert ids == sorted(tied, reverse=True)


def test_pagesAreCutFromTheMatchingItems(postgres: PostgresDatabase) -> None:
    """
    30 items in pages of 25: the second page has the 5 oldest; an offset
    past the end gives the last item, with the total on every page.
    """
    store = migrated(postgres)
    for number in range(30):
        keep(store, "alice", f"f{number:02}.exe", 1000.0 + number)
    view = PostgresView(store, runHere)
    first = settle(view.userItems("alice", "", 0, 25))
    second = settle(view.userItems("alice", "", 25, 25))
    assert len(first.items) == 25 and first.items[0].filename == "f29.exe"
    assert [item.filename for item in second.items] == [f"f{n:02}.exe" for n in range(4, -1, -1)]
    assert (first.total, second.total, second.offset) == (30, 30, 25)
    beyond = settle(view.userItems("alice", "", 500, 25))
    assert (beyond.offset, [item.filename for item in beyond.items]) == (29, ["f00.exe"])
    assert names(view, "alice", "f1", 0, 5) == [f"f1{n}.exe" for n in range(9, 4, -1)]


def test_searchEveryWordInNameSubjectOrSender(postgres: PostgresDatabase) -> None:
    """
    Every word must be in the file name, the subject or the sender, in
    any case; a word in none of them finds nothing.
    """
    store = migrated(postgres)
    keep(store, "alice", "budget.exe", 1.0, subject="Plans for Q3")
    keep(store, "alice", "other.exe", 2.0, subject="Lunch", sender="Mallory <m@evil.test>")
    keep(store, "bob", "budget.exe", 3.0, subject="Plans for Q3")
    view = PostgresView(store, runHere)
    assert names(view, "alice", "q3 BUDGET") == ["budget.exe"]
    assert names(view, "alice", "mallory") == ["other.exe"]
    assert names(view, "alice", ".EXE") == ["other.exe", "budget.exe"]
    assert names(view, "alice", "budget lunch") == []
    assert settle(view.userItems("alice", "nothing")).total == 0


def test_likeMetacharactersMatchThemselves(postgres: PostgresDatabase) -> None:
    """
    A search for C{%}, C{_} or C{\\} finds only the items that have that
    character, not every item (as an unescaped LIKE pattern would).
    """
    store = migrated(postgres)
    keep(store, "alice", "100%_sure.exe", 1.0)
    keep(store, "alice", "1000 sure.exe", 2.0)
    keep(store, "alice", "a_b.exe", 3.0)
    keep(store, "alice", "axb.exe", 4.0)
    keep(store, "alice", "back.exe", 5.0, subject="C:\\temp")
    view = PostgresView(store, runHere)
    assert names(view, "alice", "%") == ["100%_sure.exe"]
    assert names(view, "alice", "0%") == ["100%_sure.exe"]
    assert names(view, "alice", "_") == ["a_b.exe", "100%_sure.exe"]
    assert names(view, "alice", "a_b") == ["a_b.exe"]
    assert names(view, "alice", "\\") == ["back.exe"]
    assert names(view, "alice", "c:\\t") == ["back.exe"]
    assert likePattern("5%_\\") == "%5\\%\\_\\\\%"


def test_itemByIdWithItsBytes(postgres: PostgresDatabase) -> None:
    """
    An item is found by id, whoever's it is (the pages check the user),
    with its exact bytes and its download; an unknown id finds nothing.
    """
    store = migrated(postgres)
    identifier = keep(store, "bob", "tool.exe", 1.0, content=b"MZ\x00\x01")
    view = PostgresView(store, runHere)
    item = settle(view.item(identifier))
    assert item is not None and item.record.user == "bob" and item.filename == "tool.exe"
    assert settle(view.original(item)).endswith(b"MZ\x00\x01")
    download = settle(view.download(item))
    assert (download.content, download.filename) == (b"MZ\x00\x01", "tool.exe")
    assert settle(view.item("nope")) is None
    assert settle(view.item("' OR TRUE --")) is None


def test_recordOfAnOlderInstanceIsFoundByName(postgres: PostgresDatabase) -> None:
    """
    A record without the file name column (written by an instance older
    than schema version 2 during an upgrade) is searched in its header
    lines and shown with the name they give.
    """
    store = migrated(postgres)
    identifier = keep(store, "alice", "legacy.exe", 1.0)
    postgres.execute(
        f"UPDATE popproxy_quarantine_records SET filename = NULL WHERE id = '{identifier}'"
    )
    view = PostgresView(store, runHere)
    assert names(view, "alice", "legacy") == ["legacy.exe"]


# The console's pages over PostgreSQL


def pgConsole(tmp_path: Path, store: PostgresStore, upstream: ScriptedUpstream) -> Any:
    """
    The test console (scripted upstream, synchronous) over C{store}.
    """
    console = makeConsole(tmp_path, upstream, userDownload=())
    return dataclasses.replace(
        console, view=PostgresView(store, runHere), releases=PostgresReleases(store.pool)
    )


def test_pagesOverPostgres(postgres: PostgresDatabase, tmp_path: Path) -> None:
    """
    Signed in, alice sees her item and not bob's (404 for its page and
    its download); her release request is in the database's queue, the
    command line approves it, and then the download gives the file.
    """
    store = migrated(postgres)
    mine = keep(store, "alice", "mine.exe", 1.0, content=b"MZ mine")
    theirs = keep(store, "bob", "theirs.exe", 2.0)
    client = ConsoleClient(pgConsole(tmp_path, store, ScriptedUpstream({"alice": "pw"})))
    assert client.signIn("alice", "pw").code == 303
    listing = client.get("/")
    assert listing.code == 200 and "mine.exe" in listing.text and "theirs.exe" not in listing.text
    assert client.get(f"/item/{theirs}").code == 404
    assert client.get(f"/item/{theirs}/download").code == 404
    assert client.get(f"/item/{mine}/download").code == 403
    page = client.get(f"/item/{mine}")
    assert client.post(f"/item/{mine}/release", {"csrf": page.formToken()}).code == 303
    out = io.StringIO()
    assert quarantineMain(["requests", postgres.url], out) == 0
    assert out.getvalue().startswith(mine) and "alice" in out.getvalue()
    assert quarantineMain(["release", postgres.url, mine, "--by", "root"], io.StringIO()) == 0
    download = client.get(f"/item/{mine}/download")
    assert download.code == 200 and download.body == b"MZ mine"
    assert 'filename="mine.exe"' in (download.header("Content-Disposition") or "")


def test_lockedTableGivesAnErrorPageWithinTheBound(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    """
    While another session holds the records table locked, alice's list
    answers 500 once the statement bound (0.5 s here) has passed, the
    reason in the log; with the lock released, it lists her item.
    """
    migrated(postgres).close()
    store = PostgresStore(DatabaseAddress(postgres.url), statementTimeout=0.5)
    keep(store, "alice", "mine.exe", 1.0)
    client = ConsoleClient(pgConsole(tmp_path, store, ScriptedUpstream({"alice": "pw"})))
    assert client.signIn("alice", "pw").code == 303
    with psycopg.connect(postgres.url) as holder:
        holder.execute("LOCK TABLE popproxy_quarantine_records IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with capturedLogs() as events:
            assert client.get("/").code == 500
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5, waited
        assert any("statement timeout" in str(e.get("log_failure", "")) for e in events)
        holder.rollback()
    listing = client.get("/")
    assert listing.code == 200 and "mine.exe" in listing.text
    store.close()


@pytest.mark.parametrize("search", ["%", "_", "100%"])
def test_searchPageEscapes(postgres: PostgresDatabase, tmp_path: Path, search: str) -> None:
    """
    The list page's search box with a LIKE metacharacter shows only the
    items that have it.
    """
    store = migrated(postgres)
    keep(store, "alice", "100%_sure.exe", 1.0)
    keep(store, "alice", "plain.exe", 2.0)
    client = ConsoleClient(pgConsole(tmp_path, store, ScriptedUpstream({"alice": "pw"})))
    client.signIn("alice", "pw")
    listing = client.get("/?q=" + search.replace("%", "%25"))
    assert "100%_sure.exe" in listing.text and "plain.exe" not in listing.text


def test_administratorsSeeEveryUsersItems(postgres: PostgresDatabase) -> None:
    """
    For the administrators' pages: every user's items newest first (or
    one user's), searched like a user's, and the users with how many
    items each, by name.
    """
    store = migrated(postgres)
    keep(store, "bob", "b1.exe", 10.0)
    keep(store, "alice", "a1.exe", 20.0)
    keep(store, "bob", "b2.exe", 30.0)
    view = PostgresView(store, runHere)
    page = settle(view.allItems(None))
    assert [item.filename for item in page.items] == ["b2.exe", "a1.exe", "b1.exe"]
    assert page.total == 3
    assert [item.filename for item in settle(view.allItems("alice")).items] == ["a1.exe"]
    assert [item.filename for item in settle(view.allItems(None, "b1")).items] == ["b1.exe"]
    assert settle(view.allItems(None, "100%")).items == ()
    assert settle(view.users()) == (("alice", 1), ("bob", 2))


def test_administratorPagesOverPostgres(postgres: PostgresDatabase, tmp_path: Path) -> None:
    """
    Over the database, an administrator's list shows every user's items,
    the queue shows alice's request, and Reject takes it out of the
    database's queue and tells alice it was declined.
    """
    store = migrated(postgres)
    mine = keep(store, "alice", "mine.exe", 1.0)
    keep(store, "bob", "theirs.exe", 2.0)
    console = pgConsole(tmp_path, store, ScriptedUpstream({"alice": "pw"}))
    alice = ConsoleClient(console)
    alice.signIn("alice", "pw")
    assert alice.post(f"/item/{mine}/release", {"csrf": alice.get("/").formToken()}).code == 303
    admin = ConsoleClient(console, peer="192.0.2.9", admin=makeAdmin(Clock()))
    assert admin.adminSignIn().code == 303
    listing = admin.get("/admin/items")
    assert "mine.exe" in listing.text and "theirs.exe" in listing.text
    assert "mine.exe" in admin.get("/admin").text
    page = admin.get(f"/admin/item/{mine}")
    assert admin.post(f"/admin/item/{mine}/reject", {"csrf": page.formToken()}).code == 303
    assert PostgresReleases(store.pool).pending() == []
    assert "An administrator declined" in alice.get(f"/item/{mine}").text
