"""
Lenient decoding of the start of a base64 text (plugins/strip/_base64.py):
it decodes as popproxy.message decodes whole bodies, and a limit changes
how much is decoded, never the octets at the start.
"""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from plugins.strip._base64 import base64Prefix
from popproxy.message import Message


@given(
    st.lists(
        st.sampled_from([b"QUJD", b"ZA", b"=", b"==", b"\r\n", b" ", b"*", b"TVqQ"]), max_size=60
    ),
    st.integers(0, 50),
)
def test_base64HeadShortcut(pieces: list[bytes], limit: int) -> None:
    """
    Decoding only the quanta that hold the first C{limit} octets of a
    base64 text gives the same start as decoding all of it, padding signs,
    junk and line breaks included.
    """
    chunk = b"".join(pieces)
    assert base64Prefix(chunk, limit)[:limit] == base64Prefix(chunk)[:limit]


@given(st.binary(max_size=400), st.integers(1, 76))
def test_wellFormedBase64DecodesExactly(content: bytes, lineLength: int) -> None:
    """
    An ordinary base64 body, in lines of any length, decodes to exactly
    what was encoded; with a limit, to a prefix at least that long.
    """
    encoded = base64.b64encode(content)
    lines = b"\r\n".join(encoded[i : i + lineLength] for i in range(0, len(encoded), lineLength))
    assert base64Prefix(lines) == content
    assert base64Prefix(lines, 10)[:10] == content[:10]


@given(
    st.lists(st.sampled_from([b"QUJD", b"ZA", b"=", b"==", b"\r\n", b"*", b"TVqQ"]), max_size=40)
)
def test_decodesAsTheMessageModelDoes(pieces: list[bytes]) -> None:
    """
    Junk, stray padding and short runs decode as L{Message} decodes the
    payload of a base64 part, so the start the filter checks is the start
    of what a client would save.
    """
    body = b"".join(pieces)
    raw = (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )
    assert base64Prefix(body) == Message.fromBytes(raw).root.payload()
