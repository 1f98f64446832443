"""
Tests for popproxy._mimewrite's encoded-words, exported from
popproxy.message for plugins that write header values of their own.
"""

from __future__ import annotations

import email.header

from hypothesis import given
from hypothesis import strategies as st

from popproxy.message import encodedWords, encodeField


@given(st.text(min_size=1, max_size=400), st.integers(min_value=1, max_value=75))
def test_encodedWordsDecodeBackAndFit(text: str, firstRoom: int) -> None:
    """
    Space-joined encoded-words decode to the text (lone surrogates become
    '?'), each word is at most 75 characters, and the first fits
    C{firstRoom} when that leaves room for six octets (a word always takes
    at least one character, whatever the room).
    """
    words = encodedWords(text, firstRoom=firstRoom)
    assert all(len(word) <= 75 for word in words)
    if firstRoom >= 20:
        assert len(words[0]) <= firstRoom
    decoded = "".join(
        part.decode(charset) if isinstance(part, bytes) and charset else part
        for part, charset in email.header.decode_header(b" ".join(words).decode("ascii"))
    )
    assert decoded == text.encode("utf-8", "replace").decode("utf-8")


def test_encodeFieldFoldsOneWordPerLine() -> None:
    """
    encodeField writes a non-ASCII value as the encoded-words of
    encodedWords, the first sized for the field name, one per line.
    """
    value = "é" * 60
    field = encodeField("Subject", value, b"\r\n")
    words = encodedWords(value, firstRoom=78 - len("Subject") - 2)
    assert field == b"Subject: " + b"\r\n ".join(words) + b"\r\n"
