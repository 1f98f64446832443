"""
Tests for the From, Subject and Date a quarantine record keeps of its
message: decoded for display, one line each, bounded, from the top-level
header block only.
"""

from __future__ import annotations

from popproxy._messagesummary import VALUE_LIMIT, displayText, summarize


def test_decodesEncodedWordsAndUnfolds() -> None:
    """
    RFC 2047 words are decoded and folded lines joined: the recipient
    reads the subject their mail program shows.
    """
    summary = summarize(
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@example.com>\r\n"
        b"Subject: =?iso-8859-1?b?R3L832U=?=\r\n  from home\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0100\r\n\r\nbody\r\n"
    )
    assert summary.sender == "J\u00fcrgen M\u00fcller <j@example.com>"
    assert summary.subject == "Gr\u00fc\u00dfe from home"
    assert summary.date == "Tue, 01 Dec 2026 10:00:00 +0100"


def test_missingFieldsAreNone() -> None:
    """
    A field the message lacks is None; fields in the body are not read.
    """
    summary = summarize(b"X-Other: 1\n\nFrom: body@example.com\nSubject: not a header\n")
    assert (summary.sender, summary.subject, summary.date) == (None, None, None)


def test_firstFieldWins() -> None:
    """
    Of repeated fields the first counts, as mail programs show it.
    """
    assert summarize(b"Subject: one\nSubject: two\n\n").subject == "one"


def test_controlCharactersAndLengthAreTamed() -> None:
    """
    An encoded CR/LF, a NUL or a right-to-left override cannot break the
    line a page or a listing shows it on, and a huge subject is cut.
    """
    summary = summarize(b"Subject: =?utf-8?q?a=0D=0Ab=00c=E2=80=AEd?=\n\n")
    assert summary.subject == "a b c d"
    assert len(displayText("x" * 5000)) == VALUE_LIMIT


def test_manyFieldsBeforeFromDoNotHideIt() -> None:
    """
    Thousands of empty fields before From (a sender hiding who they are
    from the quarantine's listing) do not push it out of the summary.
    """
    message = b"X:\r\n" * 5000 + b"From: mallory@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    summary = summarize(message)
    assert summary.sender == "mallory@example.com"
    assert summary.subject == "s"
