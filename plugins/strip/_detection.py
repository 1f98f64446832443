"""
What a file's first octets are, whatever its name says: the executable,
installer, shortcut and disk image formats recognized with confidence
(with C{puremagic}, plus PE, ELF, Mach-O and Windows Installer checks of
its own), and whether the policy removes such a file.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

import puremagic

from ._settings import StripPolicy

#: Decoded octets read from the start of a part to detect its type (an ISO
#: 9660 image says so at offset 32769).
DETECT_BYTES = 65536

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
