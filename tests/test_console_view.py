"""
The console's view of a directory quarantine: a user's items newest
first, searched and paged, refreshed from the directory without reading
a record file twice, and file names read from the parts' headers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import popproxy.console._view as module
from popproxy._quarantine import DirectoryQuarantine, Record
from popproxy._testkit import settle
from popproxy.console._view import DirectoryView, Item, recordFilename
from tests.consoleharness import quarantined


def view(directory: Path) -> DirectoryView:
    return DirectoryView(DirectoryQuarantine(directory))


def test_usersItemsNewestFirst(tmp_path: Path) -> None:
    """
    A user gets their items only, newest first, with file names.
    """
    ids = []
    for number in range(3):
        ids.append(quarantined(tmp_path, "alice", f"f{number}.exe", b"x", uidl=f"u{number}"))
        path = tmp_path / "records" / f"{ids[-1]}.json"
        data = json.loads(path.read_text())
        data["time"] = 1000.0 + number
        path.write_text(json.dumps(data))
    quarantined(tmp_path, "bob", "b.exe", b"x")
    page = settle(view(tmp_path).userItems("alice"))
    assert [item.record.id for item in page.items] == ids[::-1]
    assert [item.filename for item in page.items] == ["f2.exe", "f1.exe", "f0.exe"]
    assert page.total == 3


def test_searchAndPaging(tmp_path: Path) -> None:
    """
    Every word must be in the file name, subject or sender (any case);
    pages are cut from the matching items.
    """
    quarantined(tmp_path, "alice", "budget.exe", b"x", uidl="1", subject="Plans for Q3")
    quarantined(tmp_path, "alice", "other.exe", b"x", uidl="2", subject="Lunch")
    directory = view(tmp_path)
    assert settle(directory.userItems("alice", "q3 BUDGET")).total == 1
    assert settle(directory.userItems("alice", "sender@example.com")).total == 2
    assert settle(directory.userItems("alice", "nothing")).total == 0
    second = settle(directory.userItems("alice", "", offset=1, limit=1))
    assert (len(second.items), second.offset, second.total) == (1, 1, 2)


def test_refreshReadsOnlyNewFiles(tmp_path: Path, monkeypatch: Any) -> None:
    """
    Asking again reads no record file already read; a new record is
    found, a purged one forgotten.
    """
    first = quarantined(tmp_path, "alice", "a.exe", b"x", uidl="1")
    directory = view(tmp_path)
    settle(directory.userItems("alice"))
    loads: list[Path] = []
    original = DirectoryView._load

    def countedLoad(path: Path) -> Item | None:
        loads.append(path)
        return original(path)

    monkeypatch.setattr(DirectoryView, "_load", staticmethod(countedLoad))
    assert settle(directory.userItems("alice")).total == 1 and loads == []
    quarantined(tmp_path, "alice", "b.exe", b"x", uidl="2")
    assert settle(directory.userItems("alice")).total == 2 and len(loads) == 1
    (tmp_path / "records" / f"{first}.json").unlink()
    assert settle(directory.userItems("alice")).total == 1


def test_itemAndOriginal(tmp_path: Path) -> None:
    """
    An item is found by id with its original bytes; an unknown or
    path-like id finds nothing.
    """
    identifier = quarantined(tmp_path, "alice", "a.exe", b"MZ\x00")
    directory = view(tmp_path)
    item = settle(directory.item(identifier))
    assert item is not None and settle(directory.original(item)).endswith(b"MZ\x00")
    assert settle(directory.item("nope")) is None
    assert settle(directory.item("../records/" + identifier)) is None


def test_filenameFromHeaders() -> None:
    """
    The name comes from the part's headers (RFC 2231 too), cleaned for
    display; a whole message or a nameless part has none.
    """

    def named(headers: str) -> str | None:
        return recordFilename(Record("p", 0, "", "", "", None, "", 0, "", headers, {}))

    assert (
        named("Content-Type: application/x; name*=utf-8''r%C3%A9sum%C3%A9.exe")
        == "r\u00e9sum\u00e9.exe"
    )
    assert named('Content-Disposition: attachment; filename="a\u202eexe.txt"') == "a exe.txt"
    assert named("Content-Type: text/plain") is None and named("") is None
    assert module.Item is not None


def test_downloadIsTheFileItself(tmp_path: Path) -> None:
    """
    An attachment downloads as its decoded content under its name; a
    whole message as kept, named .eml.
    """
    import base64

    from popproxy.console._view import Item, downloadOf

    part = b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"MZ\x00")
    record = Record("p1", 0, "", "", "", None, "", 0, "", "", {"path": [1]})
    assert downloadOf(Item(record, "a.exe"), part) == module.Download(b"MZ\x00", "a.exe")
    whole = Record("m1", 0, "", "", "", None, "", 0, "", "", {})
    assert downloadOf(Item(whole, None), b"Subject: x\r\n\r\n").filename == "message-m1.eml"
