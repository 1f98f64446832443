"""
What a file's octets are, whatever its name says: the kinds a strip policy
can block (programs of the platforms strip knows, installers, shortcuts,
disk images, archives), each told by its real signature at a fixed offset.

Detection reads only fixed places of a file — its first octets, the header a
DOS header points to, the root entry an OLE2 header points to, sector 16 of
a disk image and the last 512 octets — through L{FileOctets}, so its cost
does not grow with the file.  The table of what is recognized is in
docs/plugins/strip.md ("Detected types").
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Protocol

from ._settings import StripPolicy

#: Decoded octets a caller reads from the start of a file it hands over as
#: C{bytes} (a TNEF attachment's or an archive member's head): everything
#: detection looks at from the start (an ISO 9660 image says so at offset
#: 32769) and the PE header of any ordinary program.
DETECT_BYTES = 65536

#: Where the trailers of DMG and fixed-size VHD images start, from the end.
TRAILER_BYTES = 512

#: Sector 16 of a disk image: ISO 9660 ("CD001") or UDF ("BEA01") volume
#: descriptors identify themselves one octet in.
_VOLUME_DESCRIPTOR = 0x8001


class FileOctets(Protocol):
    """
    The decoded octets of one file, read at fixed places.
    """

    def read(self, offset: int, size: int) -> bytes:
        """
        The octets from C{offset}, at most C{size} (fewer past the end).
        """
        ...

    def tails(self) -> tuple[bytes, ...]:
        """
        What the last L{TRAILER_BYTES} octets may be: one candidate when
        known, several when the encoding leaves the alignment open, none
        when only the start of the file is at hand.
        """
        ...


class HeadOctets:
    """
    L{FileOctets} over the first octets of a file: the whole file when
    shorter than L{DETECT_BYTES} (then its end is known too).
    """

    def __init__(self, head: bytes) -> None:
        self._head = head

    def read(self, offset: int, size: int) -> bytes:
        return self._head[offset : offset + size]

    def tails(self) -> tuple[bytes, ...]:
        head = self._head
        if len(head) >= DETECT_BYTES or len(head) < TRAILER_BYTES:
            return ()
        return (head[-TRAILER_BYTES:],)


@dataclass(frozen=True)
class DetectedType:
    """
    One thing the octets may be: a file extension and a MIME type (either
    may be empty) and a description.
    """

    extension: str
    mimeType: str
    description: str


def _kinds(mimeType: str, description: str, *extensions: str) -> tuple[DetectedType, ...]:
    return tuple(DetectedType(extension, mimeType, description) for extension in extensions)


_PE_MIME = "application/vnd.microsoft.portable-executable"
#: A Windows program is every one of these; it goes if any is blocked.
_WINDOWS_EXTENSIONS = ("exe", "dll", "sys", "scr", "cpl", "ocx", "drv", "com", "pif", "efi")
_PE_PROGRAM = _kinds(_PE_MIME, "Windows program (PE)", *_WINDOWS_EXTENSIONS)
_PE_LIBRARY = _kinds(_PE_MIME, "Windows library (PE DLL)", "dll", *_WINDOWS_EXTENSIONS)
_NE_PROGRAM = _kinds(
    "application/x-msdownload", "16-bit Windows program (NE)", *_WINDOWS_EXTENSIONS
)
_LE_PROGRAM = _kinds(
    "application/x-msdownload", "Windows driver or OS/2 program (LE/LX)", "vxd", "exe", "dll"
)
_DOS_PROGRAM = _kinds("application/x-dosexec", "DOS program (MZ)", "exe", "com", "pif", "sys")
_ELF = _kinds("application/x-executable", "ELF executable", "")
_MACH_O = _kinds("application/x-mach-binary", "Mach-O executable", "")
_MACH_O_UNIVERSAL = _kinds("application/x-mach-binary", "Mach-O universal executable", "")

_MACH_O_MAGICS = (
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
)
_SHORTCUT = struct.pack("<I", 0x4C) + uuid.UUID("00021401-0000-0000-c000-000000000046").bytes_le
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: The class ids of the root storage of Windows Installer files.
_INSTALLER_CLASSES = {
    uuid.UUID(f"000c108{digit}-0000-0000-c000-000000000046").bytes_le: _kinds(
        "application/x-ms-installer", description, extension
    )
    for digit, extension, description in (
        ("4", "msi", "Windows Installer package"),
        ("6", "msp", "Windows Installer patch"),
        ("2", "mst", "Windows Installer transform"),
    )
}

#: Signatures at the start of a file, each distinctive on its own.
_PREFIXES: tuple[tuple[bytes, tuple[DetectedType, ...]], ...] = (
    (b"\x7fELF", _ELF),
    *((magic, _MACH_O) for magic in _MACH_O_MAGICS),
    (_SHORTCUT, _kinds("application/x-ms-shortcut", "Windows shortcut", "lnk")),
    (b"ITSF\x03\x00\x00\x00", _kinds("application/vnd.ms-htmlhelp", "compiled HTML help", "chm")),
    (b"ITSF\x02\x00\x00\x00", _kinds("application/vnd.ms-htmlhelp", "compiled HTML help", "chm")),
    (b"xar!\x00\x1c", _kinds("application/x-xar", "macOS installer package (xar)", "pkg", "xar")),
    (b"vhdxfile", _kinds("application/x-vhdx", "Hyper-V disk image (VHDX)", "vhdx")),
    (b"conectix", _kinds("application/x-vhd", "Virtual PC disk image (VHD)", "vhd")),
    (b"Rar!\x1a\x07\x00", _kinds("application/vnd.rar", "RAR archive", "rar")),
    (b"Rar!\x1a\x07\x01\x00", _kinds("application/vnd.rar", "RAR archive", "rar")),
    (b"7z\xbc\xaf\x27\x1c", _kinds("application/x-7z-compressed", "7-Zip archive", "7z")),
    (b"MSCF\x00\x00\x00\x00", _kinds("application/vnd.ms-cab-compressed", "cabinet", "cab")),
    (b"\x1f\x8b\x08", _kinds("application/gzip", "gzip stream", "gz", "tgz")),
)
_ISO = _kinds("application/x-iso9660-image", "ISO 9660 CD/DVD Disc Image", "iso", "img")
_UDF = _kinds("application/x-iso9660-image", "UDF Disc Image", "iso", "img")
_TAR = _kinds("application/x-tar", "tar archive", "tar")
#: Signatures in the last 512 octets: fixed-size VHD's footer, DMG's koly block.
_TRAILERS = (
    (b"conectix", _kinds("application/x-vhd", "Virtual PC disk image (VHD)", "vhd")),
    (b"koly", _kinds("application/x-apple-diskimage", "Apple disk image (DMG)", "dmg")),
)


def detectTypes(octets: bytes | FileOctets) -> list[DetectedType]:
    """
    What a file may be, among the kinds a policy can block, read from
    C{octets}: its decoded octets (L{FileOctets}), or its first octets as
    C{bytes} (the whole file when shorter than L{DETECT_BYTES}).
    """
    source = HeadOctets(octets) if isinstance(octets, bytes) else octets
    head = source.read(0, 64)
    found: list[DetectedType] = []
    if not head:
        return found
    if head.startswith(b"MZ"):
        found.extend(_windowsProgram(source, head))
    elif head.startswith(b"\xca\xfe\xba\xbe") and 0 < int.from_bytes(head[4:8], "big") < 20:
        # Java class files share the magic number; their version is >= 45.
        found.extend(_MACH_O_UNIVERSAL)
    elif head.startswith(_OLE2):
        found.extend(_installerClass(source, head))
    for prefix, kinds in _PREFIXES:
        if head.startswith(prefix):
            found.extend(kinds)
    if source.read(257, 6) in (b"ustar\x00", b"ustar "):
        found.extend(_TAR)
    volume = source.read(_VOLUME_DESCRIPTOR, 5)
    if volume == b"CD001":
        found.extend(_ISO)
    elif volume == b"BEA01":
        found.extend(_UDF)
    for tail in source.tails():
        for signature, kinds in _TRAILERS:
            if tail.startswith(signature):
                found.extend(kinds)
    return found


def _windowsProgram(source: FileOctets, head: bytes) -> tuple[DetectedType, ...]:
    """
    The kinds of a file starting with C{MZ}: a program when the header its
    DOS header points to says so (PE, NE, LE/LX), or a DOS program when
    the DOS header is the one linkers write; a text that merely starts
    with "MZ" is none.
    """
    if len(head) >= 0x40:
        (offset,) = struct.unpack_from("<I", head, 0x3C)
        header = source.read(offset, 24) if offset >= 0x40 else b""
        if header.startswith(b"PE\x00\x00") and len(header) == 24:
            (characteristics,) = struct.unpack_from("<H", header, 22)
            return _PE_LIBRARY if characteristics & 0x2000 else _PE_PROGRAM
        if header.startswith(b"PE\x00\x00"):
            return _PE_PROGRAM
        if header[:2] == b"NE":
            return _NE_PROGRAM
        if header[:2] in (b"LE", b"LX"):
            return _LE_PROGRAM
    if head.startswith((b"MZ\x90\x00", b"MZ\x80\x00")):
        return _DOS_PROGRAM
    return ()


def _installerClass(source: FileOctets, head: bytes) -> tuple[DetectedType, ...]:
    """
    The Windows Installer kind of an OLE2 compound file, told by the class
    id of its root directory entry.
    """
    if len(head) < 0x34:
        return ()
    sectorShift = struct.unpack_from("<H", head, 0x1E)[0]
    firstDirectorySector = struct.unpack_from("<I", head, 0x30)[0]
    if sectorShift not in (9, 12) or firstDirectorySector >= 0xFFFFFFFA:
        return ()
    root = (firstDirectorySector + 1) << sectorShift
    return _INSTALLER_CLASSES.get(source.read(root + 0x50, 16), ())


def detectionReason(octets: bytes | FileOctets, policy: StripPolicy) -> str | None:
    """
    Why a file (L{detectTypes}'s C{octets}) must be removed whatever its
    name, or None.
    """
    for detected in detectTypes(octets):
        if detected.extension in policy.extensions or detected.mimeType in policy.contentTypes:
            kind = f" (.{detected.extension})" if detected.extension else ""
            return f"detected {detected.description}{kind}"
    return None
