"""
uuencoded (and C{begin-base64}) files inside a text: where each block lies,
the name its C{begin} line gives and its first decoded octets.  Every
pattern is anchored so that each octet is tried a bounded number of times.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from ._base64 import base64Prefix
from ._detection import DETECT_BYTES

# The name runs to the end of the line; its trailing blanks are stripped in
# Python.  A lazy name followed by optional blanks would retry the blanks
# after every octet of the name: quadratic in a long run of blanks.
_UU_BEGIN = re.compile(rb"^begin(-base64)?[ \t]++[0-7]{1,4}[ \t]++([^\r\n]*+)(?=\r?\n|\r?\Z)", re.M)
_UU_LINE = re.compile(rb"[!-`][ -`]*\r?\n?")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]+\r?\n?")
_UU_END = re.compile(rb"^end[ \t]*(?:\r?\n|\Z)", re.M)
_B64_END = re.compile(rb"^====[ \t]*(?:\r?\n|\Z)", re.M)


@dataclass(frozen=True)
class UuBlock:
    """
    A uuencoded file in a text: where it lies (from its C{begin} line to
    the end of its C{end} line), its name and its first octets.
    """

    start: int
    end: int
    name: str
    head: bytes


def findUuBlocks(data: bytes, start: int = 0, end: int | None = None) -> list[UuBlock]:
    """
    The uuencoded (and C{begin-base64}) files in C{data[start:end]}.  A
    C{begin} line counts only if the line after it is encoded data; a
    block without its C{end} line runs to C{end}.
    """
    end = len(data) if end is None else end
    blocks: list[UuBlock] = []
    position = start
    while True:
        # The anchored multi-line pattern tries every line; a plain find
        # rules out (at C speed) the usual text without any "begin".
        if data.find(b"begin", position, end) == -1:
            return blocks
        begin = _UU_BEGIN.search(data, position, end)
        if begin is None:
            return blocks
        isBase64 = begin.group(1) is not None
        dataStart = begin.end()
        if data[dataStart : dataStart + 2] == b"\r\n":
            dataStart += 2
        elif data[dataStart : dataStart + 1] == b"\n":
            dataStart += 1
        lineMatcher = _B64_LINE if isBase64 else _UU_LINE
        if not lineMatcher.match(data, dataStart, end):
            position = begin.end()
            continue
        closing = (_B64_END if isBase64 else _UU_END).search(data, dataStart, end)
        blockEnd = closing.end() if closing else end
        name = begin.group(2).rstrip(b" \t").decode("utf-8", "replace")
        head = _uuHead(data, dataStart, closing.start() if closing else end, isBase64)
        blocks.append(UuBlock(begin.start(), blockEnd, name, head))
        position = blockEnd


def _uuHead(data: bytes, start: int, end: int, isBase64: bool) -> bytes:
    """
    The first decoded octets of a block whose encoded lines start at
    C{start}.
    """
    chunk = data[start : min(end, start + DETECT_BYTES * 2)]
    if isBase64:
        return base64Prefix(chunk)
    decoded = []
    for line in chunk.splitlines():
        if not line or line in (b"`", b" "):
            break
        try:
            decoded.append(binascii.a2b_uu(line))
        except binascii.Error:
            break
    return b"".join(decoded)[:DETECT_BYTES]
