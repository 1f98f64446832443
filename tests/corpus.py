"""
Test messages for end-to-end runs: realistic mail and the byte patterns a
relay must not damage.

C{crlfClean()} messages use CRLF line ends only, so every server (Dovecot
stores LF and restores CRLF) and every client can reproduce them exactly.
C{exactBytes()} adds what only a byte-exact test server serves: bare LF and
CR, NUL, no final line end.
"""

from __future__ import annotations

import base64
import hashlib
import random


def _attachment(seed: bytes, size: int) -> bytes:
    """
    C{size} pseudo-random octets, the same for the same seed.
    """
    return random.Random(hashlib.sha256(seed).digest()).randbytes(size)


def _base64Lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def crlfClean() -> list[bytes]:
    """
    Messages with CRLF line ends only.
    """
    plain = (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: plain text\r\n"
        b"Date: Mon, 10 Mar 2025 09:00:00 +0000\r\n"
        b"Message-ID: <plain@example.com>\r\n"
        b"\r\n"
        b"Hello Bob,\r\n"
        b".a line starting with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"the line above is a lone dot.\r\n"
    )
    eightBit = (
        b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"
        b"Message-ID: <8bit@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"X-Long-Header: " + b"folded " * 30 + b"\r\n\tcontinued\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x82\xac\r\n"
        b"\xff\xfe raw 8-bit octets\r\n" + b"x" * 5000 + b"\r\n"
    )
    attachment = _attachment(b"pdf", 40_000)
    withAttachment = (
        b"From: invoices@example.org\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: Your invoice\r\n"
        b"Message-ID: <att@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="=-=outer=-="\r\n'
        b"\r\n"
        b"This is a multi-part message in MIME format.\r\n"
        b"--=-=outer=-=\r\n"
        b'Content-Type: multipart/alternative; boundary="inner"\r\n'
        b"\r\n"
        b"--inner\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"See the attached invoice.\r\n"
        b"--inner\r\n"
        b"Content-Type: text/html; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"<p>See the attached <b>invoice</b>.</p>=\r\n"
        b".<br>\r\n"
        b"--inner--\r\n"
        b"\r\n"
        b"--=-=outer=-=\r\n"
        b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
        b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + _base64Lines(attachment) + b"--=-=outer=-=--\r\n"
        b"epilogue\r\n"
    )
    big = (
        b"From: big@example.com\r\n"
        b"Subject: large message\r\n"
        b"Message-ID: <big@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + _base64Lines(_attachment(b"big", 1_500_000))
    )
    empty = b"Subject: empty body\r\nMessage-ID: <empty@example.com>\r\n\r\n"
    return [plain, eightBit, withAttachment, big, empty]


def exactBytes() -> list[bytes]:
    """
    Messages only a byte-exact server can serve unchanged.
    """
    return crlfClean()[:3] + [
        b"Subject: bare line ends\r\n\r\nbare\nLF and bare\rCR\r\n.\nnot a line start\r\n",
        b"Subject: NUL\r\n\r\nnul \x00 byte\r\n",
        b"Subject: no final CRLF\r\n\r\nlast line without a line end",
        b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n.\r\n",
    ]


def clientSafe() -> list[bytes]:
    """
    CRLF-clean messages within every real client's own limits: poplib
    refuses lines over 2,048 octets and getmail refolds long header lines,
    damage a proxy test must not blame on the proxy.
    """
    plain, _, withAttachment, big, empty = crlfClean()
    eightBit = (
        b"From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.com>\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n"
        b"Message-ID: <8bit-short@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x82\xac\r\n" + b"y" * 1500 + b"\r\n"
    )
    return [plain, eightBit, withAttachment, big, empty]
