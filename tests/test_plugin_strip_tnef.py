"""
TNEF streams read (plugins/strip/_tnef.py): each attachment's title, MAPI
file names and first octets, and a damaged or foreign stream read only as
far as it can be.
"""

from __future__ import annotations

import struct

from plugins.strip._detection import DETECT_BYTES
from plugins.strip._tnef import TNEF_SIGNATURE, tnefAttachments
from tests import strip_corpus


def test_attachmentNamesAndHead() -> None:
    """
    The 8.3 title and the long file name of the MAPI properties are both
    names of the attachment; its head is the start of its data.
    """
    content = b"MZ" + bytes(DETECT_BYTES + 100)
    [attachment] = tnefAttachments(strip_corpus.tnefStream("SETUP~1.EXE", "setup.exe", content))
    assert attachment.names == ["SETUP~1.EXE", "setup.exe"]
    assert attachment.head == content[:DETECT_BYTES]


def test_damagedStreamYieldsWhatWasRead() -> None:
    """
    A stream cut inside an attribute yields the attachments read before
    the cut; octets without the signature are no TNEF stream at all.
    """
    stream = strip_corpus.tnefStream("REPORT.PDF", "report.pdf", b"%PDF-1.7 " * 10)
    cut = tnefAttachments(stream[: len(stream) - 10])
    assert [attachment.names for attachment in cut] == [["REPORT.PDF"]]
    assert tnefAttachments(b"PK\x03\x04" + stream[4:]) == []
    assert stream.startswith(TNEF_SIGNATURE)


def test_truncatedMapiPropertiesKeepTheNamesRead() -> None:
    """
    A MAPI property list that claims two properties and ends inside the
    second gives the file name of the first, without an error.
    """
    name = "a-long-name.exe".encode("utf-16-le") + b"\x00\x00"
    properties = (
        struct.pack("<I", 2)
        + struct.pack("<HH", 0x001F, 0x3707)
        + struct.pack("<II", 1, len(name))
        + name
        + bytes(-len(name) % 4)
        + b"\x1f\x00"
    )
    stream = (
        TNEF_SIGNATURE
        + struct.pack("<H", 0x1234)
        + strip_corpus._tnefAttribute(2, 0x00069002, bytes(14))
        + strip_corpus._tnefAttribute(2, 0x00069005, properties)
    )
    [attachment] = tnefAttachments(stream)
    assert attachment.names == ["a-long-name.exe"]
