"""
Zip archives as the strip filter judges them (L{inspectZip}): member names
and first octets checked like an attachment's, member archives opened in
turn as streams, and every limit (members, inflated octets, nesting)
enforced while reading.

The attached archive is in memory: it is the part's decoded content.  Its
members are never held whole: the first DETECT_BYTES of each are read to
check their type, and a member that is itself an archive is read as a
stream (L{MemberStream}) that keeps only its last octets, where a zip keeps
its directory.  Every octet read out of a member is counted against
max_inflated as it is read, so lying headers cost nothing extra.
"""

from __future__ import annotations

import functools
import io
import operator
import struct
import zipfile
from collections.abc import Iterable
from typing import IO

from ._detection import DETECT_BYTES, detectionReason
from ._memberstream import Budget, MemberStream, Refused, Uninspectable
from ._names import canonicalName, displayName, nameReason
from ._settings import StripPolicy

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
ZIP_TYPES = frozenset(
    {"application/zip", "application/x-zip", "application/x-zip-compressed", "multipart/x-zip"}
)

#: The largest central directory a member archive may have: it is kept in
#: memory while the archive's members are checked.  A member archive with a
#: larger one cannot be checked (C{unreadable} decides).
NESTED_DIRECTORY_BYTES = 256 * 1024

#: What a member archive's stream keeps of its end: the central directory
#: and the end records after it (at most 22 + 65535 octets of end record
#: and comment, 20 + 56 of zip64 records).
_TAIL_BYTES = NESTED_DIRECTORY_BYTES + 66 * 1024

#: Members in the order they are stored.
_HEADER_OFFSET = operator.attrgetter("header_offset")


def _endRecords(tail: bytes) -> tuple[int, int, int] | None:
    """
    What the end records of a zip archive say, found where C{zipfile}
    looks for them, read before it builds an object per entry.

    @param tail: the archive's last octets (at least L{_TAIL_BYTES}, or all
        of it).
    @return: the number of entries (as declared, or as many directory
        entry signatures as the directory holds if that is more: the
        declared number is not what C{zipfile} goes by), where the central
        directory starts in C{tail} (negative: before it), and its size;
        None without an end record.
    """
    at = len(tail) - 22
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\x00\x00":
        at = tail.rfind(b"PK\x05\x06", max(0, len(tail) - 65558))
    if at < 0 or at + 22 > len(tail):
        return None
    entries, size = struct.unpack_from("<HI", tail, at + 10)
    start = at - size
    zip64 = tail[at - 20 : at - 16] == b"PK\x06\x07" and tail[at - 76 : at - 72] == b"PK\x06\x06"
    if at >= 76 and zip64:
        entries, size = struct.unpack_from("<QQ", tail, at - 76 + 32)
        start = at - 76 - size
    if start >= 0:
        entries = max(entries, tail.count(b"PK\x01\x02", start, start + size))
    return int(entries), int(start), int(size)


def looksLikeArchive(name: str) -> bool:
    """
    Whether a file of that name is taken for a zip archive.
    """
    return canonicalName(name).endswith(".zip")


def inspectZip(
    data: bytes, policy: StripPolicy, budget: Budget, depth: int = 1, where: str = ""
) -> str | None:
    """
    Why the zip archive C{data} must be removed, or None.

    Member names are checked like attachment names; the first octets of
    each member are checked like an attachment's; member archives are
    opened in turn up to C{maxNesting} levels, read as streams.  Nothing
    is inflated before the declared sizes of every member of an archive
    fit in what is left of C{maxInflated}; then every octet actually read
    out of a member is counted against it, and reading stops as soon as
    it is exceeded.  A zip bomb costs its compressed size and a few
    chunks, and memory stays within a few hundred KiB per level of
    nesting whatever the members inflate to.
    """
    try:
        return _inspectArchive(io.BytesIO(data), data, policy, budget, depth, where)
    except Refused as refused:
        return refused.reason


def _inspectArchive(
    file: IO[bytes] | MemberStream,
    tail: bytes,
    policy: StripPolicy,
    budget: Budget,
    depth: int,
    where: str,
) -> str | None:
    """
    L{inspectZip} for an archive in C{file}, whose last octets are
    C{tail}.
    """
    if depth > policy.maxNesting:
        return f"archives nested more than {policy.maxNesting} deep"
    records = _endRecords(tail)
    if records is not None and budget.members + records[0] > policy.maxMembers:
        return f"archive with more than {policy.maxMembers} files"
    streamed = isinstance(file, MemberStream)
    if streamed and records is not None and records[2] > NESTED_DIRECTORY_BYTES:
        return _unreadable(
            policy,
            f"unreadable archive{_at(where)}: "
            f"central directory over {NESTED_DIRECTORY_BYTES} bytes",
        )
    opened = _opened(file, policy, where)
    if not isinstance(opened, tuple):
        return opened
    archive, members = opened
    budget.members += len(members)
    if budget.members > policy.maxMembers:
        return f"archive with more than {policy.maxMembers} files"
    files = [member for member in members if not member.is_dir()]
    reason = _listingReason(files, policy, budget, where)
    if reason is not None:
        return reason
    if _overlapping(members):
        # A zip bomb's trick.  Read as a stream, each would make it start
        # over; and each member listed on the same data inflates it anew
        # (from a deflate stream that may begin with megabytes of empty
        # blocks, which cost time but count no octets).
        return _unreadable(policy, f"unreadable archive{_at(where)}: overlapping members")
    return _inspectMembers(archive, files, policy, budget, depth, where)


def _opened(
    file: IO[bytes] | MemberStream, policy: StripPolicy, where: str
) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]] | str | None:
    """
    The archive in C{file} and its members, or, when C{zipfile} refuses
    it, what C{unreadable} makes of that.
    """
    try:
        archive = zipfile.ZipFile(file)
        members = archive.infolist()
    except Refused:
        raise
    except Uninspectable as e:
        return _unreadable(policy, f"unreadable archive{_at(where)}: {e}")
    except Exception as e:  # every way zipfile refuses an archive; policy below
        return _unreadable(policy, f"unreadable archive{_at(where)}: {type(e).__name__}")
    return archive, members


def _listingReason(
    files: list[zipfile.ZipInfo], policy: StripPolicy, budget: Budget, where: str
) -> str | None:
    """
    Why an archive must go by its listing alone (a Java archive, a blocked
    member name, declared sizes over the limit), or None; the declared
    sizes are added to C{budget}.
    """
    names = {member.filename for member in files}
    if "jar" in policy.extensions and "META-INF/MANIFEST.MF" in names:
        return f"Java archive{_at(where)} (blocked extension .jar)"
    for member in files:
        reason = nameReason(member.filename, policy)
        if reason is not None:
            return f"archive member {displayName(where + member.filename)}: {reason}"
        budget.declared += member.file_size
    if budget.declared > policy.maxInflated:
        return f"archive inflating to more than {policy.maxInflated} bytes"
    return None


def _inspectMembers(
    archive: zipfile.ZipFile,
    files: list[zipfile.ZipInfo],
    policy: StripPolicy,
    budget: Budget,
    depth: int,
    where: str,
) -> str | None:
    """
    The verdict on an archive's members, read in the order they are
    stored: the first reason found, or None.
    """
    for member in sorted(files, key=_HEADER_OFFSET):
        path = where + member.filename
        if member.flag_bits & 0x1:
            if policy.encrypted == "strip":
                return f"encrypted archive member {displayName(path)}"
            continue
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # bzip2 and LZMA inflate without a size bound in zipfile:
            # never opened.  Such a member archive cannot be checked.
            if looksLikeArchive(member.filename):
                return _unreadable(policy, f"archive member {displayName(path)} cannot be opened")
            continue
        reason = _inspectMember(archive, member, path, policy, budget, depth)
        if reason is not None:
            return reason
    return None


def _overlapping(members: Iterable[zipfile.ZipInfo]) -> bool:
    """
    Whether some member starts before the one stored before it ends (its
    30-octet local header and compressed data, at least).
    """
    end = 0
    for member in sorted(members, key=_HEADER_OFFSET):
        if member.header_offset < end:
            return True
        end = member.header_offset + 30 + member.compress_size
    return False


def _inspectMember(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    path: str,
    policy: StripPolicy,
    budget: Budget,
    depth: int,
) -> str | None:
    """
    The verdict on one member: its first octets, and the archive it holds
    if it is one (read to its end as a stream, then inspected in turn).
    """
    stream = MemberStream(
        functools.partial(archive.open, member), budget, policy.maxInflated, keep=_TAIL_BYTES
    )
    with stream:
        try:
            head = stream.read(DETECT_BYTES)
        except Refused:
            raise
        except Exception as e:  # a damaged member; policy below
            return _unreadable(policy, f"archive member {displayName(path)}: {type(e).__name__}")
        nested = policy.archives and (
            head.startswith(ZIP_SIGNATURES) or looksLikeArchive(member.filename)
        )
        if nested and depth >= policy.maxNesting:
            return f"archives nested more than {policy.maxNesting} deep"
        if policy.detect:
            reason = detectionReason(head, policy)
            if reason is not None:
                return f"archive member {displayName(path)}: {reason}"
        if not nested:
            return None
        try:
            # Inflated once to its end, keeping only the last octets.
            stream.seek(0, io.SEEK_END)
        except Refused:
            raise
        except Exception as e:  # a damaged member; policy below
            return _unreadable(policy, f"archive member {displayName(path)}: {type(e).__name__}")
        return _inspectArchive(stream, stream.tail, policy, budget, depth + 1, path + "/")


def _unreadable(policy: StripPolicy, reason: str) -> str | None:
    return reason if policy.unreadable == "strip" else None


def _at(where: str) -> str:
    return f" {displayName(where.rstrip('/'))}" if where else ""
