"""
Tests for the quarantine store and its command line: exact originals,
content-addressed blobs, records with the original's headers, the parts
of one message kept at once under ids a retry finds again, failures that
refuse instead of losing, listing, export and the purge cleanup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.failure import Failure

import popproxy._quarantine as module
from popproxy._quarantine import DirectoryQuarantine, Record, purgeSelection
from popproxy._quarantinecli import main, parseSince
from popproxy.interfaces import FilterContext, RemovedPart
from popproxy.testing import MemoryQuarantine

PART = b'Content-Type: application/octet-stream; name="x.exe"\r\n\r\nTVqQAAMAAAAEAAAA\r\n'


def context(user: str = "alice") -> FilterContext:
    return FilterContext("RETR", 1, user, "127.0.0.1:1", "tcp:u:110", "s1", uidl="u-1")


def stored(quarantine: DirectoryQuarantine, data: bytes, user: str = "alice") -> str:
    results: list[object] = []
    quarantine.store(data, context(user), "blocked extension .exe", "strip").addBoth(results.append)
    assert isinstance(results[0], str), results
    return results[0]


def test_storeKeepsExactBytesOnce(tmp_path: Path) -> None:
    """
    Each store gets its own record; identical bytes are stored once; the
    record names user, UIDL, plugin, reason and the original's headers.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    first = stored(quarantine, PART)
    second = stored(quarantine, PART, "bob")
    assert first != second
    records = list(quarantine.records())
    assert [r.user for r in records] == ["alice", "bob"]
    assert quarantine.original(records[0]) == PART
    assert len(list((tmp_path / "blobs").rglob("*"))) == 2  # one subdirectory, one blob
    assert records[0].headers == 'Content-Type: application/octet-stream; name="x.exe"'
    assert (records[0].plugin, records[0].uidl) == ("strip", "u-1")


def test_storeSameMessageOnce(tmp_path: Path) -> None:
    """
    Storing the same original of the same message again (same user,
    upstream and UIDL, plugin and reason), as a retry does, returns the
    same id and writes nothing: the record keeps the time of the first
    store.  Another UIDL, reason or plugin is a record of its own (the
    blob is shared); without UIDL the octets name the message.  The
    in-memory quarantine of the test kit gives the very same ids, once.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    first = stored(quarantine, PART)
    assert first.startswith("m") and len(first) == 32
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    time.sleep(0.01)
    assert stored(quarantine, PART) == first
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before
    [record] = quarantine.records()
    assert record.id == first and record.uidl == "u-1"

    def storedAs(ctx: FilterContext, reason: str = "r", plugin: str = "strip") -> str:
        results: list[object] = []
        quarantine.store(PART, ctx, reason, plugin).addBoth(results.append)
        assert isinstance(results[0], str), results
        return results[0]

    other = FilterContext("RETR", 1, "alice", "127.0.0.1:1", "tcp:u:110", "s2", uidl="u-2")
    noUidl = FilterContext("RETR", 1, "alice", "127.0.0.1:1", "tcp:u:110", "s3", uidl=None)
    ids = [
        storedAs(other),
        storedAs(other, reason="another reason"),
        storedAs(other, plugin="scan"),
        storedAs(noUidl),
    ]
    assert len({first, *ids}) == 5
    assert storedAs(noUidl) == ids[-1]
    assert len(list(quarantine.records())) == 5
    assert len([path for path in (tmp_path / "blobs").rglob("*") if path.is_file()]) == 1
    assert not list(tmp_path.rglob("*.tmp"))

    memory = MemoryQuarantine()
    assert memory.store(PART, context(), "blocked extension .exe", "strip") == first
    assert memory.store(PART, context(), "blocked extension .exe", "strip") == first
    assert memory.store(PART, other, "r", "strip") == ids[0]
    assert [item.identifier for item in memory.stored] == [first, ids[0]]


def test_storeIsDurableBeforeItAnswers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A store writes the blob and the record to temporary names, flushes
    both to disk, renames the blob into place before the record naming
    it, and flushes the directories holding the new names.
    """
    events: list[tuple[str, str]] = []
    realFsync, realReplace = module.os.fsync, module.os.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        realFsync(descriptor)

    def replace(source: str | Path, target: str | Path) -> None:
        events.append(("rename", str(target)))
        realReplace(source, target)

    monkeypatch.setattr(module.os, "fsync", fsync)
    monkeypatch.setattr(module.os, "replace", replace)
    identifier = stored(DirectoryQuarantine(tmp_path), PART)
    digest = hashlib.sha256(PART).hexdigest()
    blob = str(tmp_path / "blobs" / digest[:2] / digest)
    record = str(tmp_path / "records" / f"{identifier}.json")
    flushed = [name for kind, name in events[:2] if kind == "fsync"]
    assert len(flushed) == 2 and all(name.endswith(".tmp") for name in flushed)
    assert events[2:4] == [("rename", blob), ("rename", record)]
    assert sorted(events[4:]) == [
        ("fsync", str(tmp_path / "blobs" / digest[:2])),
        ("fsync", str(tmp_path / "records")),
    ]


def storedParts(
    quarantine: DirectoryQuarantine, message: bytes, parts: list[RemovedPart], uidl: str | None
) -> list[str]:
    results: list[object] = []
    ctx = FilterContext("RETR", 1, "alice", "127.0.0.1:1", "tcp:u:110", "s1", uidl=uidl)
    quarantine.storeParts(message, parts, ctx, "strip").addBoth(results.append)
    assert isinstance(results[0], list), results
    return results[0]


def test_storePartsOneRecordEachOnce(tmp_path: Path) -> None:
    """
    Parts stored together get one record each, with the part's path and
    octets, readable by the CLI's reader; storing them again for the same
    message (same UIDL, or without UIDL the same octets) returns the same
    ids and writes nothing; the same part of another message is a record
    of its own, sharing the blob.  No temporary file is left behind.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    parts = [
        RemovedPart(PART, (1,), "blocked extension .exe"),
        RemovedPart(PART.replace(b"x.exe", b"y.exe"), (2, 0), "blocked extension .exe"),
    ]
    ids = storedParts(quarantine, b"message", parts, "u-1")
    assert len(set(ids)) == 2
    assert [record.data["path"] for record in map(quarantine.get, ids)] == [[1], [2, 0]]
    assert [quarantine.original(quarantine.get(i)) for i in ids] == [p.original for p in parts]
    before = sorted(path.stat().st_mtime_ns for path in tmp_path.rglob("*.json"))
    assert storedParts(quarantine, b"other octets, same UIDL", parts, "u-1") == ids
    assert sorted(path.stat().st_mtime_ns for path in tmp_path.rglob("*.json")) == before
    noUidl = storedParts(quarantine, b"message", parts, None)
    assert storedParts(quarantine, b"message", parts, None) == noUidl
    assert storedParts(quarantine, b"another message", parts, None) != noUidl
    assert len(list(quarantine.records())) == 6
    assert len([path for path in (tmp_path / "blobs").rglob("*") if path.is_file()]) == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_manyPartsSyncTheFileSystemTwice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Past a handful of new files, a batch is made durable with two syncs of
    the file system (the contents before the renames, the names after),
    not a flush per file or per directory.
    """
    calls: list[int] = []
    flushes: list[int] = []
    real = module._syncfs
    assert real is not None, "no syncfs on this system"

    def syncfs(descriptor: int) -> int:
        calls.append(descriptor)
        return real(descriptor)

    monkeypatch.setattr(module, "_syncfs", syncfs)
    monkeypatch.setattr(module.os, "fsync", flushes.append)
    parts = [RemovedPart(PART + b"%d" % index, (index,), "r") for index in range(50)]
    ids = storedParts(DirectoryQuarantine(tmp_path), b"m", parts, "u-1")
    assert len(set(ids)) == 50 and len(list((tmp_path / "records").iterdir())) == 50
    assert len(calls) == 2 and flushes == []


def test_unwritableFailsTheStoreEvenAsRoot(tmp_path: Path) -> None:
    """
    Even as root, a store whose records directory is not a directory fails
    instead of reporting success; no record appears.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    (tmp_path / "records").rmdir()
    (tmp_path / "records").write_text("not a directory")
    results: list[object] = []
    quarantine.store(PART, context(), "r", "strip").addBoth(results.append)
    assert isinstance(results[0], Failure)


def test_cliListShowExport(tmp_path: Path) -> None:
    """
    list shows one line per item (filterable by user), show prints the
    record, export writes the exact original.
    """
    quarantine = DirectoryQuarantine(tmp_path / "q")
    identifier = stored(quarantine, PART)
    stored(quarantine, b"Subject: other\r\n\r\nx\r\n", "bob")
    out = io.StringIO()
    assert main(["--dir", str(tmp_path / "q"), "list", "--user", "alice"], out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(identifier) and "strip" in lines[0]
    out = io.StringIO()
    assert main(["--dir", str(tmp_path / "q"), "show", identifier], out) == 0
    assert json.loads(out.getvalue())["reason"] == "blocked extension .exe"
    target = tmp_path / "out.eml"
    assert main(["--dir", str(tmp_path / "q"), "export", identifier, "-o", str(target)]) == 0
    assert target.read_bytes() == PART
    assert main(["--dir", str(tmp_path / "q"), "show", "nope"], io.StringIO()) == 1


def test_cliEscapesControlCharacters(tmp_path: Path) -> None:
    """
    A user name with an ESC sequence and a file name with U+202E (right-to-
    left override) are kept raw in the record but listed as escapes, so
    they cannot drive the terminal of whoever runs list; show prints JSON,
    which escapes them too; --user still matches the raw name.
    """
    user = "\x1b[2J\x1b]0;owned\x07mallory"
    quarantine = DirectoryQuarantine(tmp_path)
    results: list[object] = []
    reason = "blocked extension .exe: invoice\u202efdp.exe\r"
    quarantine.store(PART, context(user), reason, "strip").addBoth(results.append)
    identifier = results[0]
    assert isinstance(identifier, str)
    assert [r.user for r in quarantine.records()] == [user]
    out = io.StringIO()
    assert main(["--dir", str(tmp_path), "list", "--user", user], out) == 0
    listing = out.getvalue()
    assert "  \\x1b[2J\\x1b]0;owned\\x07mallory  strip  " in listing
    assert listing.endswith("  blocked extension .exe: invoice\\u202efdp.exe\\x0d\n")
    assert listing.count("\n") == 1
    assert not any(character in listing for character in "\x1b\x07\r\u202e")
    out = io.StringIO()
    assert main(["--dir", str(tmp_path), "show", identifier], out) == 0
    assert not any(character in out.getvalue() for character in "\x1b\x07\r\u202e")
    assert json.loads(out.getvalue())["user"] == user


def test_cliFindsDirectoryInConfig(tmp_path: Path) -> None:
    """
    --config reads [chain] quarantine from twistd.conf.
    """
    quarantine = DirectoryQuarantine(tmp_path / "q")
    stored(quarantine, PART)
    config = tmp_path / "twistd.conf"
    config.write_text('[upstream]\ndefault = "tcp:127.0.0.1:1"\n[chain]\nquarantine = "q"\n')
    out = io.StringIO()
    assert main(["--config", str(config), "list"], out) == 0
    assert len(out.getvalue().splitlines()) == 1


def aged(quarantine: DirectoryQuarantine, directory: Path, data: bytes, when: float) -> str:
    """
    Keep C{data} and date its record C{when}.
    """
    identifier = stored(quarantine, data)
    record = directory / "records" / f"{identifier}.json"
    fields = json.loads(record.read_text())
    fields["time"] = when
    record.write_text(json.dumps(fields))
    return identifier


#: 2026-11-03 15:30:00 UTC.
NOW = 1793719800.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-01", "2026-11-01T00:00:00"),
        ("2026-11-01T08:30", "2026-11-01T08:30:00"),
        ("2026-11-01 08:30:15", "2026-11-01T08:30:15"),
        ("2026-11-01T08:30+02:00", "2026-11-01T06:30:00"),
        ("today", "2026-11-03T00:00:00"),
        ("Yesterday", "2026-11-02T00:00:00"),
        ("90m", "2026-11-03T14:00:00"),
        ("2h", "2026-11-03T13:30:00"),
        ("3d", "2026-10-31T15:30:00"),
        ("1w", "2026-10-27T15:30:00"),
    ],
)
def test_sinceForms(text: str, expected: str) -> None:
    """
    list --since takes an ISO date or time (UTC unless it names an offset),
    today and yesterday (from midnight UTC) and ages in minutes, hours,
    days and weeks, counted back from now.
    """
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(parseSince(text, NOW))) == expected


@pytest.mark.parametrize("text", ["tomorrow", "1y", "2026-13-01", "-3d", "3 days", ""])
def test_sinceRefusesWhatItCannotRead(text: str) -> None:
    """
    Anything else is a ValueError whose text names the value and the forms
    that work.
    """
    with pytest.raises(ValueError) as raised:
        parseSince(text, NOW)
    assert str(raised.value).startswith(f"--since {text!r}: give a date or time in UTC")
    assert "yesterday" in str(raised.value) and "3d" in str(raised.value)


def test_cliListSince(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    list --since yesterday and --since 2h list only the items from then on;
    a value it cannot read is one line on stderr and status 2, not a
    traceback.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    now = time.time()
    old = aged(quarantine, tmp_path, b"A" * 10, now - 3 * 86400)
    hours = aged(quarantine, tmp_path, b"B" * 10, now - 5 * 3600)
    fresh = aged(quarantine, tmp_path, b"C" * 10, now - 60)
    listed = {}
    for since in ("yesterday", "2h", "2020-01-01"):
        out = io.StringIO()
        assert main(["--dir", str(tmp_path), "list", "--since", since], out) == 0
        listed[since] = {line.split()[0] for line in out.getvalue().splitlines()}
    assert listed["yesterday"] == {hours, fresh}
    assert listed["2h"] == {fresh}
    assert listed["2020-01-01"] == {old, hours, fresh}
    capsys.readouterr()
    assert main(["--dir", str(tmp_path), "list", "--since", "last tuesday"], io.StringIO()) == 2
    error = capsys.readouterr().err
    assert error.startswith("popproxy-quarantine: --since 'last tuesday': give a date")
    assert error.count("\n") == 1 and "Traceback" not in error


def test_purge(tmp_path: Path) -> None:
    """
    purge removes items older than the limit (and their blobs when no other
    record uses them), then the oldest until under the size limit; dry-run
    removes nothing.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    old = stored(quarantine, b"A" * 1000)
    stored(quarantine, b"B" * 1000)
    newest = stored(quarantine, b"C" * 1000)
    record = tmp_path / "records" / f"{old}.json"
    data = json.loads(record.read_text())
    data["time"] = time.time() - 40 * 86400
    record.write_text(json.dumps(data))
    out = io.StringIO()
    assert main(["--dir", str(tmp_path), "purge", "--older-than", "30", "--dry-run"], out) == 0
    assert "would remove 1 item" in out.getvalue()
    assert len(list(quarantine.records())) == 3
    removed = quarantine.purge(olderThan=30 * 86400, maxBytes=1000)
    assert len(removed) == 2
    assert [r.id for r in quarantine.records()] == [newest]
    assert sum(1 for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == 1


MESSAGE = (
    b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>\r\n"
    b"Subject: Invoice\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + PART + b"--b--\r\n"
)


def test_recordsNameTheirMessage(tmp_path: Path) -> None:
    """
    Parts and whole messages are kept with the decoded From, Subject and
    Date of the message they came from, in the record file and read back.
    """
    quarantine = DirectoryQuarantine(tmp_path)
    [part] = storedParts(quarantine, MESSAGE, [RemovedPart(PART, (0,), "blocked")], "u-1")
    whole = stored(quarantine, MESSAGE)
    for identifier in (part, whole):
        record = quarantine.get(identifier)
        assert record.messageFrom == "Ren\u00e9 <rene@example.com>"
        assert record.messageSubject == "Invoice"
        assert record.messageDate == "Tue, 01 Dec 2026 10:00:00 +0000"
        assert record.data["messageSubject"] == "Invoice"


def test_olderRecordsReadTheirHeaders(tmp_path: Path) -> None:
    """
    A record kept before these fields existed shows what its stored
    header lines say (a whole message's), or nothing (a part's).
    """
    quarantine = DirectoryQuarantine(tmp_path)
    whole = stored(quarantine, MESSAGE)
    [part] = storedParts(quarantine, MESSAGE, [RemovedPart(PART, (0,), "blocked")], "u-1")
    for identifier in (whole, part):
        path = tmp_path / "records" / f"{identifier}.json"
        data = json.loads(path.read_text())
        for key in ("messageFrom", "messageSubject", "messageDate"):
            del data[key]
        path.write_text(json.dumps(data))
    assert quarantine.get(whole).messageSubject == "Invoice"
    assert quarantine.get(part).messageSubject is None


def test_cliReleasesAnItem(tmp_path: Path) -> None:
    """
    requests lists what users asked for; release approves one (status 1
    for an unknown id), after which it is released and no longer listed;
    purging the item removes its release too.
    """
    from popproxy._releases import DirectoryReleases

    quarantine = DirectoryQuarantine(tmp_path / "q")
    identifier = stored(quarantine, PART)
    releases = DirectoryReleases(tmp_path / "q")
    releases.request(identifier, "alice")
    out = io.StringIO()
    assert main(["--dir", str(tmp_path / "q"), "requests"], out) == 0
    assert out.getvalue().startswith(identifier) and "alice" in out.getvalue()
    assert main(["--dir", str(tmp_path / "q"), "release", "nope"], io.StringIO()) == 1
    out = io.StringIO()
    assert main(["--dir", str(tmp_path / "q"), "release", identifier, "--by", "root"], out) == 0
    assert out.getvalue().startswith(f"released {identifier}")
    assert releases.status(identifier).approvedBy == "root"  # type: ignore[union-attr]
    out = io.StringIO()
    assert main(["--dir", str(tmp_path / "q"), "requests"], out) == 0 and out.getvalue() == ""
    quarantine.purge(olderThan=-1)
    assert releases.status(identifier) is None


def test_cliRejectsAnItem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    reject refuses a pending request, naming the administrator, after
    which it is no longer listed and the user cannot ask again (status 1
    and a message for an unknown id); rejecting an item already released
    says it stays released, exits 1, and leaves it released.
    """
    from popproxy._releases import DirectoryReleases

    quarantine = DirectoryQuarantine(tmp_path / "q")
    asked, approved = stored(quarantine, PART), stored(quarantine, MESSAGE)
    releases = DirectoryReleases(tmp_path / "q")
    releases.request(asked, "alice")
    directory = ["--dir", str(tmp_path / "q")]
    assert main([*directory, "reject", "nope"], io.StringIO()) == 1
    assert capsys.readouterr().err == "popproxy-quarantine: no item nope\n"
    out = io.StringIO()
    assert main([*directory, "reject", asked, "--by", "root"], out) == 0
    assert out.getvalue().startswith(f"rejected {asked}")
    refused = releases.status(asked)
    assert refused is not None and (refused.rejectedBy, refused.released) == ("root", False)
    assert releases.request(asked, "alice").rejected
    out = io.StringIO()
    assert main([*directory, "requests"], out) == 0 and out.getvalue() == ""
    releases.approve(approved, "admin")
    out = io.StringIO()
    assert main([*directory, "reject", approved, "--by", "root"], out) == 1
    assert out.getvalue() == ""
    assert capsys.readouterr().err == (
        f"popproxy-quarantine: {approved} was released by admin already;"
        " a released item stays released\n"
    )
    kept = releases.status(approved)
    assert kept is not None and kept.released and kept.rejectedBy is None


def test_summaryFieldsAreOneLineOfText() -> None:
    """
    A Subject whose encoded words decode to NUL, CR LF and a bidi override
    is kept with spaces in their place (it is shown on the console's pages
    and in listings), and so is such a value read back from a record that
    kept it raw (an older or copied one).
    """
    from popproxy._quarantine import recordFromFields, summaryFields

    hostile = "Subject: =?utf-8?q?a=00b=0D=0Ac=E2=80=AEx?=\r\nFrom: s@example.com"
    assert summaryFields(hostile)["messageSubject"] == "a b c x"
    fields = {"id": "i", "time": 1.0, "sha256": "d", "headers": "", "messageFrom": None}
    fields |= {"messageSubject": "a\r\nb\u202ec", "messageDate": "Tue,\x00 1 Dec"}
    record = recordFromFields(fields)
    assert (record.messageSubject, record.messageDate, record.messageFrom) == (
        "a b c",
        "Tue, 1 Dec",
        None,
    )


@pytest.mark.parametrize("separator", [b"\x0c", b"\x1c", b"\r", "\u2028".encode()])
def test_summaryFromIsTheMessagesFrom(tmp_path: Path, separator: bytes) -> None:
    """
    A form feed, a file separator, a bare CR or U+2028 inside a Subject
    ends no header line: the From a record shows is the message's own (the
    one the MIME parser and mail programs read), not one forged inside the
    Subject, for a stored message, its removed parts, and a record read
    back from its header lines.
    """
    message = (
        b"Subject: invoice" + separator + b"From: ceo@bank.example\r\n"
        b"From: attacker@evil.example\r\n\r\nbody\r\n"
    )
    quarantine = DirectoryQuarantine(tmp_path / "q")
    record = quarantine.get(stored(quarantine, message))
    assert record.messageFrom == "attacker@evil.example"
    assert record.messageSubject == "invoice From: ceo@bank.example"
    results: list[object] = []
    parts = [RemovedPart(PART, (2,), "blocked .exe")]
    quarantine.storeParts(message, parts, context(), "strip").addBoth(results.append)
    assert isinstance(results[0], list)
    assert quarantine.get(results[0][0]).messageFrom == "attacker@evil.example"
    fields = {"id": "i", "time": 1.0, "sha256": "d", "headers": record.headers}
    assert module.recordFromFields(fields).messageFrom == "attacker@evil.example"


def purgeRecord(number: int, blob: int, size: int) -> Record:
    """
    Record number C{number} (its time), naming blob C{blob} of C{size} octets.
    """
    return Record(
        f"r{number}", float(number), "r", "strip", "alice", None, "u", size, f"b{blob}", "", {}
    )


def blobOctets(records: list[Record]) -> int:
    return sum({r.sha256: r.size for r in records}.values())


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=30),
    st.none() | st.integers(0, 30),
    st.none() | st.integers(0, 300),
)
def test_purgeSelectionIsOldThenOldestUntilSmallEnough(
    blobs: list[tuple[int, int]], olderThan: int | None, maxBytes: int | None
) -> None:
    """
    A purge removes every record older than the limit, then the oldest
    others, no more than it must, until the blobs the rest name (a blob
    shared by records counted once) take at most the byte limit.
    """
    sizes = {blob: size for blob, size in blobs}
    records = [purgeRecord(n, blob, sizes[blob]) for n, (blob, _) in enumerate(blobs)]
    now = float(len(records))
    removed = purgeSelection(records, now, olderThan, maxBytes)
    old = [r for r in records if olderThan is not None and now - r.time > olderThan]
    rest = [r for r in records if r not in old]
    assert removed[: len(old)] == old
    cut = len(removed) - len(old)
    assert removed[len(old) :] == rest[:cut]
    if maxBytes is not None:
        assert blobOctets(rest[cut:]) <= maxBytes
        assert cut == 0 or blobOctets(rest[cut - 1 :]) > maxBytes
    else:
        assert cut == 0


@pytest.mark.timeout(30)
def test_purgeSelectionOfManyRecords() -> None:
    """
    A purge of 50,000 records (two to a blob) removes the 20,000 older
    than the limit and then the oldest until 5,000 blobs are left: the
    oldest 40,000 in order.  The selection is linear (a quadratic one took
    minutes here); the timeout turns a regression into a failure.
    """
    records = [purgeRecord(n, n // 2, 1000) for n in range(50_000)]
    removed = purgeSelection(records, 50_000.0, 30_000.0, 5_000 * 1000)
    assert [r.id for r in removed] == [f"r{n}" for n in range(40_000)]


def test_purgeKeepsTheBlobsOfKeptRecords(tmp_path: Path) -> None:
    """
    purge deletes a removed record's blob unless a kept record names it
    too, and takes the release requests of removed records with them.
    """
    from popproxy._releases import DirectoryReleases

    quarantine = DirectoryQuarantine(tmp_path)
    oldest = stored(quarantine, b"A" * 1000)
    shared = [stored(quarantine, b"B" * 1000), stored(quarantine, b"B" * 1000, user="bob")]
    newest = stored(quarantine, b"C" * 1000)
    for days, identifier in [(4, oldest), (3, shared[0]), (1, shared[1]), (0, newest)]:
        record = tmp_path / "records" / f"{identifier}.json"
        data = json.loads(record.read_text())
        data["time"] = time.time() - days * 86400 - 1
        record.write_text(json.dumps(data))
    releases = DirectoryReleases(tmp_path)
    releases.request(oldest, "alice")
    releases.request(shared[0], "alice")
    removed = quarantine.purge(olderThan=2 * 86400)
    assert [r.id for r in removed] == [oldest, shared[0]]
    assert [r.id for r in quarantine.records()] == [shared[1], newest]
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == sorted(
        hashlib.sha256(octets).hexdigest() for octets in (b"B" * 1000, b"C" * 1000)
    )
    assert list((tmp_path / "releases").glob("*.json")) == []
