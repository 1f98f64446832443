"""
The strip filter: remove dangerous attachments, keep them in the
quarantine, and leave a short notice where each one was.

A part is removed when any of its candidate file names (every name a mail
client might show, see L{popproxy.message.Part.filenames}) has a blocked
extension, when its declared content type is blocked, when its decoded
bytes are an executable, installer, shortcut or disk image whatever its
name says (detected with C{puremagic}), when it is a zip archive holding
such a file (or too many files, too many bytes, too deep a nesting of
archives), when it is a TNEF C{winmail.dat} naming such a file, or when it
is larger than C{max_size}.  A uuencoded file (C{begin 644 setup.exe})
inside a plain text part is cut out of that text.

Each removed part is stored in the quarantine first, exactly as it was in
the message, then replaced by a C{text/plain} notice naming the file, the
reason and the quarantine id.  Every other octet of the message stays as
it arrived.  Without a quarantine, or when it cannot store, the verdict is
L{TempFail}: nothing is ever thrown away.

Settings and policy decisions are described in docs/plugins/strip.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import io
import re
import string
import struct
import unicodedata
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any

import puremagic
from twisted.internet.defer import maybeDeferred
from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IPartQuarantine,
    RemovedPart,
    Replace,
    Rewrite,
    SettingsReader,
    TempFail,
    Verdict,
)
from popproxy.message import EditError, LimitExceeded, Message, ParseLimits, Part, textPart

# The default policy.

#: Executables, scripts, shortcuts, installers, help files that run code
#: and disk images, in the spirit of amavisd-new's banned files, MIMEDefang's
#: bad file names and the "level 1" list Outlook refuses to open.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    # Windows programs and libraries.
    "exe", "com", "scr", "pif", "cpl", "dll", "ocx", "sys", "drv", "vxd",
    # Command and script files.
    "bat", "cmd", "vb", "vbs", "vbe", "vbp", "js", "jse", "ws", "wsf", "wsh", "wsc", "sct",
    "hta", "htc", "ps1", "ps1xml", "ps2", "ps2xml", "psc1", "psc2", "psd1", "psm1", "pssc",
    "msh", "msh1", "msh2", "mshxml", "msh1xml", "msh2xml", "csh", "ksh", "bas", "fxp",
    "py", "pyc", "pyo", "pyw", "pyz", "pyzw", "jar", "jnlp", "reg", "inf", "ins", "isp",
    # Shortcuts and shell tricks.
    "lnk", "url", "scf", "shb", "shs", "xnk", "website", "webpnp", "settingcontent-ms",
    "library-ms", "searchconnector-ms",
    # Installers and packages.
    "msi", "msp", "mst", "msu", "msix", "msixbundle", "appx", "appxbundle", "application",
    "appref-ms", "gadget", "xbap", "vsix", "vsmacros", "vsw", "diagcab", "grp", "cnt",
    "ops", "osd", "plg", "prf", "prg", "ade", "adp", "app", "bgi", "its", "xll", "wsb",
    "pkg", "dmg",
    # Help and console files that run code.
    "chm", "hlp", "hpj", "msc",
    # Disk images (they hide their contents from scanners and Mark of the Web).
    "iso", "img", "vhd", "vhdx",
)  # fmt: skip

#: Declared content types that are executables or installers whatever the
#: file is called.
DEFAULT_CONTENT_TYPES: tuple[str, ...] = (
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-dosexec",
    "application/x-ms-dos-executable",
    "application/x-winexe",
    "application/x-executable",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/vnd.microsoft.portable-executable",
    "application/x-ms-installer",
    "application/x-msi",
    "application/x-ole-storage-msi",
    "application/x-ms-shortcut",
    "application/x-ms-application",
    "application/x-bat",
    "application/bat",
    "application/hta",
    "application/x-javascript-hta",
    "application/java-archive",
    "application/x-java-archive",
    "application/x-java-jnlp-file",
    "application/x-iso9660-image",
    "application/x-apple-diskimage",
)

DEFAULT_NOTICE = (
    "The attachment {filename} was removed by the mail gateway ({reason}).\n"
    "It is kept in quarantine as {id}; ask your administrator if you need it.\n"
)

#: Added to a notice in a message whose signature the removal breaks.
SIGNATURE_BROKEN = (
    "This message was digitally signed; removing the attachment means the "
    "signature no longer verifies.\n"
)

SETTINGS = (
    "extensions",
    "content_types",
    "detect",
    "archives",
    "max_nesting",
    "max_members",
    "max_inflated",
    "encrypted",
    "unreadable",
    "uuencode",
    "tnef",
    "max_size",
    "signed",
    "notice",
)

#: Decoded octets read from the start of a part to detect its type (an ISO
#: 9660 image says so at offset 32769).
DETECT_BYTES = 65536

_NOTICE_FIELDS = frozenset({"filename", "reason", "id"})


#: Messages at least this big are checked in a thread (a 255 KB message of
#: 4,000 tiny parts took 0.7 s to check, on the reactor thread below the
#: old 256 KiB; 64 KiB of them about 0.18 s).
THREAD_THRESHOLD = 64 * 1024


@dataclass(frozen=True)
class StripPolicy:
    """
    What the filter removes; see docs/plugins/strip.md for each field.
    """

    extensions: frozenset[str] = frozenset(DEFAULT_EXTENSIONS)
    contentTypes: frozenset[str] = frozenset(DEFAULT_CONTENT_TYPES)
    detect: bool = True
    archives: bool = True
    maxNesting: int = 3
    maxMembers: int = 1000
    maxInflated: int = 100 * 1024 * 1024
    encrypted: str = "allow"
    unreadable: str = "strip"
    uuencode: bool = True
    tnef: bool = True
    maxSize: int = 0
    signed: str = "strip"
    notice: str = DEFAULT_NOTICE


# File names.

#: Characters that reorder what follows them on screen: "invoice\u202efdp.exe"
#: shows as "invoiceexe.pdf".
_BIDI_OVERRIDES = frozenset("\u202a\u202b\u202d\u202e\u2066\u2067\u2068")
_PATH_SEPARATOR = re.compile(r"[/\\]")
#: What Windows drops from the end of a file name, and the NTFS stream
#: suffix it ignores.
_DROPPED_AT_END = frozenset(". \t\r\n\x00\u00a0\u3000")
_NTFS_STREAM = "::$data"
_CLSID_SUFFIX = re.compile(r"\.\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}\Z")


def displayName(name: str, limit: int = 120) -> str:
    """
    C{name} made safe to show in a notice, a note or a log line: control
    and format characters (line breaks, right-to-left overrides) are
    written as C{\\uXXXX}, and long names are shortened.
    """
    shown = "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
        for char in name
    )
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def canonicalName(name: str) -> str:
    """
    The name as Windows would save it, for comparing extensions: the last
    path component, without invisible format characters, NFKC-normalized,
    case-folded, without an NTFS C{::$DATA} stream suffix and without the
    trailing dots and spaces Windows drops (C{"setup.exe. "} is
    C{"setup.exe"}).
    """
    base = _PATH_SEPARATOR.split(name)[-1]
    visible = "".join(char for char in base if unicodedata.category(char) != "Cf")
    folded = unicodedata.normalize("NFKC", visible).casefold()
    # Move an end index back instead of slicing on every step: a name of
    # many ". ::$data" repetitions would otherwise be copied once per step.
    end = len(folded)
    while True:
        while end and folded[end - 1] in _DROPPED_AT_END:
            end -= 1
        if not folded.endswith(_NTFS_STREAM, 0, end):
            return folded[:end]
        end -= len(_NTFS_STREAM)


def nameReason(name: str, policy: StripPolicy) -> str | None:
    """
    Why a file called C{name} must be removed, or None.  Every dotted
    suffix is compared with the blocked extensions, so C{invoice.pdf.exe}
    is an C{.exe} and an entry like C{tar.gz} works.
    """
    canonical = canonicalName(name)
    # Only a suffix as long as the longest blocked extension can match:
    # look at the dots in that tail, shortest suffix first, never at the
    # rest of a name of thousands of dots.
    longest = max(map(len, policy.extensions), default=0)
    floor = max(len(canonical) - longest - 1, 0)
    dot = len(canonical)
    while (dot := canonical.rfind(".", floor, dot)) != -1:
        extension = canonical[dot + 1 :]
        if extension in policy.extensions:
            return f"blocked extension .{extension}"
    if _CLSID_SUFFIX.search(canonical):
        return "hidden class-id extension"
    if any(char in _BIDI_OVERRIDES for char in name):
        return "right-to-left override in the name"
    return None


# Detecting what the octets are.

#: Formats whose puremagic signatures are distinctive enough to remove a
#: file for.  Other blocked extensions are judged by name only: their
#: signatures are plain text (scripts, .reg, .url), shared with ordinary
#: documents (an .msi is an OLE2 file like a .doc) or too short.
_DETECTABLE = frozenset(
    "exe dll drv ocx scr cpl com sys vxd pif lnk chm iso vhd vhdx dmg pkg".split()
)

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: The class ids of the root storage of Windows Installer files.
_INSTALLER_CLASSES = {
    uuid.UUID(f"000c108{digit}-0000-0000-c000-000000000046").bytes_le: (extension, description)
    for digit, extension, description in (
        ("4", "msi", "Windows Installer package"),
        ("6", "msp", "Windows Installer patch"),
        ("2", "mst", "Windows Installer transform"),
    )
}
_MACH_O = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


@dataclass(frozen=True)
class DetectedType:
    """
    One thing the octets may be: a file extension and a MIME type (either
    may be empty) and a description.
    """

    extension: str
    mimeType: str
    description: str


def detectTypes(head: bytes) -> list[DetectedType]:
    """
    What C{head}, the first decoded octets of a file, may be, among the
    executable, installer, shortcut and disk image formats recognized with
    confidence.
    """
    found: list[DetectedType] = []
    if not head:
        return found
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    for match in matches:
        extension = str(match.extension).lstrip(".").lower()
        signature = bytes(match.byte_match)
        if extension not in _DETECTABLE or len(set(signature)) < 2:
            continue
        if len(signature) < 4 and not (signature == b"MZ" and _hasPeHeader(head)):
            continue
        found.append(DetectedType(extension, str(match.mime_type or ""), str(match.name)))
    if head.startswith(b"\x7fELF"):
        found.append(DetectedType("", "application/x-executable", "ELF executable"))
    if head[:4] in _MACH_O:
        found.append(DetectedType("", "application/x-mach-binary", "Mach-O executable"))
    installer = _installerClass(head)
    if installer is not None:
        extension, description = installer
        found.append(DetectedType(extension, "application/x-ms-installer", description))
    return found


def _hasPeHeader(head: bytes) -> bool:
    """
    Whether a file starting with C{MZ} has the PE header its DOS header
    points to (a text file that happens to start with "MZ" has not).
    """
    if len(head) < 0x40:
        return False
    (offset,) = struct.unpack_from("<I", head, 0x3C)
    return head[offset : offset + 4] == b"PE\x00\x00"


def _installerClass(head: bytes) -> tuple[str, str] | None:
    """
    The Windows Installer kind of an OLE2 compound file, told by the class
    id of its root directory entry (if that lies within C{head}).
    """
    if not head.startswith(_OLE2) or len(head) < 0x34:
        return None
    sectorShift = struct.unpack_from("<H", head, 0x1E)[0]
    firstDirectorySector = struct.unpack_from("<I", head, 0x30)[0]
    if sectorShift not in (9, 12) or firstDirectorySector >= 0xFFFFFFFA:
        return None
    root = (firstDirectorySector + 1) << sectorShift
    return _INSTALLER_CLASSES.get(head[root + 0x50 : root + 0x60])


def detectionReason(head: bytes, policy: StripPolicy) -> str | None:
    """
    Why octets starting with C{head} must be removed whatever their name,
    or None.
    """
    for detected in detectTypes(head):
        if detected.extension in policy.extensions or detected.mimeType in policy.contentTypes:
            kind = f" (.{detected.extension})" if detected.extension else ""
            return f"detected {detected.description}{kind}"
    return None


# Zip archives.
#
# The attached archive is in memory: it is the part's decoded content.  Its
# members are never held whole: the first DETECT_BYTES of each are read to
# check their type, and a member that is itself an archive is read as a
# stream (_MemberStream) that keeps only its last octets, where a zip keeps
# its directory.  Every octet read out of a member is counted against
# max_inflated as it is read, so lying headers cost nothing extra.

_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_ZIP_TYPES = frozenset(
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

#: How much of a member is inflated at a time while looking for its end or
#: skipping to a place in it.
_CHUNK_BYTES = 64 * 1024


class _Refused(Exception):
    """
    A limit was reached while reading an attachment's archives: the
    attachment is removed, whatever C{unreadable} says.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Uninspectable(Exception):
    """
    A member archive cannot be read as a stream: C{unreadable} decides.
    """


@dataclass
class _Budget:
    """
    What opening one attachment's archives has cost so far: the members
    listed, the inflated sizes their headers declare, and the octets
    actually read out of members (each time they are read).
    """

    members: int = 0
    declared: int = 0
    inflated: int = 0

    def spend(self, octets: int, limit: int) -> None:
        """
        Count C{octets} read out of a member; stop everything once more
        than C{limit} have been.
        """
        self.inflated += octets
        if self.inflated > limit:
            raise _Refused(f"archive inflating to more than {limit} bytes")


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


class _MemberStream(io.RawIOBase):
    """
    An archive member read as a seekable file, so that C{zipfile} can open
    the archive it holds without it being held whole.

    Reads going forward come from one inflating stream.  Once the end has
    been reached, the last C{keep} octets are kept and reads there are
    answered from them.  Going back before them opens the member afresh
    and inflates it again up to the place asked for.  Every octet taken
    from the inflating stream is counted in the budget, so going back is
    paid for like the first reading.
    """

    def __init__(
        self,
        open: Callable[[], IO[bytes]],
        budget: _Budget,
        limit: int,
        keep: int = _TAIL_BYTES,
    ) -> None:
        super().__init__()
        self._open = open
        self._budget = budget
        self._limit = limit
        self._keep = keep
        self._stream: IO[bytes] | None = None
        self._streamAt = 0
        self._at = 0
        self._size: int | None = None
        self._recent: deque[bytes] = deque()
        self._recentSize = 0
        #: The member's last C{keep} octets, once its end has been reached.
        self.tail = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._end()
        elif whence == io.SEEK_CUR:
            offset += self._at
        if offset < 0:
            raise OSError("seek before the start of an archive member")
        self._at = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        end = self._end() if size is None or size < 0 else self._at + size
        if self._size is not None:
            end = min(end, self._size)
            tailStart = self._size - len(self.tail)
            if self._at >= tailStart:
                data = self.tail[self._at - tailStart : max(end, self._at) - tailStart]
                self._at += len(data)
                return data
        if end - self._at > self._keep:
            raise _Uninspectable(f"a read of {end - self._at} octets")
        if self._at < self._streamAt:
            self._rewind()
        while self._streamAt < self._at:
            if not self._pull(min(_CHUNK_BYTES, self._at - self._streamAt)):
                return b""
        data = self._pull(end - self._at) if end > self._at else b""
        self._at += len(data)
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()

    def _end(self) -> int:
        """
        The member's size, inflating it to its end the first time.
        """
        while self._size is None:
            self._pull(_CHUNK_BYTES)
        return self._size

    def _pull(self, count: int) -> bytes:
        if self._stream is None:
            self._stream = self._open()
        data = self._stream.read(count)
        self._budget.spend(len(data), self._limit)
        self._streamAt += len(data)
        if self._size is None:
            # Not yet at the end: every octet so far was read in order
            # from the start; keep the last ones.
            self._recent.append(data)
            self._recentSize += len(data)
            while self._recentSize - len(self._recent[0]) >= self._keep:
                self._recentSize -= len(self._recent.popleft())
            if len(data) < count:
                self._size = self._streamAt
                tail = b"".join(self._recent)
                self.tail = tail[-self._keep :] if len(tail) > self._keep else tail
                self._recent.clear()
        return data

    def _rewind(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._streamAt = 0
        if self._size is None:
            self._recent.clear()
            self._recentSize = 0


def _looksLikeArchive(name: str) -> bool:
    return canonicalName(name).endswith(".zip")


def inspectZip(
    data: bytes, policy: StripPolicy, budget: _Budget, depth: int = 1, where: str = ""
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
    except _Refused as refused:
        return refused.reason


def _inspectArchive(
    file: IO[bytes] | _MemberStream,
    tail: bytes,
    policy: StripPolicy,
    budget: _Budget,
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
    streamed = isinstance(file, _MemberStream)
    if streamed and records is not None and records[2] > NESTED_DIRECTORY_BYTES:
        return _unreadable(
            policy,
            f"unreadable archive{_at(where)}: "
            f"central directory over {NESTED_DIRECTORY_BYTES} bytes",
        )
    try:
        archive = zipfile.ZipFile(file)
        members = archive.infolist()
    except _Refused:
        raise
    except _Uninspectable as e:
        return _unreadable(policy, f"unreadable archive{_at(where)}: {e}")
    except Exception as e:  # every way zipfile refuses an archive; policy below
        return _unreadable(policy, f"unreadable archive{_at(where)}: {type(e).__name__}")
    budget.members += len(members)
    if budget.members > policy.maxMembers:
        return f"archive with more than {policy.maxMembers} files"
    files = [member for member in members if not member.is_dir()]
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
    if _overlapping(members):
        # A zip bomb's trick.  Read as a stream, each would make it start
        # over; and each member listed on the same data inflates it anew
        # (from a deflate stream that may begin with megabytes of empty
        # blocks, which cost time but count no octets).
        return _unreadable(policy, f"unreadable archive{_at(where)}: overlapping members")
    for member in sorted(files, key=lambda member: member.header_offset):
        path = where + member.filename
        if member.flag_bits & 0x1:
            if policy.encrypted == "strip":
                return f"encrypted archive member {displayName(path)}"
            continue
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # bzip2 and LZMA inflate without a size bound in zipfile:
            # never opened.  Such a member archive cannot be checked.
            if _looksLikeArchive(member.filename):
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
    for member in sorted(members, key=lambda member: member.header_offset):
        if member.header_offset < end:
            return True
        end = member.header_offset + 30 + member.compress_size
    return False


def _inspectMember(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    path: str,
    policy: StripPolicy,
    budget: _Budget,
    depth: int,
) -> str | None:
    stream = _MemberStream(lambda: archive.open(member), budget, policy.maxInflated)
    with stream:
        try:
            head = stream.read(DETECT_BYTES)
        except _Refused:
            raise
        except Exception as e:  # a damaged member; policy below
            return _unreadable(policy, f"archive member {displayName(path)}: {type(e).__name__}")
        nested = policy.archives and (
            head.startswith(_ZIP_SIGNATURES) or _looksLikeArchive(member.filename)
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
        except _Refused:
            raise
        except Exception as e:  # a damaged member; policy below
            return _unreadable(policy, f"archive member {displayName(path)}: {type(e).__name__}")
        return _inspectArchive(stream, stream.tail, policy, budget, depth + 1, path + "/")


def _unreadable(policy: StripPolicy, reason: str) -> str | None:
    return reason if policy.unreadable == "strip" else None


def _at(where: str) -> str:
    return f" {displayName(where.rstrip('/'))}" if where else ""


# TNEF (winmail.dat).

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_ATT_ATTACH_RENDDATA = 0x00069002
_ATT_ATTACH_TITLE = 0x00018010
_ATT_ATTACH_DATA = 0x0006800F
_ATT_ATTACHMENT = 0x00069005
_PR_ATTACH_EXTENSION = 0x3703
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_LONG_FILENAME = 0x3707
#: Sizes of the fixed-size MAPI property types (RFC-less, [MS-OXTNEF]).
_MAPI_FIXED = {
    0x0001: 4, 0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
    0x000A: 4, 0x000B: 4, 0x0014: 8, 0x0040: 8, 0x0048: 16,
}  # fmt: skip
_MAPI_VARIABLE = frozenset({0x000D, 0x001E, 0x001F, 0x0102})


@dataclass
class TnefAttachment:
    """
    What a TNEF stream says about one attachment.
    """

    names: list[str] = field(default_factory=list)
    head: bytes = b""


def tnefAttachments(data: bytes) -> list[TnefAttachment]:
    """
    The attachments of a TNEF stream: their titles, MAPI file names and
    first octets.  A damaged stream yields what could be read before the
    damage.
    """
    attachments: list[TnefAttachment] = []
    if not data.startswith(TNEF_SIGNATURE):
        return attachments
    position = 6
    while position + 9 <= len(data):
        level = data[position]
        attribute, length = struct.unpack_from("<II", data, position + 1)
        start = position + 9
        end = start + length
        if end > len(data):
            break
        if level == 2:
            if attribute == _ATT_ATTACH_RENDDATA or not attachments:
                attachments.append(TnefAttachment())
            current = attachments[-1]
            if attribute == _ATT_ATTACH_TITLE:
                current.names.append(data[start:end].split(b"\x00")[0].decode("cp1252", "replace"))
            elif attribute == _ATT_ATTACH_DATA:
                current.head = data[start : min(end, start + DETECT_BYTES)]
            elif attribute == _ATT_ATTACHMENT:
                current.names.extend(_mapiNames(data[start:end]))
        position = end + 2  # the attribute's checksum
    return attachments


def _mapiNames(value: bytes) -> list[str]:
    """
    The file name properties in a TNEF attachment's MAPI property list.
    """
    names: list[str] = []
    extension = ""
    try:
        (count,) = struct.unpack_from("<I", value, 0)
        position = 4
        for _ in range(count):
            kind, identifier = struct.unpack_from("<HH", value, position)
            position += 4
            if identifier >= 0x8000:  # a named property: GUID, then id or name
                (nameKind,) = struct.unpack_from("<I", value, position + 16)
                position += 20
                if nameKind == 0:
                    position += 4
                else:
                    (nameLength,) = struct.unpack_from("<I", value, position)
                    position += 4 + _padded(nameLength)
            base = kind & 0x0FFF
            values = 1
            if kind & 0x1000 or base in _MAPI_VARIABLE:
                (values,) = struct.unpack_from("<I", value, position)
                position += 4
            if base in _MAPI_FIXED:
                position += values * _padded(_MAPI_FIXED[base])
                continue
            if base not in _MAPI_VARIABLE:
                break
            for _ in range(values):
                (size,) = struct.unpack_from("<I", value, position)
                octets = value[position + 4 : position + 4 + size]
                position += 4 + _padded(size)
                if base not in (0x001E, 0x001F):
                    continue
                text = octets.decode("utf-16-le" if base == 0x001F else "cp1252", "replace")
                text = text.split("\x00")[0]
                if identifier in (_PR_ATTACH_LONG_FILENAME, _PR_ATTACH_FILENAME):
                    names.append(text)
                elif identifier == _PR_ATTACH_EXTENSION:
                    extension = text
    except struct.error:
        pass
    if extension:
        names.append("attachment" + extension)
    return names


def _padded(size: int) -> int:
    return (size + 3) // 4 * 4


# uuencoded files in text.

# The name runs to the end of the line; its trailing blanks are stripped in
# Python.  A lazy name followed by optional blanks would retry the blanks
# after every octet of the name: quadratic in a long run of blanks.
_UU_BEGIN = re.compile(rb"^begin(-base64)?[ \t]++[0-7]{1,4}[ \t]++([^\r\n]*+)(?=\r?\n|\r?\Z)", re.M)
_UU_LINE = re.compile(rb"[!-`][ -`]*\r?\n?")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]+\r?\n?")
_UU_END = re.compile(rb"^end[ \t]*(?:\r?\n|\Z)", re.M)
_B64_END = re.compile(rb"^====[ \t]*(?:\r?\n|\Z)", re.M)


@dataclass(frozen=True)
class UuBlock:
    """
    A uuencoded file in a text: where it lies (from its C{begin} line to
    the end of its C{end} line), its name and its first octets.
    """

    start: int
    end: int
    name: str
    head: bytes


def findUuBlocks(data: bytes, start: int = 0, end: int | None = None) -> list[UuBlock]:
    """
    The uuencoded (and C{begin-base64}) files in C{data[start:end]}.  A
    C{begin} line counts only if the line after it is encoded data; a
    block without its C{end} line runs to C{end}.
    """
    end = len(data) if end is None else end
    blocks: list[UuBlock] = []
    position = start
    while True:
        # The anchored multi-line pattern tries every line; a plain find
        # rules out (at C speed) the usual text without any "begin".
        if data.find(b"begin", position, end) == -1:
            return blocks
        begin = _UU_BEGIN.search(data, position, end)
        if begin is None:
            return blocks
        isBase64 = begin.group(1) is not None
        dataStart = begin.end()
        if data[dataStart : dataStart + 2] == b"\r\n":
            dataStart += 2
        elif data[dataStart : dataStart + 1] == b"\n":
            dataStart += 1
        lineMatcher = _B64_LINE if isBase64 else _UU_LINE
        if not lineMatcher.match(data, dataStart, end):
            position = begin.end()
            continue
        closing = (_B64_END if isBase64 else _UU_END).search(data, dataStart, end)
        blockEnd = closing.end() if closing else end
        name = begin.group(2).rstrip(b" \t").decode("utf-8", "replace")
        head = _uuHead(data, dataStart, closing.start() if closing else end, isBase64)
        blocks.append(UuBlock(begin.start(), blockEnd, name, head))
        position = blockEnd


def _uuHead(data: bytes, start: int, end: int, isBase64: bool) -> bytes:
    chunk = data[start : min(end, start + DETECT_BYTES * 2)]
    if isBase64:
        return _base64Prefix(chunk)
    decoded = []
    for line in chunk.splitlines():
        if not line or line in (b"`", b" "):
            break
        try:
            decoded.append(binascii.a2b_uu(line))
        except binascii.Error:
            break
    return b"".join(decoded)[:DETECT_BYTES]


# Reading parts without decoding more than needed.

#: The transfer encodings L{Part.payload} undoes; any other body is taken
#: as it is.
_DECODED_ENCODINGS = ("base64", "quoted-printable")
#: Transfer encodings some clients read as uuencode.
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "x-uu"})

_BASE64_ALPHABET = string.ascii_letters + string.digits + "+/="
_NOT_BASE64 = bytes(octet for octet in range(256) if chr(octet) not in _BASE64_ALPHABET)
_PADDING = re.compile(rb"=+")


def _base64Prefix(chunk: bytes, limit: int | None = None) -> bytes:
    """
    Decode the start of a base64 text leniently, like popproxy.message:
    junk skipped, a padding sign ends one run and starts the next.  With
    C{limit}, what is decoded may stop once it holds the first C{limit}
    octets.
    """
    kept = chunk.translate(None, _NOT_BASE64)
    if b"=" in kept:
        runs = _PADDING.split(kept)
    else:
        # The usual body, one run: the first whole quanta that hold
        # C{limit} octets decode to exactly the start of the rest.
        runs = [kept if limit is None else kept[: -(-limit // 3) * 4]]
    decoded = []
    for run in runs:
        run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
        if run:
            decoded.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return b"".join(decoded)


def decodedHead(part: Part, data: bytes, limit: int = DETECT_BYTES) -> bytes:
    """
    About the first C{limit} octets of C{part}'s payload, decoding only
    the start of its body.
    """
    start, end = part.bodyRange
    encoding = part.transferEncoding
    if encoding == "base64":
        return _base64Prefix(data[start : min(end, start + limit * 2 + 1024)], limit)[:limit]
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data[start : min(end, start + limit * 3)])[:limit]
    if encoding in _UU_ENCODINGS:
        blocks = findUuBlocks(data, start, min(end, start + limit * 2))
        if blocks:
            return blocks[0].head
    return data[start : min(end, start + limit)]


def decodedPayload(part: Part, data: bytes) -> bytes:
    """
    C{part}'s whole payload, as L{Part.payload} decodes it, without its
    intermediate copies for the usual base64 body (padding only at the
    end): C{binascii} skips the line breaks itself.
    """
    if part.transferEncoding == "base64":
        start, end = part.bodyRange
        padding = data.find(b"=", start, end)
        if padding == -1 or not data[padding:end].strip(b"= \t\r\n"):
            try:
                return binascii.a2b_base64(memoryview(data)[start:end])
            except binascii.Error:
                pass  # missing padding and the like: the lenient decoder
    return part.payload()


def decodedSize(part: Part, data: bytes) -> int:
    """
    The size of C{part}'s payload: counted without decoding for base64
    (alphabet characters times 3/4) and unencoded bodies; quoted-printable
    is decoded only if its encoded size is not already the answer.
    """
    start, end = part.bodyRange
    if part.transferEncoding == "base64":
        skipped = sum(data.count(octet, start, end) for octet in (b"\r", b"\n", b" ", b"\t", b"="))
        return (end - start - skipped) * 3 // 4
    return end - start


# Finding what to remove.


@dataclass(frozen=True)
class Finding:
    """
    One part to remove or cut.

    @ivar part: the part whose octets go to the quarantine and are
        replaced (for a file inside an attached message: the
        message/rfc822 part).
    @ivar filename: the name to show for what was removed.
    @ivar reason: why, in a few words.
    @ivar signed: it lies inside a multipart/signed.
    @ivar blocks: for uuencoded files cut from a text part: where they are
        (offsets into the payload, or into the message for an unencoded
        part); empty when the whole part is replaced.
    """

    part: Part
    filename: str
    reason: str
    signed: bool = False
    blocks: tuple[UuBlock, ...] = ()


def findBlocked(message: Message, policy: StripPolicy, nesting: int = 0) -> list[Finding]:
    """
    Every part of C{message} the policy removes, in message order; parts
    never lie inside one another.
    """
    data = message.toBytes()
    findings: list[Finding] = []
    limits = message.limits

    def visit(part: Part, container: Part | None, signed: bool) -> None:
        if part.isMultipart:
            inSigned = signed or part.contentType == "multipart/signed"
            for child in part.children:
                visit(child, None, inSigned)
            return
        judged = _judgePart(part, data, policy, limits, nesting)
        if judged is not None:
            # A file that is the whole of an attached message takes the
            # message/rfc822 part with it, not just the body under it.
            findings.append(Finding(container or part, judged[0], judged[1], signed))
            return
        children = part.children
        if children:
            visit(children[0], part, signed)
            return
        if policy.uuencode and part.contentType == "text/plain":
            finding = _uuFinding(part, data, policy, signed)
            if finding is not None:
                findings.append(finding)

    visit(message.root, None, False)
    return findings


def _judgePart(
    part: Part, data: bytes, policy: StripPolicy, limits: ParseLimits, nesting: int
) -> tuple[str, str] | None:
    """
    The name to show and the reason if the part must go, or None.
    Containers (message/rfc822) are judged on their headers only; their
    contents are visited separately.
    """
    names = part.filenames
    shown = displayName(names[0]) if names else _describe(part)
    for name in names:
        reason = nameReason(name, policy)
        if reason is not None:
            return displayName(name), reason
    contentType = part.contentType
    if contentType in policy.contentTypes:
        return shown, f"blocked content type {contentType}"
    isMessage = contentType in ("message/rfc822", "message/global")
    isContainer = isMessage or contentType.startswith("multipart/")
    maxDepth = limits.maxDepth
    if isContainer and len(part.path) >= maxDepth:
        return shown, "nested too deeply to be checked"
    if isMessage and part.children:
        return None
    if isMessage:
        # An encoded message/rfc822 (RFC 2045 forbids it, clients decode
        # it anyway): check the message inside, remove it whole.
        if nesting >= maxDepth:
            return shown, "nested too deeply to be checked"
        inner = Message.fromBytes(decodedPayload(part, data), limits=limits)
        try:
            # The chain checked the outer message only: an attached message
            # past a limit would hide whatever lies beyond it.
            inner.checkLimits()
        except LimitExceeded as e:
            return shown, f"attached message too complex to check ({e.limit})"
        found = findBlocked(inner, policy, nesting + 1)
        if found:
            return shown, f"attached message holds {found[0].filename} ({found[0].reason})"
        return None
    if contentType.startswith("text/") and not names and part.disposition != "attachment":
        return None  # the text of the message itself
    if policy.maxSize and decodedSize(part, data) > policy.maxSize:
        if part.transferEncoding != "quoted-printable" or len(part.payload()) > policy.maxSize:
            return shown, f"larger than {policy.maxSize} bytes"
    if policy.uuencode and part.transferEncoding in _UU_ENCODINGS:
        start, end = part.bodyRange
        for block in findUuBlocks(data, start, end):
            reason = nameReason(block.name, policy)
            if reason is not None:
                return displayName(block.name), f"uuencoded {displayName(block.name)}: {reason}"
    if not (policy.detect or policy.archives or policy.tnef):
        return None
    head = decodedHead(part, data)
    if policy.detect:
        reason = detectionReason(head, policy)
        if reason is not None:
            return shown, reason
    if policy.archives and (
        head.startswith(_ZIP_SIGNATURES)
        or contentType in _ZIP_TYPES
        or any(_looksLikeArchive(name) for name in names)
    ):
        reason = inspectZip(decodedPayload(part, data), policy, _Budget())
        if reason is not None:
            return shown, reason
    if policy.tnef and (
        head.startswith(TNEF_SIGNATURE)
        or contentType in _TNEF_TYPES
        or any(canonicalName(name) == "winmail.dat" for name in names)
    ):
        for attachment in tnefAttachments(decodedPayload(part, data)):
            for name in attachment.names:
                reason = nameReason(name, policy)
                if reason is not None:
                    return shown, f"winmail.dat holds {displayName(name)}: {reason}"
            if policy.detect:
                reason = detectionReason(attachment.head, policy)
                if reason is not None:
                    label = displayName(attachment.names[0]) if attachment.names else "a file"
                    return shown, f"winmail.dat holds {label}: {reason}"
    return None


def _describe(part: Part) -> str:
    return f"an unnamed {part.contentType} part"


def _uuFinding(part: Part, data: bytes, policy: StripPolicy, signed: bool) -> Finding | None:
    start, end = part.bodyRange
    if part.transferEncoding in _DECODED_ENCODINGS:
        blocks = findUuBlocks(part.payload())
    else:
        blocks = findUuBlocks(data, start, end)
    removed: list[UuBlock] = []
    reasons: list[str] = []
    for block in blocks:
        reason = nameReason(block.name, policy)
        if reason is None and policy.detect:
            reason = detectionReason(block.head, policy)
        if reason is not None:
            removed.append(block)
            reasons.append(reason)
    if not removed:
        return None
    names = ", ".join(displayName(block.name) for block in removed)
    return Finding(part, names, f"uuencoded {names}: {reasons[0]}", signed, tuple(removed))


# Building what replaces a removed part.


def _encodeBody(payload: bytes, encoding: str, lineEnding: bytes) -> bytes:
    """
    C{payload} in a transfer encoding, with the message's line ending.
    """
    if encoding == "base64":
        return base64.encodebytes(payload).replace(b"\n", lineEnding)
    lines = payload.splitlines(keepends=True)
    out = []
    for line in lines:
        content = line.rstrip(b"\r\n")
        encoded = binascii.b2a_qp(content, quotetabs=False, istext=False)
        out.append(encoded.replace(b"=\n", b"=" + lineEnding))
        if len(content) != len(line):
            out.append(lineEnding)
    return b"".join(out)


def _textOctets(text: str, charset: str | None) -> bytes:
    """
    A notice to put inside an existing text, in that text's charset.
    """
    try:
        codec = codecs.lookup(charset or "us-ascii").name
    except LookupError:
        codec = "ascii"
    if codec.startswith(("utf-16", "utf-32")):
        codec = "ascii"
    return text.encode(codec, "backslashreplace")


def _rootFields(message: Message, data: bytes) -> bytes:
    """
    The top-level header lines without the fields that described the
    removed content (the notice brings its own).
    """
    start, end = message.headers.range
    dropped = sorted(
        fieldRange
        for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition")
        for fieldRange in message.headers.fieldRanges(name)
    )
    kept = []
    position = start
    for fieldStart, fieldEnd in dropped:
        kept.append(data[position:fieldStart])
        position = fieldEnd
    kept.append(data[position:end])
    return b"".join(kept)


# The filter.


@implementer(IMessageFilter)
class Strip:
    """
    Removes the parts its L{StripPolicy} blocks; see the module docstring.
    """

    name = "strip"

    def __init__(self, policy: StripPolicy) -> None:
        self.policy = policy

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        policy = self.policy
        if context.partial:
            # A TOP preview cuts attachments short: an archive that cannot
            # be read there is a cut one, of no use to the reader.
            policy = replace(policy, unreadable="allow")
        # Decoding attachments and opening archives is CPU work: off the
        # reactor thread for big messages when the chain offers a thread
        # (the parse caches of a message may be filled from another
        # thread).  Small ones are checked inline: a thread hop costs more
        # than the work and only adds contention for the GIL.
        if context.runInThread is not None and len(message.raw) >= THREAD_THRESHOLD:
            findings = await context.runInThread(lambda: findBlocked(message, policy))
        else:
            findings = findBlocked(message, policy)
        if not findings:
            return Deliver()
        summary = "; ".join(f"{finding.filename} ({finding.reason})" for finding in findings)
        if self.policy.signed == "replace" and any(finding.signed for finding in findings):
            return Replace(
                self._signedNotice(message, findings),
                reason=f"signed message with {summary}",
                note=_shortened(f"removed the whole signed message holding {summary}"),
            )
        quarantine = context.quarantine
        if quarantine is None:
            return TempFail(
                f"strip would remove {findings[0].filename} but no quarantine is configured",
                note="no quarantine",
            )
        data = message.toBytes()
        removed = [
            RemovedPart(data[slice(*finding.part.range)], finding.part.path, finding.reason)
            for finding in findings
        ]
        try:
            identifiers = await self._quarantined(quarantine, message, removed, context)
        except Exception:
            context.log.failure(
                "cannot quarantine {filename} ({reason}) and {more} more removed parts",
                filename=findings[0].filename,
                reason=findings[0].reason,
                more=len(findings) - 1,
            )
            return TempFail(
                "the quarantine cannot keep a removed attachment, try again later",
                note="quarantine failed",
            )
        if context.runInThread is not None and len(message.raw) >= THREAD_THRESHOLD:
            edited = await context.runInThread(
                lambda: self._removed(message, data, findings, identifiers)
            )
        else:
            edited = self._removed(message, data, findings, identifiers)
        notes = []
        for finding, identifier in zip(findings, identifiers, strict=True):
            context.log.info(
                "removed {filename} ({reason}), quarantined as {quarantineId}",
                filename=finding.filename,
                reason=finding.reason,
                quarantineId=identifier,
            )
            notes.append(f"removed {finding.filename} ({finding.reason})")
        if any(finding.signed for finding in findings):
            notes.append("signature broken")
        return Rewrite(edited, note=_shortened("; ".join(notes)))

    async def _quarantined(
        self,
        quarantine: Any,
        message: Message,
        removed: list[RemovedPart],
        context: FilterContext,
    ) -> list[str]:
        """
        Keep every removed part, all at once where the quarantine can (then
        each under an id derived from the message and the part, so a retry
        of this message writes nothing new), else one by one.
        """
        if IPartQuarantine.providedBy(quarantine):
            identifiers = await maybeDeferred(
                quarantine.storeParts, message.raw, removed, context, plugin=self.name
            )
            return [str(identifier) for identifier in identifiers]
        return [
            str(
                await maybeDeferred(
                    quarantine.store, part.original, context, part.reason, plugin=self.name
                )
            )
            for part in removed
        ]

    def _noticeText(self, finding: Finding, identifier: str, withheld: bool = False) -> str:
        text = self.policy.notice.format(
            filename="(name withheld)" if withheld else finding.filename,
            reason="blocked file" if withheld else finding.reason,
            id=identifier,
        )
        if not text.endswith("\n"):
            text += "\n"
        return text + (SIGNATURE_BROKEN if finding.signed else "")

    def _removed(
        self, message: Message, data: bytes, findings: list[Finding], identifiers: list[str]
    ) -> Message:
        """
        C{message} with each finding's part replaced by its notice (or its
        uuencoded blocks cut out), in one edit however many there are.
        Should a name in a notice read as a delimiter line of the message
        (a name chosen to break it), that notice goes without the names.
        """
        pairs = list(zip(findings, identifiers, strict=True))
        try:
            return message.withPartsEdited(
                (finding.part, self._replacement(message, data, finding, identifier))
                for finding, identifier in pairs
            )
        except EditError:
            pass
        edits = []
        for finding, identifier in pairs:
            replacement = self._replacement(message, data, finding, identifier)
            try:
                message.withPartReplaced(finding.part, replacement)
            except EditError:
                replacement = self._replacement(message, data, finding, identifier, withheld=True)
            edits.append((finding.part, replacement))
        return message.withPartsEdited(edits)

    def _replacement(
        self,
        message: Message,
        data: bytes,
        finding: Finding,
        identifier: str,
        withheld: bool = False,
    ) -> bytes:
        eol = message.lineEnding
        part = finding.part
        text = self._noticeText(finding, identifier, withheld)
        partStart = part.range[0]
        if not finding.blocks:
            notice = textPart(text, lineEnding=eol)
            return _rootFields(message, data) + notice if not part.path else notice
        bodyStart, bodyEnd = part.bodyRange
        encoding = part.transferEncoding
        noticeOctets = _textOctets(
            text.replace("\n", "\r\n" if eol == b"\r\n" else "\n"), part.charset
        )
        if encoding in _DECODED_ENCODINGS:
            source, position, stop = part.payload(), 0, None
        else:
            source, position, stop = data, bodyStart, bodyEnd
        pieces = []
        for block in finding.blocks:
            pieces.append(source[position : block.start])
            pieces.append(noticeOctets)
            position = block.end
        pieces.append(source[position:stop])
        body = b"".join(pieces)
        if encoding in _DECODED_ENCODINGS:
            body = _encodeBody(body, encoding, eol)
        return data[partStart:bodyStart] + body

    def _signedNotice(self, message: Message, findings: list[Finding]) -> Message:
        """
        The message that stands in for a signed message holding blocked
        files: its identifying headers and a text naming them.
        """
        eol = message.lineEnding
        head = b""
        for name in ("From", "To", "Cc", "Date", "Message-ID", "Subject"):
            for value in message.headers.rawValues(name):
                head += name.encode("ascii") + b":" + value + eol
        listed = "".join(f"  - {finding.filename}: {finding.reason}\n" for finding in findings)
        text = (
            "This message was digitally signed and held attachments the mail gateway does "
            "not deliver:\n"
            f"{listed}"
            "Removing them would break the signature, so the whole message is kept in "
            "quarantine under the id in the X-Popproxy-Quarantine-Id header of this notice; "
            "ask your administrator if you need it.\n"
        )
        return Message.fromBytes(head + b"MIME-Version: 1.0" + eol + textPart(text, lineEnding=eol))


def _shortened(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Settings.


def makeFilter(settings: Mapping[str, Any]) -> Strip:
    """
    Build the filter from the C{settings} table of its C{[[filter]]} entry.

    @raise ValueError: an unknown setting, or a value of the wrong kind.
    """
    read = SettingsReader(settings)
    default = StripPolicy()
    policy = StripPolicy(
        extensions=_extensions(read.strings("extensions", DEFAULT_EXTENSIONS)),
        contentTypes=_contentTypes(read.strings("content_types", DEFAULT_CONTENT_TYPES)),
        detect=read.boolean("detect", default.detect),
        archives=read.boolean("archives", default.archives),
        maxNesting=read.integer("max_nesting", default.maxNesting, minimum=1),
        maxMembers=read.integer("max_members", default.maxMembers, minimum=1),
        maxInflated=read.integer("max_inflated", default.maxInflated, minimum=1),
        encrypted=read.choice("encrypted", default.encrypted, ("allow", "strip")),
        unreadable=read.choice("unreadable", default.unreadable, ("strip", "allow")),
        uuencode=read.boolean("uuencode", default.uuencode),
        tnef=read.boolean("tnef", default.tnef),
        maxSize=read.integer("max_size", default.maxSize, minimum=0),
        signed=read.choice("signed", default.signed, ("strip", "replace")),
        notice=_notice(read.value("notice", default.notice)),
    )
    read.finish()
    return Strip(policy)


def _extensions(items: tuple[str, ...]) -> frozenset[str]:
    extensions = set()
    for item in items:
        extension = item.strip().lstrip(".").casefold()
        if not extension or re.search(r"[\s/\\]", extension):
            raise ValueError(f"extensions: {item!r} is not a file extension")
        extensions.add(extension)
    return frozenset(extensions)


def _contentTypes(items: tuple[str, ...]) -> frozenset[str]:
    types = set()
    for item in items:
        contentType = item.strip().lower()
        if not re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", contentType):
            raise ValueError(f"content_types: {item!r} is not a type/subtype")
        types.add(contentType)
    return frozenset(types)


def _notice(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"notice must be a non-empty text, not {value!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        raise ValueError(f"notice is not a valid template: {e}") from None
    unknown = sorted(fields - _NOTICE_FIELDS)
    if unknown:
        raise ValueError(
            f"notice: unknown field {{{unknown[0]}}} (use {{filename}}, {{reason}}, {{id}})"
        )
    try:
        value.format(filename="setup.exe", reason="blocked extension .exe", id="id")
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"notice is not a valid template: {e}") from None
    return value
