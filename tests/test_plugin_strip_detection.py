"""
What a file's octets are (plugins/strip/_detection.py): programs,
shortcuts, disk images, installers and archives are recognized by their
signatures at fixed offsets whatever their name, reading a fixed amount of
any attachment; ordinary documents or text that merely start alike are not.
"""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strip._decoding import Base64Octets, partOctets
from plugins.strip._detection import (
    _OLE2,
    DETECT_BYTES,
    DetectedType,
    FileOctets,
    detectionReason,
    detectTypes,
)
from plugins.strip._settings import StripPolicy
from popproxy.message import Message, Part
from tests import strip_corpus

POLICY = StripPolicy()


def test_executablesAndImagesAreDetected() -> None:
    """
    A PE program, an ELF program, a Windows shortcut, an ISO image and an
    MSI package are each told by their octets.
    """
    assert "exe" in {found.extension for found in detectTypes(strip_corpus.peExecutable())}
    elf = detectTypes(strip_corpus.elfExecutable())
    assert "application/x-executable" in {found.mimeType for found in elf}
    assert "lnk" in {found.extension for found in detectTypes(strip_corpus.windowsShortcut())}
    assert "iso" in {found.extension for found in detectTypes(strip_corpus.isoImage())}
    assert "msi" in {found.extension for found in detectTypes(strip_corpus.msiPackage())}


def test_machOIsDetected() -> None:
    """
    A Mach-O program is told by its magic number alone.
    """
    found = detectTypes(b"\xcf\xfa\xed\xfe" + bytes(60))
    assert [item.mimeType for item in found] == ["application/x-mach-binary"]


def test_documentsAndLookalikesAreNotDetected() -> None:
    """
    A PDF, a PNG, nothing at all, and a text that starts with "MZ" but has
    no PE header are none of the blocked kinds.
    """
    for head in (strip_corpus.pdfDocument(), strip_corpus.pngImage(), b"", b"MZ" + b"a" * 200):
        assert detectTypes(head) == []
        assert detectionReason(head, POLICY) is None


def test_detectionReasonFollowsThePolicy() -> None:
    """
    A detected program is a reason to remove the file while its extension
    (or its MIME type) is blocked, and none when neither is.
    """
    head = strip_corpus.peExecutable()
    reason = detectionReason(head, POLICY)
    assert reason is not None and reason.startswith("detected ") and reason.endswith("(.exe)")
    byExtension = StripPolicy(extensions=frozenset({"exe"}), contentTypes=frozenset())
    assert detectionReason(head, byExtension) == reason
    neither = StripPolicy(extensions=frozenset({"zip"}), contentTypes=frozenset())
    assert detectionReason(head, neither) is None


# What the signature table recognizes beyond what puremagic's did (issue #16).


def _peWithCharacteristics(characteristics: int) -> bytes:
    program = bytearray(strip_corpus.peExecutable())
    program[0x80 + 22 : 0x80 + 24] = characteristics.to_bytes(2, "little")
    return bytes(program)


def _dosHeaderPointingTo(header: bytes) -> bytes:
    dos = bytearray(b"MZ" + bytes(0x3E))
    dos[0x3C:0x40] = (0x40).to_bytes(4, "little")
    return bytes(dos) + header + bytes(64)


def test_windowsProgramKinds() -> None:
    """
    A PE file flagged as a DLL is told as a library first, any other PE as
    a program; NE and LE/LX headers (16-bit Windows, VxD drivers) and a DOS
    header as linkers write it are programs too; every one matches each
    Windows program extension, so blocking any of them removes it.
    """
    library = detectTypes(_peWithCharacteristics(0x2102))
    assert library[0].extension == "dll" and "DLL" in library[0].description
    program = detectTypes(_peWithCharacteristics(0x0022))
    assert program[0].extension == "exe"
    assert {"exe", "dll", "sys", "scr", "cpl"} <= {found.extension for found in program}
    assert "16-bit" in detectTypes(_dosHeaderPointingTo(b"NE\x05\x01"))[0].description
    assert detectTypes(_dosHeaderPointingTo(b"LE\x00\x00"))[0].extension == "vxd"
    assert detectTypes(b"MZ\x90\x00" + bytes(20))[0].description == "DOS program (MZ)"
    onlyDll = StripPolicy(extensions=frozenset({"dll"}), contentTypes=frozenset())
    assert detectionReason(strip_corpus.peExecutable(), onlyDll) is not None


def test_pointerOutsideTheFileIsNoProgram() -> None:
    """
    An C{MZ} file whose header pointer leads past its end, or into its DOS
    header, is none of the program kinds.
    """
    assert detectTypes(b"MZ" + bytes(0x3A) + b"\xff\xff\xff\x7f" + bytes(100)) == []
    assert detectTypes(b"MZ" + bytes(0x3A) + b"\x00\x00\x00\x00" + bytes(100)) == []


def test_machOUniversalIsNotAJavaClass() -> None:
    """
    C{CAFEBABE} followed by a small architecture count is a Mach-O
    universal program; followed by a Java class version (45 and up) it is
    not.
    """
    universal = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(56)
    assert [found.mimeType for found in detectTypes(universal)] == ["application/x-mach-binary"]
    javaClass = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(56)
    assert detectTypes(javaClass) == []


@pytest.mark.parametrize(
    ("head", "extension"),
    [
        (b"ITSF\x03\x00\x00\x00`\x00\x00\x00", "chm"),
        (b"xar!\x00\x1c\x00\x01", "pkg"),
        (b"vhdxfile" + bytes(8), "vhdx"),
        (b"conectix\x00\x00\x00\x02", "vhd"),
        (b"Rar!\x1a\x07\x00\xcf\x90", "rar"),
        (b"Rar!\x1a\x07\x01\x00\x33", "rar"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
        (b"MSCF\x00\x00\x00\x00\x10\x27", "cab"),
        (b"\x1f\x8b\x08\x00\x00\x00", "gz"),
        (bytes(257) + b"ustar\x0000" + bytes(100), "tar"),
        (bytes(257) + b"ustar  \x00" + bytes(100), "tar"),
        (bytes(0x8001) + b"BEA01\x01" + bytes(100), "iso"),
    ],
)
def test_signaturesAtTheirOffsets(head: bytes, extension: str) -> None:
    """
    Help files, macOS packages, disk images and the archives strip cannot
    open are each told by their signature at its offset, so a policy that
    blocks their extension removes them whatever they are called.
    """
    assert extension in {found.extension for found in detectTypes(head)}
    blocking = StripPolicy(extensions=frozenset({extension}), contentTypes=frozenset())
    assert detectionReason(head, blocking) is not None
    nothing = StripPolicy(extensions=frozenset(), contentTypes=frozenset())
    assert detectionReason(head, nothing) is None


def test_archivesAreNotBlockedByDefault() -> None:
    """
    The default policy blocks none of the archive kinds it cannot open (a
    .rar or a .tar.gz is ordinary mail); zip is never a detected kind (strip
    opens zips and judges what is in them).
    """
    for head in (b"Rar!\x1a\x07\x00\xcf\x90", b"\x1f\x8b\x08\x00", b"PK\x03\x04" + bytes(30)):
        assert detectionReason(head, POLICY) is None
    assert detectTypes(b"PK\x03\x04" + bytes(30)) == []


def test_shortSignaturesAreNotEnough() -> None:
    """
    A text starting with C{ITSF} but no help file version, C{xar!} without
    its header size, or the start of a shortcut header without its class
    id, is none of those kinds.
    """
    for head in (b"ITSF is a word\r\n", b"xar! and more", b"L\x00\x00\x00" + bytes(40)):
        assert detectTypes(head) == []


def test_trailersOfSmallFiles() -> None:
    """
    A DMG image and a fixed-size VHD are marked in their last 512 octets:
    a whole file handed over as bytes is told by them.
    """
    dmg = bytes(4096) + b"koly\x00\x00\x00\x04" + bytes(504)
    assert "dmg" in {found.extension for found in detectTypes(dmg)}
    vhd = bytes(4096) + b"conectix\x00\x00\x00\x02" + bytes(500)
    assert "vhd" in {found.extension for found in detectTypes(vhd)}
    # The head of a longer file says nothing about its end.
    assert detectTypes(bytes(DETECT_BYTES - 512) + b"koly" + bytes(508)) == []


def _message(body: bytes, encoding: str) -> tuple[Part, bytes]:
    fields = ["Content-Type: application/pdf", f"Content-Transfer-Encoding: {encoding}"]
    message = Message.fromBytes(strip_corpus.part(fields, body))
    return message.root, message.toBytes()


def _base64Lines(content: bytes, lineLength: int = 76) -> bytes:
    encoded = base64.b64encode(content)
    lines = [encoded[i : i + lineLength] for i in range(0, len(encoded), lineLength)]
    return b"".join(line + b"\r\n" for line in lines)


@pytest.mark.parametrize("lineLength", [76, 64, 73, 1000])
def test_bigImagesTrailersInBase64(lineLength: int) -> None:
    """
    A 2 MB DMG image and an ISO image in a base64 attachment, whatever the
    encoder's line length, are told from the places detection reads: the
    ISO's sector 16 and the DMG's last 512 octets.
    """
    dmg = bytes(range(256)) * 8192 + b"koly\x00\x00\x00\x04" + bytes(504)
    part, data = _message(_base64Lines(dmg, lineLength), "base64")
    assert detectionReason(partOctets(part, data), POLICY) == (
        "detected Apple disk image (DMG) (.dmg)"
    )
    iso = strip_corpus.isoImage() + bytes(1 << 20)
    part, data = _message(_base64Lines(iso, lineLength), "base64")
    reason = detectionReason(partOctets(part, data), POLICY)
    assert reason is not None and "ISO 9660" in reason


def test_unpaddedBase64EndIsStillRead() -> None:
    """
    Base64 without its final padding (clients decode it anyway) leaves the
    alignment of the last quanta open: each is tried, so the DMG trailer is
    found whatever the file's length.
    """
    for extra in range(3):
        dmg = bytes(100_000 + extra) + b"koly" + bytes(508)
        body = _base64Lines(dmg).replace(b"=", b"")
        part, data = _message(body, "base64")
        assert "dmg" in {found.extension for found in detectTypes(partOctets(part, data))}


def test_paddingInsideTheBodyIsDecodedLeniently() -> None:
    """
    A base64 body with a padding sign before sector 16 is decoded the way
    L{Part.payload} decodes it (each padding sign ends a run), so the ISO
    signature is found where the decoded file has it.
    """
    iso = strip_corpus.isoImage()
    body = base64.b64encode(iso[:1]) + b"\r\n" + _base64Lines(iso[1:])
    part, data = _message(body, "base64")
    assert part.payload() == iso
    assert "iso" in {found.extension for found in detectTypes(partOctets(part, data))}


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "8bit"])
def test_detectionReadsAFixedAmount(encoding: str) -> None:
    """
    Detection reads the same places of a 10 MB attachment as of a 100 KB
    one: for base64, at most the first 48,000 characters of the body
    (sector 16 and the line ends before it) and its last ones, whatever its
    size.
    """
    program = strip_corpus.peExecutable()
    for size in (100_000, 10_000_000):
        content = program + bytes(size)
        if encoding == "base64":
            body = _base64Lines(content)
        elif encoding == "quoted-printable":
            body = binascii.b2a_qp(content, istext=False).replace(b"\n", b"\r\n")
        else:
            body = content
        part, data = _message(body, encoding)
        octets = partOctets(part, data)
        recorded = _Recording(octets)
        assert detectionReason(recorded, POLICY) is not None
        assert all(offset + size <= 0x8010 for offset, size in recorded.reads)
        if isinstance(octets, Base64Octets):
            assert octets.scanned <= 48_000


class _Recording:
    """
    L{FileOctets} that notes every place read.
    """

    def __init__(self, octets: FileOctets) -> None:
        self._octets = octets
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return self._octets.read(offset, size)

    def tails(self) -> tuple[bytes, ...]:
        return self._octets.tails()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_randomOctetsNeverCrash(head: bytes) -> None:
    """
    Any octets at all, as a head or prefixed with each signature's first
    octets, are judged without an error.
    """
    for prefix in (b"", b"MZ", b"MZ\x90\x00", _OLE2, b"\xca\xfe\xba\xbe", b"conectix"):
        for found in detectTypes(prefix + head):
            assert isinstance(found, DetectedType)
        detectionReason(prefix + head, POLICY)


@settings(max_examples=200, deadline=None)
@given(
    content=st.binary(max_size=5000),
    lineLength=st.integers(1, 120).map(lambda n: n * 4),
    places=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 100)), max_size=5),
    junk=st.sampled_from([b"", b" ", b"\t", b"!"]),
)
def test_base64PlacesAgreeWithThePayload(
    content: bytes, lineLength: int, places: list[tuple[int, int]], junk: bytes
) -> None:
    """
    Every place read from a base64 attachment is the same octets as the
    decoded payload's, whatever the line length and junk in the lines; the
    last 512 octets are among the candidates for the end.
    """
    encoded = base64.b64encode(content)
    body = b"".join(
        encoded[i : i + lineLength] + junk + b"\r\n" for i in range(0, len(encoded), lineLength)
    )
    part, data = _message(body, "base64")
    payload = part.payload()
    octets = partOctets(part, data)
    for offset, size in places:
        assert octets.read(offset, size) == payload[offset : offset + size]
    if len(payload) >= 512:
        assert payload[-512:] in octets.tails()


@pytest.mark.timeout(3)
def test_sparseBase64BodyIsPickedInLinearTime() -> None:
    """
    A dense base64 start followed by alphabet characters far apart among
    blanks (where a program's header may point) is picked out in one
    linear pass (0.1 s here): appending to the characters found copied
    them all at each step before (6 s here, some 30 s at strip's size limit).
    """
    size = 1 << 25
    dense = base64.b64encode(b"\x00" * (size * 3 // 8))[: size // 2]
    count = 4096
    sparse = (b" " * (size // 2 // count - 1) + b"A") * count
    data = dense + sparse
    octets = Base64Octets(data, 0, len(data))
    wanted = len(dense) + count - 1
    assert octets.read(3 * (wanted // 4) - 3, 3) == b"\x00\x00\x00"
