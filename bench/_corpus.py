"""
The benchmark's mail, generated deterministically with CRLF line ends.

Three mailboxes: C{50k} (many ~50 KB text and HTML messages), C{mixed} (what
a real inbox holds: short notes, newsletters, office attachments, photos and
a few multi-megabyte messages, up to ~5 MB) and C{big} (one message of a
given size, 20 MB by default, for the memory measurement).  The same seed
gives the same bytes on every machine, so runs are comparable.

Bodies carry lines that start with a dot (and a line holding only a dot), so
every proxy under test must dot-stuff and unstuff correctly; the benchmark
compares every retrieved byte.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

CRLF = b"\r\n"

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when "
    "if so no will can more other about into than them only could new some time these two "
    "may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "invoice meeting quarterly report attached please review budget schedule project "
    "deadline customer shipment delivery contract draft minutes agenda thanks regards"
).split()

_NAMES = (
    "Alice Martin",
    "Bob Dubois",
    "Chloé Bernard",
    "Dmitri Ivanov",
    "Eva Schmidt",
    "François Petit",
    "Grace Hopper",
    "Hiro Tanaka",
    "Ines Garcia",
    "Jörg Weber",
)


@dataclass(frozen=True)
class Mailbox:
    """
    A named list of messages, each exactly the bytes RETR must deliver.
    """

    name: str
    messages: tuple[bytes, ...]

    @property
    def totalBytes(self) -> int:
        return sum(len(message) for message in self.messages)

    def describe(self) -> str:
        sizes = [len(message) for message in self.messages]
        count = f"{len(sizes)} message{'s' if len(sizes) != 1 else ''}"
        if min(sizes) == max(sizes):
            return f"{count} of {_size(sizes[0])}"
        return (
            f"{count}, {_size(self.totalBytes)} (from {_size(min(sizes))} to {_size(max(sizes))})"
        )


def _size(octets: int) -> str:
    if octets >= 1_000_000:
        return f"{octets / 1e6:.1f} MB"
    return f"{octets / 1e3:.1f} KB"


def _address(name: str) -> str:
    local = name.split()[0].lower().encode("ascii", "ignore").decode()
    return f"{local}@example.org"


def _textLines(rng: random.Random, size: int, quote: bool = False) -> list[bytes]:
    """
    Wrapped prose of about C{size} bytes, as lines without line ends.

    Now and then a line starts with a dot, or is a lone dot, the cases
    dot-stuffing exists for.
    """
    lines: list[bytes] = []
    total = 0
    while total < size:
        roll = rng.random()
        if roll < 0.02:
            line = "."
        elif roll < 0.05:
            line = "." + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 9)))
        elif roll < 0.09:
            line = ""
        else:
            words: list[str] = []
            length = 0
            limit = rng.randint(50, 76)
            while length < limit:
                word = rng.choice(_WORDS)
                words.append(word)
                length += len(word) + 1
            line = " ".join(words)
            if quote and roll < 0.4:
                line = "> " + line
        encoded = line.encode("utf-8")
        lines.append(encoded)
        total += len(encoded) + 2
    return lines


def _text(rng: random.Random, size: int, quote: bool = False) -> bytes:
    return CRLF.join(_textLines(rng, size, quote)) + CRLF


def _html(rng: random.Random, size: int) -> bytes:
    lines = [b'<html><head><meta charset="utf-8"><title>News</title></head><body>']
    total = len(lines[0])
    while total < size:
        for line in _textLines(rng, min(size - total, 2_000)):
            row = b'<p style="margin:0 0 8px 0;font-family:Arial">' + line + b"</p>"
            lines.append(row)
            total += len(row) + 2
    lines.append(b"</body></html>")
    return CRLF.join(lines) + CRLF


def _headers(
    rng: random.Random, index: int, subject: str, contentType: str, extra: list[str] | None = None
) -> bytes:
    sender = rng.choice(_NAMES)
    recipient = rng.choice(_NAMES)
    day = 1 + index % 28
    hour = index % 24
    relays = [
        f"Received: from mx{n}.example.net (mx{n}.example.net [192.0.2.{10 + n}])\r\n"
        f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\r\n"
        f"\tfor <{_address(recipient)}>; Tue, {day} Oct 2026 {hour:02d}:{n:02d}:17 +0000"
        for n in range(rng.randint(2, 4))
    ]
    fields = [
        f"Return-Path: <{_address(sender)}>",
        *relays,
        f"From: {sender} <{_address(sender)}>",
        f"To: {recipient} <{_address(recipient)}>",
        f"Subject: {subject}",
        f"Date: Tue, {day} Oct 2026 {hour:02d}:{index % 60:02d}:17 +0000",
        f"Message-ID: <{index}.{rng.getrandbits(48):012x}@example.org>",
        "MIME-Version: 1.0",
        *(extra or []),
        f"Content-Type: {contentType}",
    ]
    return "\r\n".join(fields).encode("utf-8") + CRLF


def _subject(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).capitalize()


def _boundary(rng: random.Random) -> str:
    return f"=_bench_{rng.getrandbits(64):016x}"


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def textMessage(rng: random.Random, index: int, size: int) -> bytes:
    """
    A multipart/alternative message (plain and HTML) of about C{size} bytes.
    """
    boundary = _boundary(rng)
    head = _headers(rng, index, _subject(rng), f'multipart/alternative; boundary="{boundary}"')
    budget = max(size - len(head) - 600, 200)
    plain = _text(rng, budget * 2 // 5, quote=True)
    html = _html(rng, budget - len(plain))
    parts = [
        head,
        CRLF,
        b"This is a multi-part message in MIME format.\r\n",
        b"--" + boundary.encode() + CRLF,
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        plain,
        b"--" + boundary.encode() + CRLF,
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        html,
        b"--" + boundary.encode() + b"--" + CRLF,
    ]
    return b"".join(parts)


def plainMessage(rng: random.Random, index: int, size: int) -> bytes:
    """
    A single-part text/plain message of about C{size} bytes (a reply).
    """
    head = _headers(
        rng,
        index,
        "Re: " + _subject(rng),
        "text/plain; charset=utf-8",
        ["Content-Transfer-Encoding: 8bit"],
    )
    return head + CRLF + _text(rng, max(size - len(head) - 2, 100), quote=True)


#: Attachment kinds: MIME type, file name pattern, and the magic bytes a
#: real file of that type starts with (content sniffers look at them).
_ATTACHMENTS = (
    ("application/pdf", "report-{n}.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
    ("image/jpeg", "IMG_{n:04d}.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("image/png", "scan-{n}.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
)


def attachmentMessage(rng: random.Random, index: int, size: int, kind: int = 0) -> bytes:
    """
    A multipart/mixed message of about C{size} bytes: a short text part and a
    base64 attachment (a PDF, JPEG or PNG header, then pseudo-random,
    incompressible bytes); nothing a filter such as C{strip} removes.
    """
    boundary = _boundary(rng)
    mimeType, pattern, magic = _ATTACHMENTS[kind % len(_ATTACHMENTS)]
    filename = pattern.format(n=index)
    head = _headers(rng, index, _subject(rng), f'multipart/mixed; boundary="{boundary}"')
    note = _text(rng, rng.randint(400, 3000))
    partHead = (
        f'Content-Type: {mimeType}; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    overhead = len(head) + len(note) + len(partHead) + 300
    # base64 with 76-character lines: 78 bytes on the wire per 57 raw bytes.
    raw = max((size - overhead) * 57 // 78, 16)
    parts = [
        head,
        CRLF,
        b"This is a multi-part message in MIME format.\r\n",
        b"--" + boundary.encode() + CRLF,
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        note,
        b"--" + boundary.encode() + CRLF,
        partHead,
        _base64(magic + rng.randbytes(max(raw - len(magic), 0))),
        b"--" + boundary.encode() + b"--" + CRLF,
    ]
    return b"".join(parts)


def mailbox50k(count: int = 200, size: int = 50_000, seed: int = 50) -> Mailbox:
    """
    C{count} text/HTML messages of C{size} bytes, give or take 10 %.
    """
    rng = random.Random(seed)
    messages = tuple(
        textMessage(rng, index, int(size * rng.uniform(0.9, 1.1))) for index in range(count)
    )
    return Mailbox("50k", messages)


#: The mixed mailbox at scale 1: (kind, size in bytes) per message, ~14 MB.
_MIXED = (
    [("plain", s) for s in (2_100, 3_400, 4_800, 6_200, 8_800, 12_000, 15_500, 21_000)]
    + [("text", s) for s in (9_000, 18_000, 26_000, 40_000, 75_000, 120_000)]
    + [("attachment", s) for s in (85_000, 140_000, 230_000, 310_000, 420_000, 650_000)]
    + [("attachment", s) for s in (900_000, 1_400_000, 2_100_000)]
    + [("attachment", s) for s in (3_300_000, 5_000_000)]
)


def mixedMailbox(scale: float = 1.0, seed: int = 5) -> Mailbox:
    """
    A realistic inbox of ~14 MB x C{scale} (25 messages; the largest is
    5 MB x C{scale}), in a shuffled but fixed order.
    """
    rng = random.Random(seed)
    plan = list(_MIXED)
    rng.shuffle(plan)
    messages = []
    for index, (kind, size) in enumerate(plan):
        scaled = max(int(size * scale), 1_500)
        if kind == "plain":
            messages.append(plainMessage(rng, index, scaled))
        elif kind == "text":
            messages.append(textMessage(rng, index, scaled))
        else:
            messages.append(attachmentMessage(rng, index, scaled, index))
    return Mailbox("mixed", tuple(messages))


def bigMailbox(size: int = 20_000_000, seed: int = 20) -> Mailbox:
    """
    One message of about C{size} bytes (a large base64 attachment).
    """
    rng = random.Random(seed)
    return Mailbox("big", (attachmentMessage(rng, 0, size, 0),))


def idleMailbox() -> Mailbox:
    """
    One small message, for the idle-sessions measurement.
    """
    return Mailbox("idle", (plainMessage(random.Random(1), 0, 2_000),))
