"""
Every pattern and hand-written scanner that reads attacker-controlled bytes
runs in linear time: each is fed, at a megabyte or more, the shapes that
make backtracking engines quadratic (long runs of a repeated class with no
terminator, runs of near-misses, unterminated quotes and comments).

A linear implementation answers each case in milliseconds; a quadratic one
would run for hours on these sizes.  So no test asserts on the clock: the
per-test timeout turns a regression into a clear failure, and the
assertions check that the answer is still the right one.
"""

from __future__ import annotations

import pytest

from plugins.strip import canonicalName, findUuBlocks, nameReason
from plugins.tag import withSubjectPrefixes
from popproxy._framing import (
    CommandFramer,
    FramingError,
    MultiLineScanner,
    ResponseParser,
    stuff,
    unstuff,
)
from popproxy._mimecodec import decodeBase64, decodeQuotedPrintable, isCleanBase64
from popproxy._mimeheader import (
    decodeValue,
    mediaType,
    normalizeTransferEncoding,
    parseStructured,
    scanHeaderBlock,
)
from popproxy._mimestructure import splitMultipart
from popproxy._proxyheader import InvalidProxyHeader, ProxyHeaderParser
from popproxy._testkit import loadPlugin, makeContext, runFilter
from popproxy.interfaces import Deliver
from popproxy.message import Message
from popproxy.testing import buildMessage

#: Big enough that anything quadratic runs for hours.
MEGABYTE = 1 << 20

#: Seconds per test: a linear scan of these inputs takes milliseconds.
LIMIT = 30

pytestmark = pytest.mark.timeout(LIMIT)

#: Runs of blanks as they break trailing-whitespace patterns: spaces, tabs
#: and both mixed.
BLANK_RUNS = [b" " * MEGABYTE, b"\t" * MEGABYTE, b" \t" * (MEGABYTE // 2)]


@pytest.mark.parametrize("blanks", BLANK_RUNS, ids=["spaces", "tabs", "mixed"])
def test_quotedPrintableBlanksNotEndingTheLine(blanks: bytes) -> None:
    """
    A quoted-printable line with a megabyte of blanks followed by text keeps
    the blanks (they are not trailing); blanks that end a line are removed.
    """
    assert decodeQuotedPrintable(b"a" + blanks + b"b\r\n") == b"a" + blanks + b"b\r\n"
    assert decodeQuotedPrintable(b"a" + blanks + b"\r\nb") == b"a\r\nb"
    assert decodeQuotedPrintable(b"a" + blanks) == b"a"


def test_quotedPrintableManyShortRuns() -> None:
    """
    Near-misses: many short runs of blanks, each followed by text, then one
    that ends the line.
    """
    data = b"x \t" * (MEGABYTE // 3) + b"  \n"
    assert decodeQuotedPrintable(data) == b"x \t" * (MEGABYTE // 3 - 1) + b"x\n"


@pytest.mark.parametrize("blanks", BLANK_RUNS, ids=["spaces", "tabs", "mixed"])
def test_uuencodeBeginLineWithLongBlanks(blanks: bytes) -> None:
    """
    strip's C{begin 644 name} pattern on a line whose name is followed by a
    megabyte of blanks and more text: the name keeps its inner blanks and
    loses the trailing ones; a run of blanks that ends the line is dropped.
    """
    body = b"begin 644 x" + blanks + b"y\r\nM" + b"A" * 60 + b"\r\nend\r\n"
    (block,) = findUuBlocks(body)
    assert block.name.endswith("y") and block.name.startswith("x")
    body = b"begin 644 evil.exe" + blanks + b"\r\nM" + b"A" * 60 + b"\r\nend\r\n"
    (block,) = findUuBlocks(body)
    assert block.name == "evil.exe"


def test_uuencodeManyBeginLines() -> None:
    """
    A text of begin lines that are not followed by encoded data finds no
    block, and one with blanks but no mode is no begin line at all.
    """
    data = b"begin 644 a\r\n\r\n" * (MEGABYTE // 15) + b"begin " + b" " * MEGABYTE + b"x\n"
    assert findUuBlocks(data) == []


def test_headerFieldNameWithoutColon() -> None:
    """
    A megabyte-long "field name" without a colon, or followed by blanks and
    no colon, ends the header block instead of backtracking.
    """
    for line in (b"A" * MEGABYTE, b"A" * 1000 + b" " * MEGABYTE + b"x"):
        block = scanHeaderBlock(line + b"\r\n\r\nbody", 0, len(line) + 6)
        assert block.fields == ()


def test_headerManyContinuationLines() -> None:
    """
    One field folded over a megabyte of continuation lines is one field.
    """
    data = b"Subject: x" + b"\r\n y" * (MEGABYTE // 4) + b"\r\n\r\n"
    block = scanHeaderBlock(data, 0, len(data))
    assert len(block.fields) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"=?" * MEGABYTE,
        b"=?utf-8?q?" + b"a" * MEGABYTE,
        b"=?utf-8?q?a?=" * (MEGABYTE // 13),
        b"=?" + b"a" * MEGABYTE + b"?q?x?=",
        b"=?a?q?" * (MEGABYTE // 6),
    ],
    ids=["openers", "unterminated", "many-words", "long-charset", "near-misses"],
)
def test_encodedWords(value: bytes) -> None:
    """
    RFC 2047 decoding of encoded-word openers without an end, long
    charsets, and a megabyte of complete words gives text, never a stall.
    """
    assert isinstance(decodeValue(value), str)


@pytest.mark.parametrize(
    "value",
    [
        b"text/plain" + b";" * MEGABYTE,
        b'text/plain; name="' + b"\\" * MEGABYTE,
        b'text/plain; name="' + b'\\"' * (MEGABYTE // 2),
        b"text/plain (" + b"(" * MEGABYTE,
        b"text/plain; a=b" * (MEGABYTE // 15),
        b"text/" + b"x" * MEGABYTE,
        b"text" + b" " * MEGABYTE + b"x/plain",
    ],
    ids=["semicolons", "backslashes", "escaped-quotes", "comments", "params", "token", "blanks"],
)
def test_structuredValues(value: bytes) -> None:
    """
    Content-Type style values with a megabyte of separators, unterminated
    quoted strings and comments, many parameters or a huge token parse.
    """
    structured = parseStructured(value)
    mediaType(structured.main)


def test_mediaTypeNearMiss() -> None:
    """
    A type of a megabyte of token characters and no slash is no media type.
    """
    assert mediaType("x" * MEGABYTE) is None
    assert mediaType(" " * MEGABYTE + "text" + " " * MEGABYTE + "/") is None


def test_transferEncodingWithComments() -> None:
    """
    A Content-Transfer-Encoding made of comments and blanks normalizes.
    """
    name, _ = normalizeTransferEncoding(b"base64" + b" (x)" * (MEGABYTE // 4))
    assert name == "base64"
    normalizeTransferEncoding(b"(" * MEGABYTE)


@pytest.mark.parametrize(
    "data",
    [b"=" * MEGABYTE, b"QQ==" * (MEGABYTE // 4), b"Q=" * (MEGABYTE // 2), b"\r\n" * MEGABYTE],
    ids=["padding", "padded-quanta", "near-misses", "line-ends"],
)
def test_base64(data: bytes) -> None:
    """
    Lenient base64 decoding and the cleanliness check on padding runs.
    """
    decodeBase64(data)
    isCleanBase64(data)


def test_multipartBoundaryNearMisses() -> None:
    """
    A multipart body of a megabyte of lines that almost are delimiters
    (the boundary's prefix, the boundary with junk) is split once.
    """
    boundary = b"b" * 60
    lines = [b"--" + boundary[:-1], b"--" + boundary + b"x", b"-", b"--"] * (MEGABYTE // 200)
    body = b"--" + boundary + b"\r\n\r\n" + b"\r\n".join(lines) + b"\r\n--" + boundary + b"--\r\n"
    layout = splitMultipart(body, 0, len(body), boundary)
    assert len(layout.parts) == 1


def test_commandFramerWithoutLineEnd() -> None:
    """
    A client sending megabytes without a CRLF is cut off by the framer.
    """
    framer = CommandFramer()
    with pytest.raises(FramingError):
        for _ in range(64):
            framer.feed(b"A" * 65536)


def test_multiLineScannerAndDotStuffing() -> None:
    """
    A body of a megabyte of line-starting dots and near-miss terminators
    round-trips through stuffing, the scanner and unstuffing.
    """
    body = b".\r\n.." * (MEGABYTE // 5) + b"\r\n" + b"\r\n.\r" * (MEGABYTE // 4) + b"\r\n"
    stuffed = stuff(body)
    scanner = MultiLineScanner()
    out, rest = scanner.feed(stuffed + b"+OK next\r\n")
    assert scanner.done and rest == b"+OK next\r\n"
    assert unstuff(out[: -len(b".\r\n")]) == body


def test_responseParserLongStatus() -> None:
    """
    An upstream status line of a megabyte of blanks is refused or taken
    once, not rescanned for every chunk.
    """
    parser = ResponseParser()
    parser.expect(False)
    try:
        for _ in range(16):
            parser.feed(b"+OK" + b" " * 65536)
    except Exception:
        pass


def test_proxyHeaderGarbage() -> None:
    """
    A PROXY header parser fed a megabyte of near-miss text refuses it.
    """
    parser = ProxyHeaderParser()
    with pytest.raises(InvalidProxyHeader):
        for _ in range(16):
            parser.feed(b"PROXY " + b" " * 65536)


def test_stripFileNames() -> None:
    """
    strip's name checks on a file name of a megabyte of dots, braces and
    separators (CLSID suffix and path patterns).
    """
    for name in (".{" * MEGABYTE, "a/" * MEGABYTE, "." * MEGABYTE + "exe", "{0" * MEGABYTE):
        canonicalName(name)
    strip = loadPlugin("strip")
    assert nameReason("x" + " ." * (MEGABYTE // 2) + "exe", strip.policy) is not None


def test_stripOnHostileMessage() -> None:
    """
    The strip plugin, loaded as the configuration loads it, on a message
    whose quoted-printable text part holds a megabyte of blanks and a
    C{begin 644} line with a megabyte of blanks, delivers it untouched.
    """
    text = (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + b"a"
        + b" " * MEGABYTE
        + b"b\r\nbegin 644 x"
        + b"\t" * MEGABYTE
        + b"y\r\n"
    )
    raw = buildMessage(text, buildMessageText(b"end\r\n"))
    result = runFilter(loadPlugin("strip"), raw, makeContext())
    assert isinstance(result.verdict, Deliver)
    assert result.output == raw


def test_tagSubjectPrefixOnHostileSubject() -> None:
    """
    tag's subject rewriting on a Subject of a megabyte of encoded-word
    openers and blanks.
    """
    raw = b"Subject: " + b"=?" * (MEGABYTE // 2) + b" " * MEGABYTE + b"\r\n\r\nbody\r\n"
    tagged, _ = withSubjectPrefixes(Message.fromBytes(raw), ["[SPAM]"])
    assert b"[SPAM]" in tagged.toBytes()[:200]


def buildMessageText(body: bytes) -> bytes:
    """
    A plain text part with C{body}.
    """
    return b"Content-Type: text/plain\r\n\r\n" + body


def test_stripFileNamesOfManyDotsAndStreams() -> None:
    """
    strip's name check on a megabyte of dots with no blocked extension, and
    on a megabyte of repeated NTFS stream suffixes and trailing dots, looks
    only at the suffixes a blocked extension could be.
    """
    strip = loadPlugin("strip")
    assert nameReason("a." * (MEGABYTE // 2) + "txt", strip.policy) is None
    assert nameReason("a." * (MEGABYTE // 2) + "exe", strip.policy) == "blocked extension .exe"
    assert canonicalName("x.exe" + ". ::$data" * (MEGABYTE // 9)) == "x.exe"
