"""
TNEF streams (C{winmail.dat}, Outlook's attachments in one part): the
titles, MAPI file names and first octets of the attachments they hold,
read without judging them.  A damaged stream yields what could be read
before the damage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ._detection import DETECT_BYTES

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
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
