"""
A part's payload read without decoding more than needed: its first
octets (L{decodedHead}), all of it without intermediate copies for the
usual base64 body (L{decodedPayload}), and its size, counted rather than
decoded where it can be (L{decodedSize}).
"""

from __future__ import annotations

import binascii

from popproxy.message import Part

from ._base64 import base64Prefix
from ._detection import DETECT_BYTES
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
