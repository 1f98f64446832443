"""
uuencoded files in a text (plugins/strip/_uuencode.py): where each block
lies, its name and first octets, and the lines that only look like one.
"""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from plugins.strip._uuencode import findUuBlocks
from tests import strip_corpus


def test_blockBetweenTexts() -> None:
    """
    A block runs from its C{begin} line to the end of its C{end} line; its
    name loses trailing blanks and its head is the decoded content.
    """
    block = strip_corpus.uuencoded("setup.exe  ", b"MZ" + bytes(100))
    text = b"Hello,\r\n" + block + b"Bye.\r\n"
    [found] = findUuBlocks(text)
    assert text[found.start : found.end] == block
    assert found.name == "setup.exe"
    assert found.head == b"MZ" + bytes(100)


def test_beginWithoutDataIsText() -> None:
    """
    A line that starts with "begin 644" but is not followed by encoded
    data is ordinary text.
    """
    assert findUuBlocks(b"begin 644 my talk\r\nwith friends, then end\r\n") == []


def test_blockWithoutEndRunsToTheEnd() -> None:
    """
    A block whose C{end} line is missing runs to the end of the range
    searched.
    """
    block = strip_corpus.uuencoded("a.exe", b"abc" * 40)
    cut = block[: block.index(b"`\r\nend")]
    text = b"intro\r\n" + cut + b"more text\r\n"
    [found] = findUuBlocks(text, 0, len(text) - 4)
    assert found.end == len(text) - 4


def test_base64Block() -> None:
    """
    A C{begin-base64} block ends at its C{====} line and its head is
    decoded as base64.
    """
    encoded = base64.encodebytes(b"MZ payload").replace(b"\n", b"\r\n")
    text = b"begin-base64 644 tool.exe\r\n" + encoded + b"====\r\nafter\r\n"
    [found] = findUuBlocks(text)
    assert (found.name, found.head) == ("tool.exe", b"MZ payload")
    assert text[found.end :] == b"after\r\n"


@given(
    st.binary(min_size=1, max_size=500), st.binary(max_size=50).filter(lambda b: b"begin" not in b)
)
def test_anyContentRoundTrips(content: bytes, prefix: bytes) -> None:
    """
    Whatever a uuencoded file holds, its block is found where it was put
    and its head is the start of the content.
    """
    block = strip_corpus.uuencoded("f.bin", content)
    text = prefix + b"\r\n" + block
    [found] = findUuBlocks(text)
    assert text[found.start : found.end] == block
    assert found.head == content[: len(found.head)] and found.head
