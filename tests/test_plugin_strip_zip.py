"""
The strip plugin's archive inspection (plugins/strip/_zip.py) under hostile
archives: members are read as streams, the inflation limits count the
octets actually read, and no member is ever held whole in memory.  Each
test builds its archive (zip of zip of zeros, deflate bombs, lying headers,
deep nesting, many members), runs the filter as the configuration loads
it, and checks the verdict a user would see and the filter's peak memory
(tracemalloc).  Also: the end records are read as C{zipfile} reads them.
"""

from __future__ import annotations

import functools
import io
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strip._zip import _TAIL_BYTES, NESTED_DIRECTORY_BYTES, _endRecords
from popproxy._plugins import loadFilter
from popproxy._quarantine import DirectoryQuarantine
from popproxy.interfaces import Deliver, Rewrite, Verdict
from popproxy.message import Message
from popproxy.testing import attachmentPart, buildMessage, makeContext, runFilter, textPart
from tests import strip_corpus

MiB = 1 << 20
#: What the filter may allocate on top of the message while judging it:
#: the kept end of a member archive (a few hundred KiB per level of
#: nesting) and a few chunks.
MEMORY_BOUND = 3 * MiB


def loadStrip(**settings: Any) -> Any:
    return loadFilter("strip", settings, Path("."), ())


def judgeMeasured(raw: bytes, tmp_path: Path, **settings: Any) -> tuple[Verdict, int]:
    """
    The shipped filter's verdict on C{raw} and the peak of the memory
    allocated while it judged (the message parsed beforehand).
    """
    filter = loadStrip(**settings)
    message = Message.fromBytes(raw)
    context = makeContext(quarantine=DirectoryQuarantine(tmp_path / "q"))
    tracemalloc.start()
    try:
        verdict = runFilter(filter, message, context).verdict
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return verdict, peak


# Building hostile archives without holding them in memory.

_ZEROS = bytes(MiB)


def _zerosCrc(count: int, crc: int = 0) -> int:
    for _ in range(count // MiB):
        crc = zlib.crc32(_ZEROS, crc)
    return zlib.crc32(_ZEROS[: count % MiB], crc)


def _zeros(count: int) -> Iterator[bytes]:
    for _ in range(count // MiB):
        yield _ZEROS
    yield _ZEROS[: count % MiB]


def storedZip(
    entries: list[tuple[str, bytes, int, bool]], directoryRepeats: int = 1
) -> Iterator[bytes]:
    """
    A zip of stored members, in pieces.  Each entry is (name, content,
    zeros, declared): the member is C{content} followed by C{zeros} zero
    octets, and its headers declare them (C{declared}) or only
    C{content}, the zeros then lying after the member, in no member.
    C{directoryRepeats} lists every entry that many times in the central
    directory, all pointing at the same local header.
    """
    offset = 0
    directory = b""
    for name, content, zeros, declared in entries:
        size = len(content) + (zeros if declared else 0)
        crc = _zerosCrc(zeros if declared else 0, zlib.crc32(content))
        encoded = name.encode()
        header = struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, size, size, len(encoded), 0
        )
        central = struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, size, size, len(encoded), 0, 0, 0, 0, 0,
            offset,
        )  # fmt: skip
        directory += (central + encoded) * directoryRepeats
        yield header + encoded + content
        yield from _zeros(zeros)
        offset += len(header) + len(encoded) + len(content) + zeros
    count = len(entries) * directoryRepeats
    yield directory
    yield struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)


def zipHolding(name: str, pieces: Iterator[bytes], declaredSize: int | None = None) -> bytes:
    """
    A deflated zip whose one member C{name} is the octets of C{pieces}
    (written as they come); with C{declaredSize} its headers say it
    inflates to that many octets instead.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w") as member:
            for piece in pieces:
                member.write(piece)
    data = bytearray(buffer.getvalue())
    if declaredSize is not None:
        struct.pack_into("<I", data, 22, declaredSize)
        struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, declaredSize)
    return bytes(data)


def attached(archive: bytes, name: str = "data.zip") -> bytes:
    return buildMessage(textPart("see attached\n"), attachmentPart(archive, name))


@functools.cache
def zipOfStoredZeros(zeros: int = 95 * MiB) -> bytes:
    """
    The message of issue #10: a zip holding a deflated C{inner.zip}, which
    stores C{zeros} zero octets (95 MB: a 133 KB message).
    """
    return attached(zipHolding("inner.zip", storedZip([("zeros.bin", b"", zeros, True)])))


# The message of the issue.


@pytest.mark.timeout(60)
def test_zipOfStoredZipOfZeros(tmp_path: Path) -> None:
    """
    The 133 KB message whose inner zip stores 95 MB of zeros (it cost
    190 MB when member archives were read whole) is removed for what it
    inflates to, and judging it allocates a few hundred KiB, not the
    inner archive.
    """
    raw = zipOfStoredZeros()
    assert len(raw) < 200_000
    verdict, peak = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite)
    assert verdict.note == "removed data.zip (archive inflating to more than 104857600 bytes)"
    assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_bigMemberArchiveWithinTheLimitsIsReadAsAStream(tmp_path: Path) -> None:
    """
    With C{max_inflated} raised above what that message inflates to, its
    inner archive is opened and its member checked (and the message
    delivered) while memory stays bounded: the 95 MB archive is read as a
    stream, never held.
    """
    verdict, peak = judgeMeasured(zipOfStoredZeros(), tmp_path, max_inflated=1 << 30)
    assert verdict == Deliver()
    assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_fileAfterBigContentInAMemberArchive(tmp_path: Path) -> None:
    """
    A member archive bigger than what is kept of its end, holding 20 MB of
    data and then a program named photo.jpg, is read to that program and
    the attachment removed for it; the same archive with a harmless text
    in its place is delivered.  Memory stays bounded in both.
    """
    program = strip_corpus.peExecutable()
    for last, expected in ((program, "detected Windows"), (b"just notes\n", None)):
        inner = storedZip([("video.bin", b"", 20 * MiB, True), ("photo.jpg", last, 0, True)])
        verdict, peak = judgeMeasured(attached(zipHolding("inner.zip", inner)), tmp_path)
        assert peak < MEMORY_BOUND, peak
        if expected is None:
            assert verdict == Deliver()
        else:
            assert isinstance(verdict, Rewrite)
            assert "archive member inner.zip/photo.jpg: detected Windows" in verdict.note


# Headers that lie.


@pytest.mark.timeout(60)
def test_memberDeclaringLessThanItInflatesTo(tmp_path: Path) -> None:
    """
    A member archive whose headers say it inflates to 1 MiB while its
    data inflates to 95 MB is read to its declared size and no further:
    cut there it is no zip, so it counts as unreadable (removed by
    default, delivered with C{unreadable = "allow"}), at bounded memory.
    """
    inner = storedZip([("zeros.bin", b"", 95 * MiB, True)])
    raw = attached(zipHolding("inner.zip", inner, declaredSize=MiB))
    verdict, peak = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite) and "archive member inner.zip: BadZipFile" in verdict.note
    assert peak < MEMORY_BOUND, peak
    verdict, peak = judgeMeasured(raw, tmp_path, unreadable="allow")
    assert verdict == Deliver()
    assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_actualOctetsCountNotDeclaredOnes(tmp_path: Path) -> None:
    """
    A member archive whose members declare 100 octets between them while
    it is 70 MB long (35 MB after each, in no member) stays within
    C{max_inflated} by its headers, but reading it costs more: once to its
    end for its directory, then again to its second member.  The
    attachment is removed for what was actually inflated, reading stopped
    at the limit, at bounded memory.
    """
    inner = storedZip(
        [("a.bin", bytes(50), 35 * MiB, False), ("b.txt", bytes(50), 35 * MiB, False)]
    )
    verdict, peak = judgeMeasured(attached(zipHolding("inner.zip", inner)), tmp_path)
    assert isinstance(verdict, Rewrite)
    assert verdict.note == "removed data.zip (archive inflating to more than 104857600 bytes)"
    assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_deflateBombs(tmp_path: Path) -> None:
    """
    A 150 MB deflate bomb, alone and as four members of a nested archive,
    is removed for what it inflates to; a 150 MB bomb whose directory
    says its member inflates to one octet is inflated for that octet
    only, which then fails its CRC check: removed as unreadable.  Memory
    stays bounded in each.
    """
    bomb = strip_corpus.zipBomb(150 << 20)
    nested = strip_corpus.zipArchive({f"p{i}.zip": bomb for i in range(4)}, zipfile.ZIP_STORED)
    for archive in (bomb, nested):
        verdict, peak = judgeMeasured(attached(archive), tmp_path)
        assert isinstance(verdict, Rewrite) and "inflating to more than" in verdict.note
        assert peak < MEMORY_BOUND, peak
    lying = bytearray(bomb)
    central = lying.rfind(b"PK\x01\x02")
    assert struct.unpack_from("<I", lying, central + 24)[0] == 150 << 20
    struct.pack_into("<I", lying, central + 24, 1)
    verdict, peak = judgeMeasured(attached(bytes(lying)), tmp_path)
    assert isinstance(verdict, Rewrite) and "zeros.bin: BadZipFile" in verdict.note
    assert peak < MEMORY_BOUND, peak


# Nesting and member counts.


def nestedZips(levels: int) -> bytes:
    archive = strip_corpus.zipArchive({"notes.txt": b"hello"})
    for level in range(levels):
        archive = strip_corpus.zipArchive({f"level{level}.zip": archive})
    return archive


@pytest.mark.timeout(60)
def test_deepNesting(tmp_path: Path) -> None:
    """
    Forty archives nested in one another are removed for their depth
    under the default C{max_nesting}; allowed that deep, they are all
    opened and delivered, each level keeping only its small end.
    """
    raw = attached(nestedZips(40))
    verdict, peak = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite) and "nested more than 3 deep" in verdict.note
    verdict, peak = judgeMeasured(raw, tmp_path, max_nesting=50)
    assert verdict == Deliver()
    assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_manyMembers(tmp_path: Path) -> None:
    """
    An archive with more than C{max_members} files is removed, at the
    top and nested, and so is one whose end record claims a single entry
    while its directory lists 5,000 (the directory is counted before it
    is parsed).
    """
    many = strip_corpus.zipArchive({f"f{i}.txt": b"" for i in range(2000)})
    lying = bytearray(strip_corpus.zipArchive({f"f{i}.txt": b"" for i in range(5000)}))
    end = lying.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", lying, end + 8, 1, 1)
    for archive in (many, strip_corpus.zipArchive({"inner.zip": many}), bytes(lying)):
        verdict, peak = judgeMeasured(attached(archive), tmp_path)
        assert isinstance(verdict, Rewrite), verdict
        assert "archive with more than 1000 files" in verdict.note
        assert peak < MEMORY_BOUND, peak


@pytest.mark.timeout(60)
def test_memberArchiveDirectoryTooBigToKeep(tmp_path: Path) -> None:
    """
    A member archive whose central directory is larger than
    NESTED_DIRECTORY_BYTES (300 files with 1,000-character names) cannot
    be checked as a stream: removed as unreadable by default, delivered
    with C{unreadable = "allow"}.  The same files in the attached archive
    itself are checked and delivered.
    """
    files = {f"{i:04d}" + "x" * 996 + ".txt": b"" for i in range(300)}
    listing = strip_corpus.zipArchive(files)
    limit = NESTED_DIRECTORY_BYTES
    raw = attached(strip_corpus.zipArchive({"inner.zip": listing}))
    verdict, _ = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite)
    assert f"unreadable archive inner.zip: central directory over {limit} bytes" in verdict.note
    assert judgeMeasured(raw, tmp_path, unreadable="allow")[0] == Deliver()
    assert judgeMeasured(attached(listing), tmp_path)[0] == Deliver()


@pytest.mark.timeout(60)
def test_overlappingMembersInAMemberArchive(tmp_path: Path) -> None:
    """
    A member archive whose directory lists the same stored data three
    times (the overlapping-members trick of zip bombs) counts as
    unreadable: removed by default, delivered with C{unreadable =
    "allow"}.
    """
    inner = storedZip([("a.txt", b"hello", 0, True)], directoryRepeats=3)
    raw = attached(zipHolding("inner.zip", inner))
    verdict, _ = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite)
    assert "unreadable archive inner.zip: overlapping members" in verdict.note
    assert judgeMeasured(raw, tmp_path, unreadable="allow")[0] == Deliver()


def overlappingDeflated(content: bytes, emptyBlocks: int, listings: int) -> bytes:
    """
    A zip whose one deflated member, C{content}, starts with
    C{emptyBlocks} empty deflate blocks (five octets each, no output) and
    is listed C{listings} times in the central directory.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"\x00\x00\x00\xff\xff" * emptyBlocks
    data += compressor.compress(content) + compressor.flush()
    crc, size = zlib.crc32(content), len(content)
    header = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, 5, 0
    )
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size, 5, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    directory = (central + b"a.txt") * listings
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, listings, listings, len(directory),
        len(header) + 5 + len(data), 0,
    )  # fmt: skip
    return header + b"a.txt" + data + directory + end


@pytest.mark.timeout(30)
def test_overlappingMembersInTheAttachedArchive(tmp_path: Path) -> None:
    """
    An attached zip listing one member 1,000 times, whose deflate data
    starts with 2 MB of empty blocks (inflating each listing would go
    through them anew: seconds of work yielding no octet to count), is
    unreadable without inflating any: removed by default, delivered with
    C{unreadable = "allow"}.  Listed once, the same member is read.
    """
    raw = attached(overlappingDeflated(b"hello", 400_000, 1000))
    verdict, _ = judgeMeasured(raw, tmp_path)
    assert isinstance(verdict, Rewrite)
    assert verdict.note == "removed data.zip (unreadable archive: overlapping members)"
    assert judgeMeasured(raw, tmp_path, unreadable="allow")[0] == Deliver()
    once = attached(overlappingDeflated(strip_corpus.peExecutable(), 400_000, 1))
    verdict, _ = judgeMeasured(once, tmp_path)
    assert isinstance(verdict, Rewrite) and "a.txt: detected Windows" in verdict.note


def withZip64End(data: bytes, commentLength: int) -> bytes:
    """
    The zip C{data} with zip64 end records before its end record, which
    then defers to them (its counts and offsets all ones).
    """
    at = len(data) - 22 - commentLength
    _, _, _, _, entries, size, offset, _ = struct.unpack_from("<4sHHHHIIH", data, at)
    zip64End = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, commentLength
    )
    return data[:at] + zip64End + locator + end + data[at + 22 :]


def zipfileDirectorySize(data: bytes) -> int:
    """
    The central directory's size as C{zipfile.ZipFile} reads it: from
    C{zipfile._EndRecData}, the reader C{ZipFile} itself calls (it keeps
    the size nowhere public).
    """
    readEndRecords = zipfile._EndRecData  # type: ignore[attr-defined]
    size: int = readEndRecords(io.BytesIO(data))[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    return size


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 30),
    st.binary(max_size=300) | st.sampled_from([b"PK\x05\x06" * 5, b"x" * 65535]),
    st.booleans(),
    st.integers(0, 200_000),
)
def test_endRecordsAreReadAsZipfileReadsThem(
    count: int, comment: bytes, zip64: bool, prefix: int
) -> None:
    """
    The end records read before C{zipfile} parses a directory say what
    C{zipfile} then finds: as many entries, the same directory start and
    size, from the archive's last octets alone (with or without zip64
    records, a comment of any length; one that holds the end record's
    signature makes C{zipfile} refuse the archive).
    """
    buffer = io.BytesIO()
    buffer.write(bytes(prefix))
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for i in range(count):
            archive.writestr(f"f{i}.txt", b"x" * i)
        archive.comment = comment
    data = buffer.getvalue()
    if zip64:
        data = withZip64End(data, len(comment))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as parsed:
            expected = (len(parsed.infolist()), parsed.start_dir, zipfileDirectorySize(data))
    except zipfile.BadZipFile:
        return  # a comment holding the end signature: unreadable whatever the records say
    keep = _TAIL_BYTES
    tail = data[-keep:]
    found = _endRecords(tail)
    assert found is not None
    entries, start, size = found
    assert entries == expected[0]
    assert start + len(data) - len(tail) == expected[1]
    assert size == expected[2]
