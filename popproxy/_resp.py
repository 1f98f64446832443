"""
RESP2, the Redis wire protocol, without I/O: L{encodeCommand} turns a
command into bytes, L{RespParser} turns the bytes a server sends into
replies.  The parser is fed whatever arrived (any split) and keeps a
bounded buffer: a reply larger than its limits is a protocol error, not a
memory leak, since the counter store only ever reads small replies.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RespError",
    "RespParser",
    "RespProtocolError",
    "RespValue",
    "encodeCommand",
]


@dataclass(frozen=True)
class RespError:
    """
    An error reply (C{-ERR ...}, C{-NOAUTH ...}): a value the server sent,
    not a failure of the connection.
    """

    message: str


#: What a reply can be: a simple string (C{str}), an error, an integer, a
#: bulk string (C{bytes}), a null (C{None}) or an array of replies.
RespValue = str | RespError | int | bytes | None | list["RespValue"]


class RespProtocolError(Exception):
    """
    The bytes received are not RESP2, or exceed the parser's limits; the
    connection cannot be trusted any more.
    """


class _Incomplete(Exception):
    """
    The buffer ends inside a reply: wait for more bytes.
    """


def _encodeArgument(argument: bytes | str | int | float) -> bytes:
    if isinstance(argument, bytes):
        return argument
    if isinstance(argument, str):
        # Keys carry login names decoded with surrogateescape from whatever
        # bytes a client sent: they go out as those bytes, never failing.
        return argument.encode("utf-8", "surrogateescape")
    if isinstance(argument, bool):
        raise TypeError("a Redis argument cannot be a bool")
    if isinstance(argument, int | float):
        return repr(argument).encode("ascii")
    raise TypeError(f"a Redis argument cannot be a {type(argument).__name__}")


def encodeCommand(*arguments: bytes | str | int | float) -> bytes:
    """
    The bytes of one command: an array of bulk strings.  Text is sent as
    UTF-8, numbers as their C{repr} (which Redis and Lua read back exactly).
    """
    if not arguments:
        raise ValueError("a Redis command needs at least its name")
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        encoded = _encodeArgument(argument)
        parts.append(b"$%d\r\n%s\r\n" % (len(encoded), encoded))
    return b"".join(parts)


class RespParser:
    """
    Replies out of a byte stream, in order.

    @ivar maxLine: the longest header or simple line, CRLF excluded.
    @ivar maxBulk: the longest bulk string.
    @ivar maxElements: the most elements of one array.
    @ivar maxDepth: how deep arrays may nest.
    """

    def __init__(
        self,
        *,
        maxLine: int = 64 * 1024,
        maxBulk: int = 1024 * 1024,
        maxElements: int = 4096,
        maxDepth: int = 8,
    ) -> None:
        self.maxLine = maxLine
        self.maxBulk = maxBulk
        self.maxElements = maxElements
        self.maxDepth = maxDepth
        self._buffer = b""

    def feed(self, data: bytes) -> list[RespValue]:
        """
        Take the bytes that arrived and return the replies they complete.

        @raise RespProtocolError: the stream is not RESP2 or breaks a limit.
        """
        buffer = self._buffer + data
        replies: list[RespValue] = []
        offset = 0
        while offset < len(buffer):
            try:
                reply, offset = self._parse(buffer, offset, 0)
            except _Incomplete:
                break
            replies.append(reply)
        self._buffer = buffer[offset:]
        if len(self._buffer) > self.maxBulk + self.maxLine:
            raise RespProtocolError("reply larger than the parser's limits")
        return replies

    def _line(self, buffer: bytes, offset: int) -> tuple[bytes, int]:
        end = buffer.find(b"\r\n", offset, offset + self.maxLine + 2)
        if end < 0:
            if len(buffer) - offset > self.maxLine + 1:
                raise RespProtocolError(f"a line longer than {self.maxLine} octets")
            raise _Incomplete()
        line = buffer[offset:end]
        if b"\r" in line or b"\n" in line:
            raise RespProtocolError("bare CR or LF in a line")
        return line, end + 2

    def _integer(self, text: bytes) -> int:
        digits = text[1:] if text[:1] == b"-" else text
        if not digits or not digits.isdigit() or len(digits) > 20:
            raise RespProtocolError(f"not an integer: {text[:32]!r}")
        return int(text)

    def _parse(self, buffer: bytes, offset: int, depth: int) -> tuple[RespValue, int]:
        if offset >= len(buffer):
            raise _Incomplete()
        kind = buffer[offset : offset + 1]
        line, after = self._line(buffer, offset + 1)
        if kind == b"+":
            return line.decode("utf-8", "replace"), after
        if kind == b"-":
            return RespError(line.decode("utf-8", "replace")), after
        if kind == b":":
            return self._integer(line), after
        if kind == b"$":
            return self._bulk(buffer, self._integer(line), after)
        if kind == b"*":
            return self._array(buffer, self._integer(line), after, depth)
        raise RespProtocolError(f"unknown reply type {kind!r}")

    def _bulk(self, buffer: bytes, length: int, offset: int) -> tuple[bytes | None, int]:
        if length == -1:
            return None, offset
        if length < 0 or length > self.maxBulk:
            raise RespProtocolError(f"bulk string length {length} out of bounds")
        end = offset + length
        if len(buffer) < end + 2:
            raise _Incomplete()
        if buffer[end : end + 2] != b"\r\n":
            raise RespProtocolError("bulk string not followed by CRLF")
        return buffer[offset:end], end + 2

    def _array(
        self, buffer: bytes, count: int, offset: int, depth: int
    ) -> tuple[list[RespValue] | None, int]:
        if count == -1:
            return None, offset
        if count < 0 or count > self.maxElements:
            raise RespProtocolError(f"array length {count} out of bounds")
        if depth >= self.maxDepth:
            raise RespProtocolError(f"arrays nested deeper than {self.maxDepth}")
        elements: list[RespValue] = []
        for _ in range(count):
            element, offset = self._parse(buffer, offset, depth + 1)
            elements.append(element)
        return elements, offset
