"""
SpamAssassin's SPAMC/1.5 protocol without I/O: the C{SYMBOLS} request,
and spamd's answer parsed as it arrives; the C{PING} request and the check
of its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class SpamdError(Exception):
    """
    spamd answered with an error, or with something that is not an answer.
    """


@dataclass(frozen=True)
class SpamdAnswer:
    """
    What spamd said about one message.

    @ivar isSpam: spamd's own decision (C{score >= required}).
    @ivar score: the message's score.
    @ivar required: spamd's threshold (its C{required_score}).
    @ivar tests: the names of the rules that hit.
    """

    isSpam: bool
    score: float
    required: float
    tests: tuple[str, ...] = ()


def spamdRequest(message: bytes, user: str) -> bytes:
    """
    A C{SYMBOLS} request (SPAMC/1.5) for C{message}: spamd answers with the
    decision, the score, the threshold and the names of the rules that hit.
    """
    return (
        b"SYMBOLS SPAMC/1.5\r\n"
        b"Content-length: %d\r\n"
        b"User: %s\r\n"
        b"\r\n" % (len(message), user.encode("ascii"))
    ) + message


#: Asks spamd whether it is there; it answers C{SPAMD/1.5 0 PONG}.
PING_REQUEST = b"PING SPAMC/1.5\r\n\r\n"

#: A PONG line is a few dozen octets; more is not spamd.
MAX_PONG = 1024


def checkPong(answer: bytes) -> bool:
    """
    Whether C{answer}, what spamd sent so far to a L{PING_REQUEST}, is a
    complete PONG (C{False}: wait for more).

    @raise SpamdError: it cannot become one.
    """
    end = answer.find(b"\n")
    if end == -1:
        if len(answer) > MAX_PONG:
            raise SpamdError(f"answer to PING longer than {MAX_PONG} octets")
        return False
    line = answer[:end].rstrip(b"\r")
    match = _STATUS_LINE.fullmatch(line)
    if match is None or match.group(2) != b"0" or match.group(3).strip() != b"PONG":
        raise SpamdError(f"spamd answered PING with {_shown(line, 80)}")
    return True


_STATUS_LINE = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) *(.*)")
_SPAM_LINE = re.compile(
    rb"(true|false|yes|no) *; *(-?\d+(?:\.\d+)?) */ *(-?\d+(?:\.\d+)?)", re.IGNORECASE
)
_SYMBOL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class SpamdAnswerParser:
    """
    Reads spamd's answer to a C{SYMBOLS} request, fed as it arrives (no
    I/O here):

        SPAMD/1.1 0 EX_OK
        Content-length: 12
        Spam: True ; 1000.0 / 5.0

        GTUBE,NO_RELAYS

    L{feed} returns the L{SpamdAnswer} as soon as it is complete and
    raises L{SpamdError} as soon as it cannot be one; L{finish} is called
    when spamd closed the connection.
    """

    #: An answer is a few hundred octets; more is not spamd.
    MAX_ANSWER = 65536

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> SpamdAnswer | None:
        """
        Take more of the answer.

        @return: the answer once it is complete, else C{None}.
        @raise SpamdError: an error status or a malformed answer.
        """
        self._buffer += data
        if len(self._buffer) > self.MAX_ANSWER:
            raise SpamdError(f"answer longer than {self.MAX_ANSWER} octets")
        return self._parse(final=False)

    def finish(self) -> SpamdAnswer:
        """
        The connection was closed: the answer must be complete now.

        @raise SpamdError: it is not.
        """
        if not self._buffer:
            raise SpamdError("spamd closed the connection without answering")
        answer = self._parse(final=True)
        if answer is None:
            raise SpamdError("spamd closed the connection in the middle of its answer")
        return answer

    def _parse(self, final: bool) -> SpamdAnswer | None:
        statusEnd = self._buffer.find(b"\n")
        if statusEnd == -1:
            if final:
                self._status(self._buffer)
            return None
        self._status(self._buffer[:statusEnd].rstrip(b"\r"))
        separator = _BLANK_LINE.search(self._buffer, statusEnd)
        if separator is None:
            return None
        headers: dict[bytes, bytes] = {}
        for line in self._buffer[statusEnd + 1 : separator.start()].split(b"\n"):
            if not line.strip():
                continue
            name, colon, value = line.rstrip(b"\r").partition(b":")
            if not colon:
                raise SpamdError(f"malformed answer line {_shown(line)}")
            headers[name.strip().lower()] = value.strip()
        body = self._buffer[separator.end() :]
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise SpamdError(f"malformed Content-length {_shown(length)}")
            if len(body) < int(length):
                return None
            if len(body) > int(length):
                raise SpamdError("more octets than its Content-length")
        elif not final:
            return None
        spam = headers.get(b"spam")
        if spam is None:
            raise SpamdError("answer without a Spam header")
        match = _SPAM_LINE.fullmatch(spam)
        if match is None:
            raise SpamdError(f"malformed Spam header {_shown(spam)}")
        tests = tuple(
            test
            for test in (item.strip() for item in body.decode("ascii", "replace").split(","))
            if _SYMBOL.fullmatch(test)
        )
        return SpamdAnswer(
            isSpam=match.group(1).lower() in (b"true", b"yes"),
            score=float(match.group(2)),
            required=float(match.group(3)),
            tests=tests,
        )

    def _status(self, line: bytes) -> None:
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise SpamdError(f"not a SPAMD answer: {_shown(line)}")
        if match.group(2) != b"0":
            raise SpamdError(
                f"spamd answered {match.group(2).decode()} {_shown(match.group(3), 80)}"
            )


def _shown(octets: bytes, limit: int = 40) -> str:
    return repr(octets[:limit].decode("ascii", "replace"))
