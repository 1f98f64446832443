"""
What the strip filter writes into a message (plugins/strip/_notices.py):
the notice text from its template, the notice parts put in place in one
edit (the rest of the message untouched), uuencoded blocks cut out of an
encoded text, and the message standing in for a signed one.
"""

from __future__ import annotations

import base64

from plugins.strip._findings import Finding, findBlocked
from plugins.strip._notices import (
    SIGNATURE_BROKEN,
    noticeText,
    shortened,
    signedNotice,
    withNotices,
)
from plugins.strip._settings import StripPolicy
from popproxy.message import Message
from tests import strip_corpus
from tests.strip_corpus import multipart, part, topLevel

TEMPLATE = "{filename} removed ({reason}), kept as {id}"
EXE = strip_corpus.attachmentPart(strip_corpus.peExecutable(), "setup.exe")


def onlyFinding(raw: bytes) -> tuple[Message, Finding]:
    message = Message.fromBytes(raw)
    [finding] = findBlocked(message, StripPolicy())
    return message, finding


def test_noticeTextFromTheTemplate() -> None:
    """
    The template gets the name, reason and id and ends with a line break;
    a withheld notice names neither; a signed part's notice says the
    signature is broken.
    """
    message, finding = onlyFinding(topLevel(multipart("mixed", "b", [strip_corpus.TEXT, EXE])))
    assert noticeText(TEMPLATE, finding, "q1") == (
        "setup.exe removed (blocked extension .exe), kept as q1\n"
    )
    assert noticeText(TEMPLATE, finding, "q1", withheld=True) == (
        "(name withheld) removed (blocked file), kept as q1\n"
    )
    signed = Finding(finding.part, finding.filename, finding.reason, signed=True)
    assert noticeText(TEMPLATE, signed, "q1").endswith("q1\n" + SIGNATURE_BROKEN)


def test_noticesReplaceOnlyTheirParts() -> None:
    """
    Each removed part becomes a text/plain notice; the octets before and
    after it are those of the original message.
    """
    raw = topLevel(multipart("mixed", "b", [strip_corpus.TEXT, EXE, strip_corpus.PDF]))
    message, finding = onlyFinding(raw)
    edited = withNotices(message, message.toBytes(), [finding], ["q1"], TEMPLATE)
    start, end = finding.part.range
    out = edited.toBytes()
    assert out.startswith(raw[:start]) and out.endswith(raw[end:])
    notice = edited.partAt((1,))
    assert notice.contentType == "text/plain"
    assert notice.payload() == b"setup.exe removed (blocked extension .exe), kept as q1\r\n"


def test_uuencodedBlockCutFromABase64Text() -> None:
    """
    In a base64-encoded text, the uuencoded block is replaced by the
    notice in the decoded text, which is encoded again.
    """
    text = b"Before.\r\n" + strip_corpus.uuencoded("a.exe", b"MZ" + bytes(60)) + b"After.\r\n"
    body = base64.encodebytes(text).replace(b"\n", b"\r\n")
    raw = topLevel(
        part(
            ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: base64"],
            body,
        )
    )
    message, finding = onlyFinding(raw)
    edited = withNotices(message, message.toBytes(), [finding], ["q9"], "cut {filename}: {id}")
    assert edited.root.payload() == b"Before.\r\ncut a.exe: q9\r\nAfter.\r\n"


def test_signedNoticeKeepsTheIdentifyingHeaders() -> None:
    """
    The stand-in for a signed message keeps its From, Subject and
    Message-ID as they were and lists every blocked file.
    """
    message, finding = onlyFinding(topLevel(multipart("mixed", "b", [strip_corpus.TEXT, EXE])))
    notice = signedNotice(message, [finding])
    assert notice.headers.rawValues("Subject") == message.headers.rawValues("Subject")
    assert notice.headers.rawValues("Message-ID") == message.headers.rawValues("Message-ID")
    assert b"  - setup.exe: blocked extension .exe\r\n" in notice.root.payload()


def test_shortened() -> None:
    """
    A note over the limit is cut with an ellipsis to exactly the limit.
    """
    assert shortened("abc", 5) == "abc"
    assert shortened("x" * 10, 5) == "xx..."
