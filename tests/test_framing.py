"""
Tests for popproxy._framing: command framing, response framing and
dot-stuffing, including property-based round trips.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._framing import (
    MAX_DOT_OFFSETS,
    CommandFramer,
    CommandLine,
    DotStuffer,
    FramingError,
    MultiLineScanner,
    ResponseParser,
    StatusLine,
    UnstuffingScanner,
    _replaceLineDots,
    restuff,
    stuff,
    unstuff,
)

# Messages as they travel: arbitrary octets, with a bias towards the ones
# that matter for framing.
interesting = st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"..", b"\r\n.\r\n", b"\0", b"x"])
messages = st.lists(st.one_of(interesting, st.binary(max_size=20)), max_size=40).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


class TestCommandFramer:
    def test_splitsOnCRLFOnly(self) -> None:
        """
        Only CRLF ends a command; a bare LF or CR stays inside the line, so
        'NOOP\\nDELE 1' is one (malformed) command, never two.
        """
        framer = CommandFramer()
        assert framer.feed(b"NOOP\nDELE 1\r\nSTAT\rRSET\r\n") == [
            CommandLine(b"NOOP\nDELE 1"),
            CommandLine(b"STAT\rRSET"),
        ]

    def test_pipelinedAndSplitAcrossReads(self) -> None:
        """
        Several commands in one read, and one command split over reads
        (including between CR and LF), come out whole and in order.
        """
        framer = CommandFramer()
        assert framer.feed(b"USER a\r\nPASS b\r\nST") == [
            CommandLine(b"USER a"),
            CommandLine(b"PASS b"),
        ]
        assert framer.feed(b"AT\r") == []
        assert framer.feed(b"\nQUIT\r\n") == [CommandLine(b"STAT"), CommandLine(b"QUIT")]

    def test_lineLimit(self) -> None:
        """
        253 octets plus CRLF (255 in all) is accepted; one more is reported
        as too long, and the next command is read normally.
        """
        framer = CommandFramer()
        ok = b"X" * 253
        assert framer.feed(ok + b"\r\n") == [CommandLine(ok)]
        assert framer.feed(b"Y" * 254 + b"\r\nNOOP\r\n") == [
            CommandLine(b"", tooLong=True),
            CommandLine(b"NOOP"),
        ]

    def test_longLineInPieces(self) -> None:
        """
        An overlong line arriving in small pieces is discarded, not kept,
        and reported once.
        """
        framer = CommandFramer()
        for _ in range(100):
            assert framer.feed(b"Z" * 100) == []
            assert framer.buffered < 255
        assert framer.buffered <= 1
        assert framer.feed(b"\r\nSTAT\r\n") == [
            CommandLine(b"", tooLong=True),
            CommandLine(b"STAT"),
        ]

    def test_floodWithoutLineEnd(self) -> None:
        """
        Megabytes without CRLF raise FramingError instead of being buffered.
        """
        framer = CommandFramer(maxDiscard=64 * 1024)
        with pytest.raises(FramingError):
            for _ in range(1024):
                framer.feed(b"A" * 1024)

    @given(
        st.lists(st.binary(max_size=30).filter(lambda b: b"\r\n" not in b), max_size=10),
        st.lists(st.integers(0, 10_000), max_size=10),
    )
    def test_anyChunking(self, lines: list[bytes], cuts: list[int]) -> None:
        """
        However the stream is cut into reads, the same lines come out.
        """
        # A trailing CR would merge with the separator; avoid that case.
        lines = [line.rstrip(b"\r") for line in lines]
        stream = b"".join(line + b"\r\n" for line in lines)
        framer = CommandFramer()
        out: list[CommandLine] = []
        for chunk in chunked(stream, cuts):
            out += framer.feed(chunk)
        assert out == [CommandLine(line) for line in lines]


class TestDotStuffing:
    @given(messages)
    def test_roundTrip(self, message: bytes) -> None:
        """
        Stuffing then unstuffing gives the message back, with a final CRLF
        added only if it lacked one.
        """
        wire = stuff(message)
        assert wire.endswith(b".\r\n")
        expected = message if not message or message.endswith(b"\r\n") else message + b"\r\n"
        assert unstuff(wire[:-3]) == expected

    @given(messages, st.lists(st.integers(0, 10_000), max_size=8), st.binary(max_size=20))
    def test_scannerFindsTheEnd(self, message: bytes, cuts: list[int], after: bytes) -> None:
        """
        The scanner finds the terminator of a stuffed body exactly, however
        it is chunked, and hands back what follows untouched.
        """
        wire = stuff(message)
        scanner = MultiLineScanner()
        body = b""
        rest = b""
        for chunk in chunked(wire + after, cuts):
            if scanner.done:
                rest += chunk
                continue
            part, leftover = scanner.feed(chunk)
            body += part
            rest += leftover
        assert scanner.done
        assert body == wire
        assert rest == after

    def test_emptyBody(self) -> None:
        """
        '.CRLF' right after the status line is an empty body.
        """
        scanner = MultiLineScanner()
        assert scanner.feed(b".\r\nNEXT") == (b".\r\n", b"NEXT")
        assert scanner.done
        assert stuff(b"") == b".\r\n"

    def test_stuffedLines(self) -> None:
        """
        Lines starting with a dot get one more; '..' in mid-line does not.
        """
        assert stuff(b".a\r\nb..c\r\n..\r\n") == b"..a\r\nb..c\r\n...\r\n.\r\n"
        assert unstuff(b"..a\r\nb..c\r\n...\r\n") == b".a\r\nb..c\r\n..\r\n"


class TestResponseParser:
    def test_pipelinedResponses(self) -> None:
        """
        Pipelined single- and multi-line responses in one read come out in
        order, with the body still stuffed and a None after each response.
        """
        parser = ResponseParser()
        parser.expect(False)
        parser.expect(True)
        parser.expect(True)
        events = parser.feed(b"+OK 2 30\r\n+OK\r\n..x\r\n.\r\n-ERR no\r\n")
        assert events == [
            StatusLine(b"+OK 2 30"),
            None,
            StatusLine(b"+OK"),
            b"..x\r\n.\r\n",
            None,
            StatusLine(b"-ERR no"),
            None,
        ]
        assert parser.idle

    def test_garbage(self) -> None:
        """
        A server that does not speak POP3 is a FramingError.
        """
        parser = ResponseParser()
        parser.expect(False)
        with pytest.raises(FramingError):
            parser.feed(b"HTTP/1.1 200 OK\r\n")

    def test_unsolicited(self) -> None:
        """
        Data nobody asked for is a FramingError.
        """
        with pytest.raises(FramingError):
            ResponseParser().feed(b"+OK\r\n")

    @given(messages, st.lists(st.integers(0, 10_000), max_size=8))
    def test_bodyChunks(self, message: bytes, cuts: list[int]) -> None:
        """
        The body pieces of a RETR response, joined, are exactly the stuffed
        message plus terminator, however the reads fall.
        """
        wire = b"+OK message follows\r\n" + stuff(message) + b"+OK\r\n"
        parser = ResponseParser()
        parser.expect(True)
        parser.expect(False)
        events: list[object] = []
        for chunk in chunked(wire, cuts):
            events += parser.feed(chunk)
        statuses = [e for e in events if isinstance(e, StatusLine)]
        body = b"".join(e for e in events if isinstance(e, bytes))
        assert statuses == [StatusLine(b"+OK message follows"), StatusLine(b"+OK")]
        assert body == stuff(message)
        assert events.count(None) == 2


class TestStreamingStuffing:
    @given(messages, st.lists(st.integers(0, 10_000), max_size=8))
    def test_stufferMatchesStuff(self, message: bytes, cuts: list[int]) -> None:
        """
        Stuffing a message chunk by chunk gives exactly stuff(message),
        however it is chunked.
        """
        stuffer = DotStuffer()
        out = b"".join(stuffer.feed(chunk) for chunk in chunked(message, cuts))
        assert out + stuffer.finish() == stuff(message)


@given(messages, st.sampled_from([b"\r\n", b"\r\n.."]))
def test_lineDotReplacementIsBytesReplace(data: bytes, replacement: bytes) -> None:
    """
    The regex-based replacement of line-starting dots gives exactly what
    bytes.replace gives, on inputs dense with CR, LF and dots.
    """
    assert _replaceLineDots(data, replacement) == data.replace(b"\r\n.", replacement)


def test_unstuffWithoutDotsDoesNotCopy() -> None:
    """
    A body with no line starting with a dot (most mail) is returned as the
    very same object: unstuffing it costs one scan, not a copy.
    """
    body = b"Subject: s\r\n\r\n" + b"text. more text.\r\n" * 1000
    assert unstuff(body) is body


# Bodies as any server may send them: lines that may start with a dot
# (stuffed or not as RFC 1939 asks), never a lone dot before the end.
_bodyLines = st.lists(
    st.tuples(st.sampled_from([b"", b".", b".."]), messages.map(lambda m: m.replace(b"\n", b""))),
    max_size=12,
)


def _oddBody(lines: list[tuple[bytes, bytes]]) -> bytes:
    """
    A dot-stuffed body (without its terminating line) whose lines carry
    the given dot prefixes; a line that would read as the terminator gets
    a character more.
    """
    out = []
    for prefix, text in lines:
        line = prefix + text
        out.append(line + b"x" if line.rstrip(b"\r\n") == b"." or line == b"." else line)
    return b"".join(line + b"\r\n" for line in out)


def _scanAll(wire: bytes, cuts: list[int]) -> tuple[bytes, bytes, UnstuffingScanner]:
    pieces: list[bytes] = []
    scanner = UnstuffingScanner(pieces.append)
    rest = b""
    for chunk in chunked(wire, cuts):
        rest += scanner.feed(chunk)
    return b"".join(pieces), rest, scanner


class TestUnstuffingScanner:
    @given(messages, st.lists(st.integers(0, 10_000), max_size=8), st.binary(max_size=20))
    def test_roundTrip(self, message: bytes, cuts: list[int], after: bytes) -> None:
        """
        A stuffed message, however it is chunked, comes out whole in one
        pass: the message (a final CRLF added if it lacked one), the end
        found exactly, what follows handed back untouched, and the dot
        lines counted and placed, so the body is rebuilt exactly.
        """
        wire = stuff(message)
        out, rest, scanner = _scanAll(wire + after, cuts)
        assert scanner.done
        assert out == unstuff(wire[:-3])
        assert rest == after
        assert scanner.dotLines == (b"\r\n" + out).count(b"\r\n.")
        assert scanner.dotOffsets is not None
        assert restuff(out, scanner.dotOffsets) == wire

    @pytest.mark.parametrize("dots", [MAX_DOT_OFFSETS, MAX_DOT_OFFSETS + 1])
    def test_dotOffsetsUpToTheirCap(self, dots: int) -> None:
        """
        Up to L{MAX_DOT_OFFSETS} dot-lines are placed (the body is rebuilt
        from them); one more, even when it arrives in a later chunk than
        the others, and none are kept, the count still exact.
        """
        message = b"x\r\n" + b".y\r\n" * dots
        wire = stuff(message)
        out, rest, scanner = _scanAll(wire, [len(wire) // 2, len(wire) - 10])
        assert out == message and rest == b""
        assert scanner.dotLines == dots
        if dots <= MAX_DOT_OFFSETS:
            assert scanner.dotOffsets is not None
            assert restuff(out, scanner.dotOffsets) == wire
        else:
            assert scanner.dotOffsets is None

    @given(_bodyLines, st.lists(st.integers(0, 10_000), max_size=8), st.binary(max_size=20))
    def test_anyServersStuffing(
        self, lines: list[tuple[bytes, bytes]], cuts: list[int], after: bytes
    ) -> None:
        """
        A body from a server that also stuffs lines not starting with a dot
        unstuffs as L{unstuff} does it, and L{restuff} with the lines the
        scanner noted gives the body exactly as it was sent.
        """
        body = _oddBody(lines)
        out, rest, scanner = _scanAll(body + b".\r\n" + after, cuts)
        assert scanner.done and rest == after
        assert out == unstuff(body)
        assert scanner.dotOffsets is not None
        assert restuff(out, scanner.dotOffsets) == body + b".\r\n"

    def test_noCopyOfAChunkWithoutLineDots(self) -> None:
        """
        A chunk with no line-starting dot is handed on as the same object.
        """
        pieces: list[bytes] = []
        scanner = UnstuffingScanner(pieces.append)
        chunk = b"Subject: a.b\r\n\r\nline.\r\n"
        assert scanner.feed(chunk) == b""
        assert pieces[0] is chunk

    @given(
        st.lists(messages, min_size=1, max_size=4),
        st.lists(st.integers(0, 10_000), max_size=8),
    )
    def test_parserHandsBodiesToTheirScanners(self, bodies: list[bytes], cuts: list[int]) -> None:
        """
        Pipelined responses whose bodies go to scanners: each scanner gets
        its own message, the parser reports only status lines and ends.
        """
        parser = ResponseParser()
        outs: list[list[bytes]] = []
        for _ in bodies:
            pieces: list[bytes] = []
            outs.append(pieces)
            parser.expect(True, UnstuffingScanner(pieces.append))
        wire = b"".join(b"+OK\r\n" + stuff(body) for body in bodies)
        events = []
        for chunk in chunked(wire, cuts):
            events += parser.feed(chunk)
        assert events == [StatusLine(b"+OK"), None] * len(bodies)
        for body, pieces in zip(bodies, outs, strict=True):
            assert b"".join(pieces) == unstuff(stuff(body)[:-3])
        assert parser.idle
