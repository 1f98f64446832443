"""
A part's payload read without decoding more than needed
(plugins/strip/_decoding.py): the head, the whole payload and the size
agree with what L{Part.payload} decodes, for every transfer encoding.
"""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.strip._decoding import decodedHead, decodedPayload, decodedSize
from popproxy.message import Message, Part
from tests import strip_corpus


def leaf(body: bytes, encoding: str | None) -> tuple[Part, bytes]:
    """
    The only part of a message whose body is C{body} in C{encoding}, and
    the message's octets.
    """
    fields = ["Content-Type: application/octet-stream"]
    if encoding:
        fields.append(f"Content-Transfer-Encoding: {encoding}")
    message = Message.fromBytes(strip_corpus.part(fields, body))
    return message.root, message.toBytes()


def encoded(content: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return binascii.b2a_base64(content).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return binascii.b2a_qp(content, istext=False).replace(b"\n", b"\r\n")
    return content


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "8bit", None])
@given(content=st.binary(max_size=2000), limit=st.integers(1, 300))
def test_headPayloadAndSizeAgreeWithThePart(
    encoding: str | None, content: bytes, limit: int
) -> None:
    """
    The head is the start of the payload, the payload is L{Part.payload}'s,
    and the size is its length (for quoted-printable, the encoded length:
    never less, and only decoded by the filter when it is over max_size).
    """
    part, data = leaf(encoded(content, encoding or ""), encoding)
    payload = part.payload()
    assert decodedPayload(part, data) == payload
    assert decodedHead(part, data, limit) == payload[:limit]
    if encoding == "quoted-printable":
        assert decodedSize(part, data) >= len(payload)
    else:
        assert decodedSize(part, data) == len(payload)


def test_paddingInsideABase64BodyIsDecodedLeniently() -> None:
    """
    A base64 body of padded quanta (C{QQ==QQ==}) decodes as the message
    model decodes it, though C{binascii} alone would stop at the first pad.
    """
    part, data = leaf(b"QQ==QQ==\r\nQQ==\r\n", "base64")
    assert decodedPayload(part, data) == part.payload() == b"AAA"
    assert decodedHead(part, data) == b"AAA"


def test_uuencodedBodyHeadIsItsFile() -> None:
    """
    The head of a part in the C{x-uuencode} transfer encoding is the start
    of the file it holds.
    """
    part, data = leaf(strip_corpus.uuencoded("a.exe", b"MZ" + bytes(50)), "x-uuencode")
    assert decodedHead(part, data) == b"MZ" + bytes(50)
