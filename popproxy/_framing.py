"""
Sans-IO POP3 framing: client command lines, upstream responses, dot-stuffing.

Nothing here touches a transport or a reactor.  The objects are fed bytes and
return what they found, so the protocol classes stay thin and every framing
rule can be tested (and fuzzed) without sockets.

All byte work is done on whole chunks with C-level ``bytes`` methods
(``find``, ``replace``); there is no Python loop per line of a message body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CRLF = b"\r\n"
TERMINATOR = b"\r\n.\r\n"

# bytes.find is slow for this needle in mail text (CR, LF and "." share
# its skip filter with frequent letters such as "n"): the regex engine's
# literal search is 1.3-1.7x faster on the benchmark's mail.
_searchTerminator = re.compile(re.escape(TERMINATOR)).search

# The same holds for finding line-starting dots: splitting there with the
# regex and joining is 2x faster than bytes.replace (which searches twice).
_splitAtLineDots = re.compile(rb"\r\n\.").split


def _replaceLineDots(data: bytes, replacement: bytes) -> bytes:
    """
    C{data.replace(b"\\r\\n.", replacement)}, faster.
    """
    if b"." not in data:  # memchr: base64 and most binary-safe text
        return data
    # join() of a single piece returns that piece itself: no copy when
    # there is nothing to replace.
    return replacement.join(_splitAtLineDots(data))


#: RFC 2449 section 4: a command line is at most 255 octets including CRLF.
MAX_COMMAND_LINE = 255


class FramingError(Exception):
    """
    The peer broke the framing so badly that the connection cannot go on
    (for example megabytes without a line end).
    """


@dataclass(frozen=True, slots=True)
class CommandLine:
    """
    One complete client command line, without its CRLF.

    @ivar line: the octets of the line; may contain bare CR or LF octets,
        which the command parser rejects.
    @ivar tooLong: the line exceeded the limit; C{line} is then empty and
        the session answers C{-ERR} without looking at it.
    """

    line: bytes
    tooLong: bool = False


class CommandFramer:
    """
    Split the client's byte stream into command lines at CRLF and only CRLF.

    A bare LF or bare CR is part of the line (and makes the command
    malformed); treating it as a separator would let a client smuggle
    commands past whatever inspected the stream before us.

    A line longer than C{maxLine} octets is reported as too long once its
    CRLF arrives, and its octets are not kept.  A client that keeps sending
    more than C{maxDiscard} octets without any CRLF raises L{FramingError}.
    """

    def __init__(self, maxLine: int = MAX_COMMAND_LINE, maxDiscard: int = 64 * 1024) -> None:
        self.maxLine = maxLine
        self._maxDiscard = maxDiscard
        self._buffer = b""
        self._discarding = False
        self._discarded = 0

    def reset(self) -> None:
        """
        Forget everything buffered (used after STLS: RFC 2595 section 4).
        """
        self._buffer = b""
        self._discarding = False
        self._discarded = 0

    def feed(self, data: bytes) -> list[CommandLine]:
        """
        Add received octets; return the command lines they completed.

        @raise FramingError: the client exceeded the discard limit.
        """
        buffer = self._buffer + data if self._buffer else data
        lines: list[CommandLine] = []
        start = 0
        while True:
            end = buffer.find(CRLF, start)
            if end == -1:
                break
            if self._discarding:
                lines.append(CommandLine(b"", tooLong=True))
                self._discarding = False
                self._discarded = 0
            elif end - start + 2 > self.maxLine:
                lines.append(CommandLine(b"", tooLong=True))
            else:
                lines.append(CommandLine(buffer[start:end]))
            start = end + 2
        rest = buffer[start:]
        # Keep a trailing CR: it may be the first half of a CRLF split
        # across two reads.
        if self._discarding or len(rest) + 1 > self.maxLine:
            self._discarding = True
            keep = rest[-1:] if rest.endswith(b"\r") else b""
            self._discarded += len(rest) - len(keep)
            rest = keep
            if self._discarded > self._maxDiscard:
                raise FramingError(f"more than {self._maxDiscard} octets without a line end")
        self._buffer = rest
        return lines

    @property
    def buffered(self) -> int:
        """
        Octets received but not yet part of a complete line.
        """
        return len(self._buffer)


class MultiLineScanner:
    """
    Find the end of one dot-stuffed multi-line response body.

    Feed it the octets that follow the status line.  It returns how much of
    each chunk belongs to the body (terminating C{.CRLF} line included, still
    dot-stuffed, so that an unfiltered response can be relayed verbatim) and
    what is left over for the next response.
    """

    def __init__(self) -> None:
        # The status line's CRLF counts as the line end before a
        # terminator that arrives first ("+OK\r\n.\r\n" is an empty body).
        self._tail = CRLF
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """
        @return: C{(bodyPart, rest)}: C{bodyPart} belongs to this body
            (ending with the terminator if it was found, see L{done});
            C{rest} follows the terminator and belongs to the next response.
        """
        if self.done:
            return b"", data
        tailLength = len(self._tail)
        window = self._tail + data[:4]
        found = window.find(TERMINATOR)
        if found != -1:
            end = found + len(TERMINATOR) - tailLength
        else:
            # Base64 and other binary-safe encodings, most of a mailbox's
            # octets, have no dot at all: memchr finds that at memory speed.
            dot = data.find(b".")
            match = None if dot == -1 else _searchTerminator(data, max(dot - 2, 0))
            end = -1 if match is None else match.end()
        if end == -1:
            self._tail = (self._tail + data)[-4:] if len(data) < 4 else data[-4:]
            return data, b""
        self.done = True
        return data[:end], data[end:]


def unstuff(stuffed: bytes) -> bytes:
    """
    Undo dot-stuffing of a complete multi-line body.

    @param stuffed: the body as sent on the wire after the status line, up to
        but excluding the terminating C{.CRLF} line.
    @return: the message octets; a line that began with a dot loses it.
    """
    if stuffed.startswith(b"."):
        stuffed = stuffed[1:]
    # Most mail has no line starting with a dot: then this is one scan and
    # returns C{stuffed} itself, no copy.
    return _replaceLineDots(stuffed, CRLF)


def stuff(message: bytes) -> bytes:
    """
    Dot-stuff a message and terminate it, ready to follow a C{+OK} line.

    A message that does not end with CRLF gets one, because the terminator
    must start a line of its own.
    """
    if message and not message.endswith(CRLF):
        message += CRLF
    if message.startswith(b"."):
        message = b"." + message
    return _replaceLineDots(message, b"\r\n..") + b".\r\n"


def stuffedBody(message: bytes) -> bytes:
    """
    Like L{stuff} but without the terminator line.
    """
    return stuff(message)[:-3]


@dataclass(frozen=True, slots=True)
class StatusLine:
    """
    The first line of a server response, exactly as received, without CRLF.
    """

    line: bytes

    @property
    def ok(self) -> bool:
        return self.line.startswith(b"+OK")

    @property
    def continuation(self) -> bool:
        """
        A SASL continuation (RFC 5034: C{+ } and a base64 challenge).
        """
        return self.line.startswith(b"+ ") or self.line == b"+"

    @property
    def text(self) -> bytes:
        """
        What follows C{+OK}/C{-ERR} and one space.
        """
        head, _, rest = self.line.partition(b" ")
        return rest


class ResponseParser:
    """
    Split an upstream server's byte stream into responses.

    The caller announces, in order, what each expected response looks like
    (L{expect}); the parser reports each status line and streams the body of
    a positive multi-line response in chunks without copying it line by line.
    Several expected responses may be outstanding at once (pipelining).
    """

    def __init__(self, maxStatusLine: int = 64 * 1024) -> None:
        self._maxStatusLine = maxStatusLine
        self._buffer = b""
        self._expected: list[bool] = []
        self._scanner: MultiLineScanner | None = None

    def expect(self, multiLine: bool) -> None:
        """
        Announce the next response: C{multiLine} means a body follows a
        positive status line.
        """
        self._expected.append(multiLine)

    @property
    def idle(self) -> bool:
        """
        No response is outstanding or partially received.
        """
        return not self._expected and self._scanner is None

    def feed(self, data: bytes) -> list[StatusLine | bytes | None]:
        """
        @return: events in order: a L{StatusLine} starts a response; C{bytes}
            are a piece of the current multi-line body (still dot-stuffed,
            the terminating line included in the last piece); C{None} ends
            every response, single-line or multi-line.
        @raise FramingError: the server sent something that is not POP3.
        """
        events: list[StatusLine | bytes | None] = []
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        while data:
            if self._scanner is not None:
                part, data = self._scanner.feed(data)
                if part:
                    events.append(part)
                if not self._scanner.done:
                    break
                self._scanner = None
                events.append(None)
                continue
            if not self._expected:
                raise FramingError("unsolicited data from the server")
            end = data.find(CRLF)
            if end == -1:
                if len(data) > self._maxStatusLine:
                    raise FramingError("status line too long")
                self._buffer = data
                break
            status = StatusLine(data[:end])
            data = data[end + 2 :]
            if not (status.line.startswith((b"+OK", b"-ERR")) or status.continuation):
                raise FramingError("not a POP3 response")
            multiLine = self._expected.pop(0)
            events.append(status)
            if multiLine and status.ok:
                self._scanner = MultiLineScanner()
            else:
                events.append(None)
        return events


class _ChunkedReplace:
    """
    Apply C{bytes.replace(b"\\r\\n.", replacement)} to a stream of
    chunks, as if the stream began with CRLF (a body starts at a line
    start), holding back only what could begin a match across chunks.
    """

    def __init__(self, replacement: bytes) -> None:
        self._replacement = replacement
        self._pending = CRLF
        self._started = False
        self.tail = b""

    def _emit(self, processed: bytes) -> bytes:
        out = _replaceLineDots(processed, self._replacement)
        if not self._started:
            self._started = True
            out = out[2:]
        if out:
            self.tail = (self.tail + out)[-2:]
        return out

    def feed(self, data: bytes) -> bytes:
        buffer = self._pending + data
        cut = len(buffer)
        if buffer.endswith(CRLF):
            cut -= 2
        elif buffer.endswith(b"\r"):
            cut -= 1
        if not self._started and cut < 3:
            # Not yet known whether the body starts with a dot.
            self._pending = buffer
            return b""
        self._pending = buffer[cut:]
        return self._emit(buffer[:cut])

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not self._started and rest == CRLF:
            self._started = True
            return b""
        return self._emit(rest)


class DotUnstuffer:
    """
    Undo dot-stuffing of a body arriving in chunks, in constant memory (the
    streaming counterpart of L{unstuff}); feed the stuffed body without its
    terminating line.
    """

    def __init__(self) -> None:
        self._replace = _ChunkedReplace(CRLF)

    def feed(self, data: bytes) -> bytes:
        return self._replace.feed(data)

    def finish(self) -> bytes:
        return self._replace.flush()


class DotStuffer:
    """
    Dot-stuff a message produced in chunks, in constant memory (the
    streaming counterpart of L{stuff}).
    """

    def __init__(self) -> None:
        self._replace = _ChunkedReplace(b"\r\n..")

    def feed(self, data: bytes) -> bytes:
        return self._replace.feed(data)

    def finish(self) -> bytes:
        """
        The rest, a CRLF if the message lacked a final one, and the
        terminating line.
        """
        rest = self._replace.flush()
        tail = self._replace.tail
        if tail and not tail.endswith(CRLF):
            rest += CRLF
        return rest + b".\r\n"
