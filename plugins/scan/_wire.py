"""
clamd's INSTREAM protocol without I/O: the frames that send a stream, the
NUL-terminated replies split out of what clamd sends, and the scan result
they add up to.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# The INSTREAM protocol, sans I/O.
#
# The client sends "zINSTREAM\0", then the data as chunks, each preceded by
# its length as four octets in network byte order, then a chunk of length
# zero.  clamd answers with one NUL-terminated reply and closes the
# connection:
#
#   - "stream: OK": nothing found;
#   - "stream: <name> FOUND": a signature matched (one reply per signature
#     with AllMatchScanning);
#   - "INSTREAM size limit exceeded. ERROR": the stream went past clamd's
#     StreamMaxLength (clamd stops reading and closes at once);
#   - "<text> ERROR": anything else that went wrong.

#: The command, in the NUL-delimited form (C{z} prefix): replies end in NUL.
INSTREAM_COMMAND = b"zINSTREAM\0"

#: Asks clamd whether it is there; it answers C{PONG} and a NUL.
PING_COMMAND = b"zPING\0"

#: The zero-length chunk that ends the stream.
END_OF_STREAM = b"\0\0\0\0"

#: Octets per chunk; clamd accepts any chunk up to its StreamMaxLength.
DEFAULT_CHUNK_SIZE = 65536

#: A reply longer than this is not clamd talking.
MAX_REPLY = 16384

_SIZE_LIMIT = "INSTREAM size limit exceeded"

# With ExtendedDetectionInfo some clamd versions append "(<hash>:<size>)".
_DETECTION_INFO = re.compile(r"\([0-9a-fA-F]{32,64}:\d+\)\Z")


def printable(text: str, limit: int = 200) -> str:
    """
    C{text} on one line (control characters become spaces), at most
    C{limit} characters: fit for a header field and a log line, whatever a
    server or a file name holds.
    """
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class ClamdError(Exception):
    """
    clamd answered, but not with a scan result (C{... ERROR}, or a reply
    that is not clamd's).
    """


class StreamTooLarge(ClamdError):
    """
    clamd refused the stream: it is longer than clamd's C{StreamMaxLength}.
    """


class ClamdUnavailable(Exception):
    """
    clamd could not be reached, or the connection ended without an answer.
    """


@dataclass(frozen=True)
class ScanResult:
    """
    What clamd found in one stream.

    @ivar names: the names of the signatures that matched; empty when the
        stream is clean.
    """

    names: tuple[str, ...] = ()

    @property
    def infected(self) -> bool:
        return bool(self.names)


def instreamFrames(data: bytes, chunkSize: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """
    The frames that send C{data} after the INSTREAM command: each chunk with
    its length prefix, then the end-of-stream marker.  They are made one at
    a time, so a big stream is never copied whole.
    """
    if chunkSize < 1:
        raise ValueError("chunkSize must be positive")
    for start in range(0, len(data), chunkSize):
        chunk = data[start : start + chunkSize]
        yield struct.pack(">I", len(chunk)) + chunk
    yield END_OF_STREAM


class OverlongReply(ClamdError):
    """
    clamd sent a reply longer than L{MAX_REPLY} (not clamd, or broken).

    @ivar complete: the replies terminated before it, in the same octets:
        what they found still counts.
    """

    def __init__(self, complete: list[bytes]) -> None:
        super().__init__(f"a reply of more than {MAX_REPLY} octets is not clamd's")
        self.complete = complete


class ReplyParser:
    """
    Splits what clamd sends into its NUL-terminated replies (each octet is
    searched once: only new octets are looked at for the NUL).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take more octets; return the replies they complete, without the NUL.

        @raise OverlongReply: a reply is longer than L{MAX_REPLY}; it
            carries the replies completed before it.
        """
        last = data.rfind(b"\0")
        if last == -1:
            complete: list[bytes] = []
            tail = data
        else:
            self._buffer += data[:last]
            complete = bytes(self._buffer).split(b"\0")
            self._buffer.clear()
            tail = data[last + 1 :]
        if len(self._buffer) + len(tail) > MAX_REPLY:
            self._buffer.clear()
            raise OverlongReply(complete)
        self._buffer += tail
        return complete

    @property
    def pending(self) -> bytes:
        """
        Octets of a reply not yet terminated (clamd closed without its NUL,
        or sent a newline-terminated reply).
        """
        return bytes(self._buffer)


def interpretReplies(replies: list[bytes]) -> ScanResult:
    """
    The result of a scan from all the replies clamd sent on its connection.
    Any signature found wins over an error in another reply: what was
    found is reason enough to act.

    @raise StreamTooLarge: clamd stopped reading at its StreamMaxLength.
    @raise ClamdError: clamd answered an error or something unexpected.
    @raise ClamdUnavailable: there was no reply at all.
    """
    names: list[str] = []
    problem: ClamdError | None = None
    sawOk = False
    for raw in replies:
        reply = printable(raw.decode("utf-8", "replace"))
        if reply.startswith("stream: "):
            reply = reply[len("stream: ") :]
        else:
            # clamd versions differ: some name the stream "stream", some
            # a path; only the verdict word at the end matters.
            reply = reply.split(": ", 1)[-1] if ": " in reply else reply
        if reply == "OK":
            sawOk = True
        elif reply.endswith(" FOUND"):
            name = _DETECTION_INFO.sub("", reply[: -len(" FOUND")].strip()).strip()
            names.append(name or "unnamed signature")
        elif reply.startswith(_SIZE_LIMIT):
            problem = StreamTooLarge(f"clamd: {reply}")
        elif problem is None:
            problem = ClamdError(f"clamd: {reply[:200]}")
    if names:
        return ScanResult(tuple(dict.fromkeys(names)))
    if problem is not None:
        raise problem
    if sawOk:
        return ScanResult()
    raise ClamdUnavailable("clamd closed the connection without an answer")


def interpretPong(replies: list[bytes]) -> None:
    """
    Check clamd's answer to L{PING_COMMAND}.

    @raise ClamdError: the first reply is not C{PONG}.
    @raise ClamdUnavailable: there was no reply.
    """
    if not replies:
        raise ClamdUnavailable("clamd closed the connection without an answer")
    reply = printable(replies[0].decode("utf-8", "replace"))
    if reply != "PONG":
        raise ClamdError(f"clamd answered PING with {reply[:80]!r}")
