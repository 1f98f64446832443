"""
The shortcuts of the header parser (popproxy/_mimeheader.py) give the same
answers as the straightforward code they replaced: a field-at-a-time scan
of header blocks against a line-at-a-time one, the regular-expression split
of parameters and the unquoting shortcut against character loops, the
transfer encoding shortcut against the full normalization, and the cache
of parsed values against parsing again.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from popproxy import _mimeheader
from popproxy._mimedefects import Defect
from popproxy._mimeheader import (
    CACHED_VALUE_LENGTH,
    Field,
    HeaderBlock,
    RawParameter,
    clean,
    normalizeTransferEncoding,
    parseStructured,
    scanHeaderBlock,
    splitParameters,
    unfold,
)

# The slow paths, as they were before the shortcuts.

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def _referenceField(data: bytes, name: bytes, start: int, valueStart: int, end: int) -> Field:
    valueEnd = end
    if valueEnd > valueStart and data[valueEnd - 1] == 0x0A:
        valueEnd -= 1
        if valueEnd > valueStart and data[valueEnd - 1] == 0x0D:
            valueEnd -= 1
    return Field(name, start, valueStart, valueEnd, end)


def referenceScan(data: bytes, start: int, end: int) -> HeaderBlock:
    """
    The header block scanner that looks at one line at a time.
    """
    fields: list[Field] = []
    defects: list[Defect] = []
    insertAt = -1
    pos = start
    name = b""
    fieldStart = valueStart = -1
    while pos < end:
        newline = data.find(b"\n", pos, end)
        lineEnd = end if newline == -1 else newline + 1
        first = data[pos]
        if first == 0x0A or (first == 0x0D and lineEnd == pos + 2 and newline != -1):
            if fieldStart != -1:
                fields.append(_referenceField(data, name, fieldStart, valueStart, pos))
            at = insertAt if insertAt != -1 else pos
            return HeaderBlock(start, tuple(fields), at, pos, lineEnd, tuple(defects))
        if first in (0x20, 0x09):
            if fieldStart == -1 and Defect.FIRST_LINE_IS_CONTINUATION not in defects:
                defects.append(Defect.FIRST_LINE_IS_CONTINUATION)
            pos = lineEnd
            continue
        match = _FIELD_NAME.match(data, pos, lineEnd)
        if match is None:
            if pos == 0 and data.startswith(b"From "):
                pos = lineEnd
                continue
            if fieldStart != -1:
                fields.append(_referenceField(data, name, fieldStart, valueStart, pos))
            defects.append(Defect.MISSING_HEADER_BODY_SEPARATOR)
            at = insertAt if insertAt != -1 else pos
            return HeaderBlock(start, tuple(fields), at, pos, pos, tuple(defects))
        if fieldStart != -1:
            fields.append(_referenceField(data, name, fieldStart, valueStart, pos))
        if insertAt == -1:
            insertAt = pos
        name = match.group(1)
        fieldStart = pos
        valueStart = match.end()
        pos = lineEnd
    if fieldStart != -1:
        fields.append(_referenceField(data, name, fieldStart, valueStart, end))
    at = insertAt if insertAt != -1 else end
    return HeaderBlock(start, tuple(fields), at, end, end, tuple(defects))


def referenceUnquote(quoted: str) -> tuple[str, str]:
    value: list[str] = []
    escaped = False
    end = len(quoted)
    for index in range(1, len(quoted)):
        char = quoted[index]
        if escaped:
            value.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            end = index
            break
        else:
            value.append(char)
    return "".join(value), quoted[1:end]


def referenceSplit(text: str) -> tuple[str, list[RawParameter]]:
    """
    Split parameters one character at a time.
    """
    segments: list[str] = []
    current: list[str] = []
    inQuote = False
    escaped = False
    for char in text:
        if inQuote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                inQuote = False
        elif char == '"':
            inQuote = True
        elif char == ";":
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))
    parameters: list[RawParameter] = []
    for segment in segments[1:]:
        name, equals, value = segment.partition("=")
        if not equals:
            continue
        name = name.strip(" \t").lower()
        value = value.strip(" \t")
        if value.startswith('"'):
            unquoted, literal = referenceUnquote(value)
            parameters.append(RawParameter(name, unquoted, literal))
        else:
            parameters.append(RawParameter(name, value, value))
    return segments[0], parameters


def referenceTransferEncoding(raw: bytes) -> tuple[str, tuple[Defect, ...]]:
    text = clean(unfold(raw))
    plain = text.lower()
    normalized = re.sub(r'[ \t\r\n"]+', "", re.sub(r"\([^()]*\)", "", plain))
    defects: list[Defect] = []
    if normalized != plain:
        defects.append(Defect.IRREGULAR_TRANSFER_ENCODING)
    if not normalized:
        return "7bit", tuple(defects)
    if normalized not in _mimeheader.KNOWN_TRANSFER_ENCODINGS:
        defects.append(Defect.UNKNOWN_TRANSFER_ENCODING)
    return normalized, tuple(defects)


# What the inputs are made of: the pieces that decide how headers parse.

_HEADER_PIECES = [
    b"Subject",
    b"Content-Type",
    b"From ",
    b"X",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b"\r\n\r\n",
    b"\n\n",
    b"value",
    b"\xc3\xa9",
    b"\x00",
    b"\x7f",
    b";",
]
headerBytes = st.lists(st.sampled_from(_HEADER_PIECES), max_size=40).map(b"".join)

_VALUE_PIECES = [
    "text/plain",
    ";",
    " ",
    "\t",
    "=",
    '"',
    "\\",
    "name",
    "NAME*",
    "*0*",
    "*1",
    "utf-8''%C3%A9",
    "(comment)",
    "(",
    ")",
    "a.exe",
    "=?utf-8?q?x?=",
    "\udcff",
]
valueTexts = st.lists(st.sampled_from(_VALUE_PIECES), max_size=20).map("".join)


@settings(max_examples=1000)
@given(headerBytes, st.data())
def test_scanMatchesLineByLine(data: bytes, draw: st.DataObject) -> None:
    """
    Scanning a field at a time finds the same fields, offsets, end and
    defects as scanning a line at a time, wherever the block starts and
    ends in the data.
    """
    start = draw.draw(st.integers(0, len(data)))
    end = draw.draw(st.integers(start, len(data)))
    assert scanHeaderBlock(data, start, end) == referenceScan(data, start, end)


@settings(max_examples=1000)
@given(valueTexts)
def test_splitMatchesCharacterLoop(text: str) -> None:
    """
    Splitting parameters with regular expressions (and unquoting without
    backslashes by slicing) gives what the character loops gave.
    """
    assert splitParameters(text) == referenceSplit(text)


@given(st.text(alphabet='"\\ab;', max_size=20))
def test_unquoteMatchesCharacterLoop(text: str) -> None:
    """
    Unquoting gives the value and the text between the quotes exactly as
    the character loop did, with or without backslashes and closing quote.
    """
    quoted = '"' + text
    assert _mimeheader._unquote(quoted) == referenceUnquote(quoted)


@given(st.sampled_from(["7bit", "BASE64", " Quoted-Printable", "8bit ", '"base64"', "bin(x)ary"]))
def test_transferEncodingShortcut(value: str) -> None:
    """
    A plain known transfer encoding, in any case, is normalized as the full
    clean-up would, defects included.
    """
    raw = value.encode()
    assert normalizeTransferEncoding(raw) == referenceTransferEncoding(raw)


@settings(max_examples=500)
@given(valueTexts)
def test_cachedParseMatchesParsing(text: str) -> None:
    """
    A short value parsed from the cache (twice, so the second answer comes
    from it) equals the value parsed afresh; a long one is not cached and
    is parsed the same way.
    """
    for raw in (
        text.encode("utf-8", "surrogateescape"),
        (text * 40).encode("utf-8", "surrogateescape")[: CACHED_VALUE_LENGTH + 50],
    ):
        fresh = _mimeheader._parseStructured(raw)
        assert parseStructured(raw) == fresh
        assert parseStructured(raw) == fresh


@settings(max_examples=1000)
@given(headerBytes, st.integers(1, 6))
def test_fieldLimitKeepsTheBlockBounds(data: bytes, limit: int) -> None:
    """
    Scanning under a field limit keeps the first fields the unlimited scan
    finds and none after, finds the same block end, body start and
    insertion point, and adds HEADER_FIELD_LIMIT exactly when fields were
    left out.
    """
    whole = scanHeaderBlock(data, 0, len(data))
    limited = scanHeaderBlock(data, 0, len(data), limit)
    assert limited.fields == whole.fields[:limit]
    assert (limited.end, limited.bodyStart, limited.insertAt) == (
        whole.end,
        whole.bodyStart,
        whole.insertAt,
    )
    over = len(whole.fields) > limit
    assert set(limited.defects) == set(whole.defects) | (
        {Defect.HEADER_FIELD_LIMIT} if over else set()
    )


@settings(max_examples=1000)
@given(valueTexts, st.integers(1, 6))
def test_parameterLimitReadsAPrefix(text: str, limit: int) -> None:
    """
    Splitting under a parameter limit gives the first item and a prefix of
    the parameters the unlimited split gives, all of them when it says
    nothing was left out, and never more than the limit.
    """
    main, whole = splitParameters(text)
    limitedMain, limited, exceeded = _mimeheader.splitParametersWithin(text, limit)
    assert limitedMain == main
    assert len(limited) <= limit
    assert limited == whole[: len(limited)]
    if not exceeded:
        assert limited == whole
    else:
        assert text.count(";") > limit
