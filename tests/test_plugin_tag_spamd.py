"""
The tag plugin's SPAMC/1.5 protocol without sockets (plugins/tag/_spamd.py): the answer
parser fed in any chunks, spamd's errors, and a connection closed early.
"""

from __future__ import annotations

import re

import pytest

from plugins.tag import (
    SpamdAnswer,
    SpamdAnswerParser,
    SpamdError,
)


def test_spamdAnswerParsedWhateverTheChunks() -> None:
    """
    A SYMBOLS answer is complete once its Content-length is there, however it
    arrives (here one octet at a time).
    """
    answer = (
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 22\r\nSpam: True ; 1003.3 / 5.0\r\n\r\n"
        b"GTUBE,MISSING_DATE,X-1"
    )
    parser = SpamdAnswerParser()
    verdicts = [parser.feed(answer[i : i + 1]) for i in range(len(answer))]
    assert verdicts[:-1] == [None] * (len(answer) - 1)
    assert verdicts[-1] == SpamdAnswer(True, 1003.3, 5.0, ("GTUBE", "MISSING_DATE", "X-1"))


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", "spamd answered 76"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a SPAMD answer"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "without a Spam header"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: maybe\r\n\r\n", "malformed Spam"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\nSpam: No ; 1 / 5\r\n\r\nAB", "more octets"),
    ],
)
def test_spamdErrorsAreErrors(answer: bytes, complaint: str) -> None:
    """
    An error status or an answer that is not one is a SpamdError, never a verdict.
    """
    parser = SpamdAnswerParser()
    with pytest.raises(SpamdError, match=re.escape(complaint)):
        parser.feed(answer)
        parser.finish()


def test_spamdClosingEarlyIsAnError() -> None:
    """
    A connection closed before a complete answer is an error, not a verdict.
    """
    parser = SpamdAnswerParser()
    with pytest.raises(SpamdError, match="without answering"):
        parser.finish()
    parser.feed(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 30\r\nSpam: False ; 0.1 / 5.0\r\n\r\nAB")
    with pytest.raises(SpamdError, match="in the middle"):
        parser.finish()
