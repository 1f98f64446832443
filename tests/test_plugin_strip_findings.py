"""
What the strip policy removes from a message (plugins/strip/_findings.py):
one finding per removed part, in message order, the part an attached
message's file takes with it, signed parts marked, uuencoded files cut
from a text, and encoded attached messages checked within the limits.
"""

from __future__ import annotations

import base64

import pytest

from plugins.strip._findings import findBlocked
from plugins.strip._settings import StripPolicy
from popproxy.message import Message
from tests import strip_corpus
from tests.strip_corpus import multipart, part, topLevel

POLICY = StripPolicy()
EXE = strip_corpus.attachmentPart(strip_corpus.peExecutable(), "setup.exe")
PDF = strip_corpus.attachmentPart(strip_corpus.pdfDocument(), "report.pdf")


def test_findingsInMessageOrder() -> None:
    """
    Each blocked part is one finding, in the order of the message, with
    the name to show and the reason; the document passes.
    """
    other = strip_corpus.attachmentPart(b"x", "run.bat", contentType="text/plain")
    message = Message.fromBytes(
        topLevel(multipart("mixed", "b", [strip_corpus.TEXT, EXE, PDF, other]))
    )
    findings = findBlocked(message, POLICY)
    assert [(f.part.path, f.filename, f.reason) for f in findings] == [
        ((1,), "setup.exe", "blocked extension .exe"),
        ((3,), "run.bat", "blocked extension .bat"),
    ]
    assert not any(finding.signed or finding.blocks for finding in findings)


def test_fileOfAnAttachedMessageTakesTheMessage() -> None:
    """
    A blocked file that is the whole body of an attached message is
    removed with its message/rfc822 part.
    """
    inner = EXE.replace(b"Content-Type", b"MIME-Version: 1.0\r\nContent-Type", 1)
    message = Message.fromBytes(
        topLevel(
            multipart(
                "mixed", "b", [strip_corpus.TEXT, part(["Content-Type: message/rfc822"], inner)]
            )
        )
    )
    [finding] = findBlocked(message, POLICY)
    assert finding.part.path == (1,) and finding.part.contentType == "message/rfc822"


def test_partsUnderASignatureAreMarked() -> None:
    """
    A finding inside a multipart/signed says so.
    """
    signed = multipart("signed", "s", [multipart("mixed", "m", [strip_corpus.TEXT, EXE]), PDF])
    [finding] = findBlocked(Message.fromBytes(topLevel(signed)), POLICY)
    assert finding.signed and finding.filename == "setup.exe"


def test_uuencodedFileIsCutFromItsText() -> None:
    """
    A uuencoded program in a plain text is one finding on that text,
    holding the block to cut; with C{uuencode} off there is none.
    """
    block = strip_corpus.uuencoded("tool.exe", b"MZ" + bytes(80))
    text = part(["Content-Type: text/plain"], b"See below.\r\n" + block + b"Bye.\r\n")
    message = Message.fromBytes(topLevel(text))
    [finding] = findBlocked(message, POLICY)
    assert finding.reason == "uuencoded tool.exe: blocked extension .exe"
    [cut] = finding.blocks
    assert message.toBytes()[cut.start : cut.end] == block
    assert findBlocked(message, StripPolicy(uuencode=False)) == []


def encodedAttachedMessage(textParts: int) -> bytes:
    """
    A message whose base64-encoded message/rfc822 attachment holds
    C{textParts} text parts and then an C{evil.exe}.
    """
    parts = [b"--in\r\nContent-Type: text/plain\r\n\r\nx\r\n"] * textParts
    parts.append(
        b"--in\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=evil.exe\r\n\r\nMZ\r\n"
    )
    inner = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=in\r\n\r\n" + b"".join(parts) + b"--in--\r\n"
    )
    encoded = base64.encodebytes(inner).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=out\r\n\r\n"
        b"--out\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--out\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--out--\r\n"
    )


@pytest.mark.parametrize("textParts", [10, 1001])
def test_encodedAttachedMessageOverTheLimits(textParts: int) -> None:
    """
    An encoded attached message is checked under the message's parse
    limits: its .exe is found among a few parts, and one that hides it
    beyond max_parts (the outer message being within every limit) is
    removed whole as too complex to check, never delivered.
    """
    raw = encodedAttachedMessage(textParts)
    Message.fromBytes(raw).checkLimits()
    findings = findBlocked(Message.fromBytes(raw), StripPolicy())
    assert [finding.reason for finding in findings] == [
        "attached message holds evil.exe (blocked extension .exe)"
        if textParts == 10
        else "attached message too complex to check (max_parts)"
    ]
