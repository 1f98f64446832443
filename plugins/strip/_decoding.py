"""
A part's payload read without decoding more than needed: its first
octets (L{decodedHead}), the few fixed places type detection reads
(L{partOctets}), all of it without intermediate copies for the usual base64
body (L{decodedPayload}), and its size, counted rather than decoded where
it can be (L{decodedSize}).
"""

from __future__ import annotations

import binascii

from popproxy.message import Part

from ._base64 import NOT_BASE64, base64Prefix, base64Suffixes, quanta
from ._detection import DETECT_BYTES, TRAILER_BYTES, FileOctets, HeadOctets
from ._uuencode import findUuBlocks

#: The transfer encodings L{Part.payload} undoes; any other body is taken
#: as it is.
DECODED_ENCODINGS = ("base64", "quoted-printable")
#: Transfer encodings some clients read as uuencode.
UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "x-uu"})


def decodedHead(part: Part, data: bytes, limit: int = DETECT_BYTES) -> bytes:
    """
    About the first C{limit} octets of C{part}'s payload, decoding only
    the start of its body.
    """
    start, end = part.bodyRange
    encoding = part.transferEncoding
    if encoding == "base64":
        return base64Prefix(data[start : min(end, start + limit * 2 + 1024)], limit)[:limit]
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data[start : min(end, start + limit * 3)])[:limit]
    if encoding in UU_ENCODINGS:
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


def partOctets(part: Part, data: bytes) -> FileOctets:
    """
    C{part}'s decoded payload as type detection reads it: only the places
    it asks for are decoded, so the cost does not grow with the part.
    """
    start, end = part.bodyRange
    encoding = part.transferEncoding
    if encoding == "base64":
        return Base64Octets(data, start, end)
    if encoding == "quoted-printable" or encoding in UU_ENCODINGS:
        head = decodedHead(part, data)
        if encoding in UU_ENCODINGS or len(head) < DETECT_BYTES:
            return HeadOctets(head)
        tail = binascii.a2b_qp(data[max(start, end - 4 * TRAILER_BYTES) : end])
        return _KnownOctets(head, (tail[-TRAILER_BYTES:],))
    return RawOctets(data, start, end)


class RawOctets:
    """
    L{FileOctets} of an unencoded body: C{data[start:end]}, read in place.
    """

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self._start = start
        self._end = end

    def read(self, offset: int, size: int) -> bytes:
        begin = self._start + offset
        return self._data[begin : min(self._end, begin + size)] if begin < self._end else b""

    def tails(self) -> tuple[bytes, ...]:
        if self._end - self._start < TRAILER_BYTES:
            return ()
        return (self._data[self._end - TRAILER_BYTES : self._end],)


class _KnownOctets(HeadOctets):
    """
    L{HeadOctets} whose last octets were decoded apart.
    """

    def __init__(self, head: bytes, tails: tuple[bytes, ...]) -> None:
        super().__init__(head)
        self._tails = tails

    def tails(self) -> tuple[bytes, ...]:
        return self._tails


class Base64Octets:
    """
    L{FileOctets} of a base64 body C{data[start:end]}.  The alphabet
    characters are picked out of the body's start only as far as the
    furthest place read (at most about 44,000 characters for sector 16 of a
    disk image); each place read decodes only its own quanta.  A body with
    padding signs inside (each ends a run when decoded leniently, like
    L{Part.payload}) is decoded leniently from its start instead.
    """

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self._start = start
        self._end = end
        # A bytearray: appending to bytes copies what is already there, which
        # a sparse body (a character now and then among blanks) makes
        # quadratic.
        self._alphabet = bytearray()
        self._scanned = start
        self._lenient = b""

    @property
    def scanned(self) -> int:
        """
        How many octets of the encoded body were read so far.
        """
        return self._scanned - self._start

    def _characters(self, count: int) -> bytearray:
        """
        At least the first C{count} alphabet characters (fewer at the end).
        """
        while len(self._alphabet) < count and self._scanned < self._end:
            missing = count - len(self._alphabet)
            # Lines of 76 characters and CRLF: 1/38 more, and a margin.
            stop = min(self._end, self._scanned + missing + missing // 32 + 256)
            self._alphabet += self._data[self._scanned : stop].translate(None, NOT_BASE64)
            self._scanned = stop
        return self._alphabet

    def read(self, offset: int, size: int) -> bytes:
        first, last = offset // 3, -(-(offset + size) // 3)
        characters = self._characters(4 * last)
        window = bytes(characters[4 * first : 4 * last])
        if b"=" in characters[: 4 * last] and b"=" in characters.rstrip(b"="):
            return self._leniently(offset + size)[offset : offset + size]
        decoded = quanta(window.rstrip(b"="))
        skip = offset - 3 * first
        return decoded[skip : skip + size]

    def _leniently(self, size: int) -> bytes:
        if len(self._lenient) < size:
            chunk = self._data[self._start : min(self._end, self._start + size * 2 + 1024)]
            self._lenient = base64Prefix(chunk, size)
        return self._lenient

    def tails(self) -> tuple[bytes, ...]:
        # A quantum's worth of margin and the line ends of 76-character lines.
        encoded = self._data[max(self._start, self._end - TRAILER_BYTES * 2) : self._end]
        return tuple(
            suffix[-TRAILER_BYTES:]
            for suffix in base64Suffixes(encoded)
            if len(suffix) >= TRAILER_BYTES
        )
