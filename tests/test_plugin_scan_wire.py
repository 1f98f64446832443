"""
The scan plugin's INSTREAM protocol without I/O (plugins/scan/_wire.py): frames,
replies split however they arrive, and the result they add up to.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._plugins import _loadFile

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "scan"

# The plugin module itself (the very module object the loader uses), for its protocol parts.
scan: Any = _loadFile(PLUGIN)


# The sans-IO protocol.


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_framesCarryTheDataInBoundedChunks(data: bytes, chunkSize: int) -> None:
    """
    The INSTREAM frames are length-prefixed chunks of at most chunkSize octets that put the
    data back together exactly, followed by one zero-length terminator.
    """
    frames = list(scan.instreamFrames(data, chunkSize))
    assert frames[-1] == b"\0\0\0\0"
    joined = b""
    for frame in frames[:-1]:
        (length,) = struct.unpack(">I", frame[:4])
        assert 0 < length <= chunkSize
        assert len(frame) == 4 + length
        joined += frame[4:]
    assert joined == data


@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda r: b"\0" not in r)), st.data())
def test_replyParserSplitsRepliesHoweverTheyArrive(
    replies: list[bytes], data: st.DataObject
) -> None:
    """
    NUL-terminated replies come out whole and in order whatever the read boundaries.
    """
    wire = b"".join(reply + b"\0" for reply in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    parser = scan.ReplyParser()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        received.extend(parser.feed(wire[start:end]))
    assert received == replies
    assert parser.pending == b""


def test_overlongReplyKeepsTheRepliesBeforeIt() -> None:
    """
    More than MAX_REPLY octets without a NUL fail the parser, with the
    replies terminated before them in the same read; shorter tails wait,
    across reads, for their NUL.
    """
    parser = scan.ReplyParser()
    assert parser.feed(b"1: OK\0" + b"y" * 100) == [b"1: OK"]
    assert parser.pending == b"y" * 100
    assert parser.feed(b"y\0") == [b"y" * 101]
    with pytest.raises(scan.ClamdError) as raised:
        parser.feed(b"2: A FOUND\0" + b"x" * (scan._wire.MAX_REPLY + 1))
    assert raised.value.complete == [b"2: A FOUND"]
    parser = scan.ReplyParser()
    parser.feed(b"x" * scan._wire.MAX_REPLY)
    with pytest.raises(scan.ClamdError):
        parser.feed(b"x")


@pytest.mark.parametrize(
    ("replies", "names"),
    [
        ([b"stream: OK"], ()),
        ([b"stream: Win.Test.EICAR_HDB-1 FOUND"], ("Win.Test.EICAR_HDB-1",)),
        (
            [b"stream: Eicar-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND"],
            ("Eicar-Signature",),
        ),
        ([b"stream: A FOUND", b"stream: B FOUND"], ("A", "B")),
        ([b"stream: A FOUND", b"Some failure. ERROR"], ("A",)),
    ],
)
def test_repliesGiveTheSignatureNames(replies: list[bytes], names: tuple[str, ...]) -> None:
    """
    OK means clean; every FOUND names a signature (extended detection info dropped); a
    signature found wins over an error on the same connection.
    """
    assert scan.interpretReplies(replies).names == names


@pytest.mark.parametrize(
    ("replies", "error"),
    [
        ([b"INSTREAM size limit exceeded. ERROR"], "StreamTooLarge"),
        ([b"stream: lstat() failed. ERROR"], "ClamdError"),
        ([b"UNKNOWN COMMAND"], "ClamdError"),
        ([], "ClamdUnavailable"),
    ],
)
def test_repliesThatAreNotAResultRaise(replies: list[bytes], error: str) -> None:
    """
    clamd's size limit, its errors, an unknown reply and no reply at all are never a result.
    """
    with pytest.raises(getattr(scan, error)):
        scan.interpretReplies(replies)
