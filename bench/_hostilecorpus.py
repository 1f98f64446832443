"""
The hostile corpus: messages shaped to break a mail filter, generated
deterministically.

Each L{HostileMessage} is what an attacker can mail to anyone behind the
proxy: runs of blanks that make backtracking regexes quadratic, archives
that inflate, thousands of parts, fields, parameters, continuations and
encoded words, deep nesting, long lines; and two ordinary messages as the
control.  The same code gives the same bytes on every machine (fixed seeds,
fixed zip timestamps), with CRLF line ends, so runs are comparable.
"""

from __future__ import annotations

import base64
import io
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from bench._corpus import attachmentMessage, textMessage

CRLF = b"\r\n"
KB = 1024
MB = 1024 * 1024

#: Every zip member gets this timestamp, so archives are the same bytes on every run.
_ZIP_TIME = (2026, 11, 27, 12, 0, 0)


@dataclass(frozen=True)
class HostileMessage:
    """
    One message of the corpus: a short name for the table, what it is, and
    its exact bytes.
    """

    name: str
    description: str
    data: bytes


def _head(subject: str, contentType: str, extra: tuple[str, ...] = ()) -> bytes:
    fields = [
        "From: Mallory <mallory@example.net>",
        "To: Alice <alice@example.org>",
        f"Subject: {subject}",
        "Date: Fri, 27 Nov 2026 12:00:00 +0000",
        f"Message-ID: <{subject.replace(' ', '-')}@example.net>",
        "MIME-Version: 1.0",
        *extra,
        f"Content-Type: {contentType}",
    ]
    return "\r\n".join(fields).encode() + CRLF


def _multipart(subject: str, parts: list[bytes], boundary: str = "hostile") -> bytes:
    """
    A multipart/mixed message of C{parts} (each its own headers, a blank
    line and a body ending in CRLF).
    """
    delimiter = b"--" + boundary.encode() + CRLF
    return b"".join(
        [
            _head(subject, f'multipart/mixed; boundary="{boundary}"'),
            CRLF,
            b"This is a multi-part message in MIME format.\r\n",
            *(delimiter + part for part in parts),
            b"--" + boundary.encode() + b"--" + CRLF,
        ]
    )


def _text(subject: str, body: bytes, encoding: str = "8bit") -> bytes:
    """
    A multipart message whose text part has C{body} (so filters that look
    at text parts, such as strip's uuencode search, see it) beside a short
    note.
    """
    part = (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body + CRLF
    )
    note = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSee above.\r\n"
    return _multipart(subject, [part, note])


def _blanks(size: int) -> bytes:
    """
    C{size} octets of alternating spaces and tabs.
    """
    return (b" \t" * (size // 2 + 1))[:size]


def qpBlanks(size: int) -> bytes:
    """
    A quoted-printable body with a run of C{size} blanks inside a line (the
    line goes on after them), the shape that makes a trailing-whitespace
    regex backtrack.
    """
    return _text(f"qp blanks {size}", b"start" + _blanks(size) + b"end", "quoted-printable")


def uuBlanks(size: int) -> bytes:
    """
    A text part with a C{begin 644 x} line followed by C{size} blanks and
    one more character: the shape that makes a uuencode C{begin} pattern
    with a lazy name and trailing blanks backtrack.
    """
    return _text(f"uu blanks {size}", b"begin 644 x" + _blanks(size) + b"y\r\nend")


def _zipped(name: str, data: bytes, method: int, level: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name, _ZIP_TIME)
        info.compress_type = method
        archive.writestr(info, data, compresslevel=level)
    return buffer.getvalue()


def _attachment(subject: str, filename: str, data: bytes) -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", CRLF)
    part = (
        f'Content-Type: application/zip; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + encoded
    note = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe files you asked for.\r\n"
    return _multipart(subject, [note, part])


def zipInZip(innerSize: int = 95 * 1000 * 1000, noise: int = 0) -> bytes:
    """
    A zip attachment holding C{inner.zip} (deflated), which stores
    (uncompressed) one member of C{innerSize} zeros: a small message whose
    inner archive inflates to C{innerSize}.  With C{noise}, that many
    pseudo-random octets are sprinkled evenly over the zeros, so the
    message is bigger and inflating it costs more.
    """
    payload = bytearray(innerSize)
    if noise:
        rng = random.Random(439)
        step = innerSize // noise
        for index in range(noise):
            payload[index * step] = rng.randrange(1, 256)
    inner = _zipped("zeros.bin", bytes(payload), zipfile.ZIP_STORED)
    del payload
    outer = _zipped("inner.zip", inner, zipfile.ZIP_DEFLATED, 9)
    label = f"zip in zip {innerSize // 1_000_000} MB" + (f" noise {noise}" if noise else "")
    return _attachment(label, "files.zip", outer)


def manyExeParts(count: int = 5000) -> bytes:
    """
    C{count} tiny parts, each an attachment named C{.exe}: every one is to
    be removed and quarantined.
    """
    parts = [
        f"Content-Type: application/octet-stream; name=a{n}.exe\r\n\r\nMZ\r\n".encode()
        for n in range(count)
    ]
    return _multipart(f"{count} exe parts", parts, "b")


def manyTextParts(count: int = 100_000) -> bytes:
    """
    C{count} small text parts (nothing to remove, everything to scan).
    """
    parts = [b"Content-Type: text/plain\r\n\r\n%d\r\n" % n for n in range(count)]
    return _multipart(f"{count} text parts", parts, "b")


def manyFields(count: int = 100_000) -> bytes:
    """
    A short message under C{count} header fields.
    """
    fields = b"".join(b"X-Filler-%d: value\r\n" % n for n in range(count))
    return (
        _head(f"{count} header fields", "text/plain; charset=us-ascii")
        + fields
        + CRLF
        + b"Hello.\r\n"
    )


def manyPartsOfFields(parts: int, fields: int) -> bytes:
    """
    C{parts} parts of C{fields} six-octet header fields each: within every
    per-block limit, over the message's total.
    """
    block = b"X: v\r\n" * fields
    return _multipart(
        f"{parts} parts of {fields} fields", [block + b"\r\nx\r\n" for _ in range(parts)]
    )


def manyParameters(count: int = 20_000) -> bytes:
    """
    A text part whose Content-Type has C{count} parameters, folded one per
    line.
    """
    parameters = "".join(f";\r\n p{n}=v{n}" for n in range(count))
    part = f"Content-Type: text/plain; charset=us-ascii{parameters}\r\n\r\nHello.\r\n".encode()
    return _multipart(f"{count} parameters", [part])


def rfc2231Continuations(count: int = 20_000) -> bytes:
    """
    An attachment whose file name is given as C{count} RFC 2231
    continuations, listed in reverse order (so they must be sorted), each
    percent-encoded, ending in C{.exe}.
    """
    pieces = [f";\r\n filename*{n}*=%61%62" for n in range(1, count)]
    pieces.append(";\r\n filename*0*=utf-8''%61")
    pieces.append(f";\r\n filename*{count}*=.exe")
    parameters = "".join(reversed(pieces))
    part = (
        f"Content-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment{parameters}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
    ).encode()
    return _multipart(f"rfc2231 {count} continuations", [part])


def rfc2047Words(count: int = 20_000) -> bytes:
    """
    A Subject and an attachment name made of C{count} RFC 2047 encoded words
    each (the file name decodes to something ending in C{.exe}).
    """
    words = " ".join(["=?utf-8?b?YWJj?="] * count)
    name = " ".join(["=?utf-8?q?a?="] * count + ["=?utf-8?q?=2Eexe?="])
    head = _head("x", 'multipart/mixed; boundary="hostile"').replace(
        b"Subject: x", ("Subject: " + words).encode()
    )
    part = (
        f'Content-Type: application/octet-stream; name="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
    ).encode()
    return head + CRLF + b"--hostile\r\n" + part + b"--hostile--\r\n"


def paddedBase64(size: int = 1 * MB) -> bytes:
    """
    An attachment of about C{size} octets of base64 where every four
    characters are a padded quantum (C{QQ==}): one decoded octet per four.
    """
    line = b"QQ==" * 19 + CRLF
    body = line * (size // len(line))
    part = (
        b'Content-Type: application/octet-stream; name="padded.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )
    return _multipart("padded base64", [part])


def deepNesting(depth: int = 5000) -> bytes:
    """
    Multipart containers nested C{depth} deep, a text part at the bottom.
    """
    opening = b"".join(
        b'--n%d\r\nContent-Type: multipart/mixed; boundary="n%d"\r\n\r\n' % (n, n + 1)
        for n in range(depth)
    )
    bottom = b"--n%d\r\nContent-Type: text/plain\r\n\r\nbottom\r\n--n%d--\r\n" % (depth, depth)
    closing = b"".join(b"--n%d--\r\n" % n for n in reversed(range(depth)))
    head = _head(f"nested {depth}", 'multipart/mixed; boundary="n0"')
    return head + CRLF + opening + bottom + closing


def longHeaderLine(size: int = 1 * MB) -> bytes:
    """
    A Subject of C{size} octets on one line (no folding), and a
    Content-Type parameter as long.
    """
    words = (b"word " * (size // 5 + 1))[:size]
    head = _head("x", "text/plain; charset=us-ascii").replace(b"Subject: x", b"Subject: " + words)
    head = head.replace(b"charset=us-ascii", b"charset=us-ascii; x=" + b"a" * size)
    return head + CRLF + b"Hi.\r\n"


#: The corpus, in the order the table lists it: (name, description, maker).
_PLAN: tuple[tuple[str, str, Callable[[], bytes]], ...] = (
    ("control-text", "ordinary text/HTML message (control)", lambda: _control(0)),
    ("control-attachment", "ordinary PDF attachment (control)", lambda: _control(1)),
    ("qp-blanks-64k", "QP body, 64 KB of blanks inside a line", lambda: qpBlanks(64 * KB)),
    ("qp-blanks-1m", "QP body, 1 MB of blanks inside a line", lambda: qpBlanks(MB)),
    ("uu-blanks-64k", "`begin 644 x` + 64 KB of blanks", lambda: uuBlanks(64 * KB)),
    ("uu-blanks-1m", "`begin 644 x` + 1 MB of blanks", lambda: uuBlanks(MB)),
    ("zip-in-zip", "zip in zip, stored inner member of 95 MB zeros", zipInZip),
    (
        "zip-in-zip-noisy",
        "zip in zip, 95 MB inner member with sprinkled noise",
        lambda: zipInZip(noise=75_000),
    ),
    ("exe-parts-999", "999 tiny .exe parts (within max_parts)", lambda: manyExeParts(999)),
    ("exe-parts-5000", "5,000 tiny .exe parts", manyExeParts),
    ("text-parts-100k", "100,000 small text parts", manyTextParts),
    ("fields-100k", "100,000 header fields", manyFields),
    (
        "fields-1000x1000",
        "1,000 parts of 1,000 tiny header fields each",
        lambda: manyPartsOfFields(1000, 1000),
    ),
    ("parameters-20k", "20,000 Content-Type parameters", manyParameters),
    ("rfc2231-20k", "RFC 2231 file name in 20,000 continuations", rfc2231Continuations),
    ("rfc2047-20k", "Subject and file name of 20,000 encoded words", rfc2047Words),
    ("padded-base64", "1 MB of base64 in padded quanta (`QQ==`)", paddedBase64),
    ("nesting-5000", "multiparts nested 5,000 deep", deepNesting),
    ("long-header-1m", "1 MB Subject line and 1 MB parameter", longHeaderLine),
)

NAMES = tuple(name for name, _, _ in _PLAN)


def _control(kind: int) -> bytes:
    rng = random.Random(10 + kind)
    if kind == 0:
        return textMessage(rng, 0, 50_000)
    return attachmentMessage(rng, 1, 300_000)


def hostileCorpus(names: tuple[str, ...] = NAMES) -> tuple[HostileMessage, ...]:
    """
    The named messages of the corpus (all by default), in the corpus' order.

    @raise ValueError: a name is not in the corpus.
    """
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"not in the corpus: {', '.join(sorted(unknown))}")
    return tuple(
        HostileMessage(name, description, make())
        for name, description, make in _PLAN
        if name in names
    )
