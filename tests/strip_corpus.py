"""
Tricky messages for the strip plugin, built at test time: disguised and
oddly named executables, zipped, nested, uuencoded, signed and TNEF-wrapped
ones, zip bombs, broken MIME, and a clean message that must pass untouched.

Nothing here is a working program: the "executables" are file headers
(an MZ/PE header, an ELF header, a shortcut header ...) followed by
padding, which is all a type detector looks at.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import struct
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from popproxy.testing import attachmentPart, buildMessage, textPart

CRLF = b"\r\n"


# File contents.


def peExecutable(size: int = 4096) -> bytes:
    """
    The start of a Windows PE executable: the usual DOS header and stub,
    then a PE header for x86-64, padded to C{size}.
    """
    dos = bytearray(
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
        b"\xb8\x00\x00\x00\x00\x00\x00\x00\x40\x00\x00\x00\x00\x00\x00\x00"
    )
    dos += bytes(0x40 - len(dos))
    struct.pack_into("<I", dos, 0x3C, 0x80)
    stub = b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
    stub += b"This program cannot be run in DOS mode.\r\r\n$"
    head = bytes(dos) + stub
    head += bytes(0x80 - len(head))
    head += b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x8664, 3, 0, 0, 0, 0xF0, 0x22)
    return head + bytes(i % 251 for i in range(size - len(head)))


def elfExecutable(size: int = 2048) -> bytes:
    """
    The start of a 64-bit Linux executable.
    """
    head = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + struct.pack("<HHI", 2, 0x3E, 1)
    return head + bytes(size - len(head))


def windowsShortcut(size: int = 512) -> bytes:
    """
    The start of a Windows shortcut (.lnk): header size and link class id.
    """
    head = struct.pack("<I", 0x4C) + uuid.UUID("00021401-0000-0000-c000-000000000046").bytes_le
    return head + bytes(size - len(head))


def isoImage() -> bytes:
    """
    An ISO 9660 disk image: 16 empty sectors, then a primary volume
    descriptor.
    """
    return bytes(32768) + b"\x01CD001\x01" + bytes(2041)


def msiPackage() -> bytes:
    """
    A Windows Installer package: an OLE2 compound file whose root storage
    has the installer's class id.
    """
    header = bytearray(512)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHH", header, 0x18, 0x3E, 3, 0xFFFE)
    struct.pack_into("<H", header, 0x1E, 9)
    struct.pack_into("<I", header, 0x30, 0)
    root = bytearray(512)
    root[:10] = "Root Entry".encode("utf-16-le")[:10]
    root[0x42] = 5
    root[0x50:0x60] = uuid.UUID("000c1084-0000-0000-c000-000000000046").bytes_le
    return bytes(header) + bytes(root) + bytes(1024)


def pdfDocument() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + b"x" * 600 + b"\n%%EOF\n"


def pngImage() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(200))


# Archives.


def zipArchive(members: Mapping[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """
    A zip archive of C{members} (name to content).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@functools.cache
def zipBomb(inflated: int, name: str = "zeros.bin") -> bytes:
    """
    A zip whose one member inflates to C{inflated} zero octets, written in
    chunks so that building it does not hold them in memory (built once
    per size: about a second of work for 150 MB).
    """
    buffer = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            for _ in range(inflated // len(chunk)):
                member.write(chunk)
    return buffer.getvalue()


def lyingZip(declared: int) -> bytes:
    """
    A small zip whose central directory claims its member inflates to
    C{declared} octets (the sizes a reader must not trust blindly).
    """
    data = bytearray(zipArchive({"notes.txt": b"hello " * 100}))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def encryptedZip(members: Mapping[str, bytes]) -> bytes:
    """
    A zip whose members are flagged as encrypted (the flag is what readers
    go by; the content is not really enciphered).
    """
    data = bytearray(zipArchive(members, zipfile.ZIP_STORED))
    for signature, flagOffset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at != -1:
            data[at + flagOffset] |= 0x01
            at = data.find(signature, at + 4)
    return bytes(data)


# TNEF (winmail.dat).


def _tnefAttribute(level: int, attribute: int, value: bytes) -> bytes:
    checksum = sum(value) & 0xFFFF
    return (
        bytes([level])
        + struct.pack("<II", attribute, len(value))
        + value
        + struct.pack("<H", checksum)
    )


def tnefStream(title: str, longName: str, content: bytes) -> bytes:
    """
    A winmail.dat with one attachment: its 8.3 title, its long file name
    in the MAPI properties, and its content.
    """
    encoded = longName.encode("utf-16-le") + b"\x00\x00"
    padding = bytes(-len(encoded) % 4)
    properties = (
        struct.pack("<I", 1)
        + struct.pack("<HH", 0x001F, 0x3707)
        + struct.pack("<II", 1, len(encoded))
        + encoded
        + padding
    )
    return (
        b"\x78\x9f\x3e\x22"
        + struct.pack("<H", 0x1234)
        + _tnefAttribute(1, 0x00089006, b"\x00\x00\x01\x00")
        + _tnefAttribute(2, 0x00069002, b"\x01\x00\xff\xff\xff\xff" + bytes(8))
        + _tnefAttribute(2, 0x00018010, title.encode("ascii") + b"\x00")
        + _tnefAttribute(2, 0x0006800F, content)
        + _tnefAttribute(2, 0x00069005, properties)
    )


# uuencode.


def uuencoded(name: str, content: bytes, lineEnding: bytes = CRLF) -> bytes:
    """
    A uuencoded file as a mail program puts it in a text: C{begin} line,
    data lines, C{`} and C{end}.
    """
    lines = [f"begin 644 {name}".encode()]
    lines += [
        binascii.b2a_uu(content[i : i + 45], backtick=True).rstrip(b"\n")
        for i in range(0, len(content), 45)
    ]
    lines += [b"`", b"end"]
    return b"".join(line + lineEnding for line in lines)


# MIME building blocks.


def part(fields: list[str], body: bytes, lineEnding: bytes = CRLF) -> bytes:
    """
    A MIME part from header lines and a body.
    """
    return b"".join(f.encode() + lineEnding for f in fields) + lineEnding + body


def base64Part(fields: list[str], content: bytes, lineEnding: bytes = CRLF) -> bytes:
    lines = base64.encodebytes(content).replace(b"\n", lineEnding)
    return part([*fields, "Content-Transfer-Encoding: base64"], lines, lineEnding)


def multipart(subtype: str, boundary: str, parts: list[bytes], extra: str = "") -> bytes:
    """
    A complete multipart part (its Content-Type field, then the body).
    """
    body = b"".join(b"--" + boundary.encode() + CRLF + p + CRLF for p in parts)
    body += b"--" + boundary.encode() + b"--" + CRLF
    return part([f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}'], body)


def embedded(message: bytes, encoding: str | None = None) -> bytes:
    """
    A message/rfc822 part holding C{message}, optionally (against RFC
    2045, as some mailers do) base64-encoded.
    """
    fields = ["Content-Type: message/rfc822", 'Content-Disposition: attachment; filename="fwd.eml"']
    if encoding == "base64":
        return base64Part(fields, message)
    return part(fields, message)


HEADERS = b"".join(
    line + CRLF
    for line in (
        b"From: Alice <alice@example.com>",
        b"To: Bob <bob@example.net>",
        b"Subject: the files",
        b"Date: Mon, 10 Mar 2025 09:00:00 +0000",
        b"Message-ID: <strip-corpus@example.com>",
        b"MIME-Version: 1.0",
    )
)


def topLevel(body: bytes) -> bytes:
    """
    A message: the usual headers, then C{body} (a part with its own
    Content-Type field).
    """
    return HEADERS + body


TEXT = textPart("Please find the files attached.\n")
HTML_ALTERNATIVE = multipart(
    "alternative",
    "alt",
    [
        textPart("Hello Bob,\nthe files are attached.\n"),
        part(["Content-Type: text/html; charset=utf-8"], b"<p>Hello Bob,</p><p>the files.</p>\r\n"),
    ],
)
PDF = attachmentPart(pdfDocument(), "report.pdf", contentType="application/pdf")
PNG = attachmentPart(pngImage(), "logo.png", contentType="image/png")


# The corpus.


@dataclass(frozen=True)
class Case:
    """
    One tricky message and what the strip plugin must make of it.

    @ivar removed: the paths of the parts it must replace by a notice (in
        the original message); empty if it must deliver untouched.
    @ivar cut: the removed parts are text parts from which uuencoded
        files are cut, not replaced whole.
    @ivar gone: octets (besides the removed parts' bodies) that must not
        be in the output.
    @ivar kept: octets that must still be in the output.
    @ivar reason: a word the quarantine record's reason must contain.
    """

    name: str
    raw: bytes
    removed: tuple[tuple[int, ...], ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    cut: bool = False
    gone: tuple[bytes, ...] = ()
    kept: tuple[bytes, ...] = ()
    reason: str = ""


def _exe(
    name: str, content: bytes | None = None, contentType: str = "application/octet-stream"
) -> bytes:
    return attachmentPart(
        peExecutable() if content is None else content, name, contentType=contentType
    )


def _rfc2047(name: str) -> str:
    return "=?utf-8?B?" + base64.b64encode(name.encode()).decode() + "?="


def cases() -> list[Case]:
    """
    The corpus, built afresh (zip bombs included) on every call.
    """
    harmless = b"not really a program, but named like one\r\n" * 20
    rtlo = "invoice\u202efdp.exe"
    nestedMessage = buildMessage(
        textPart("forwarded text\n"),
        multipart("mixed", "deep", [TEXT, _exe("tool.exe")]),
        boundary="fwd-outer",
    )
    exeOnlyMessage = HEADERS + _exe("only.exe")
    uuText = (
        b"Here is the tool you asked for:\r\n\r\n"
        + uuencoded("setup.exe", peExecutable(600))
        + b"\r\nand a picture:\r\n"
        + uuencoded("cat.png", pngImage())
        + b"Regards,\r\nAlice\r\n"
    )
    signedBody = multipart("mixed", "inner", [TEXT, _exe("invoice.exe")])
    signature = base64Part(
        ["Content-Type: application/pkcs7-signature; name=smime.p7s",
         'Content-Disposition: attachment; filename="smime.p7s"'],
        b"\x30\x82\x01\x00" + bytes(256),
    )  # fmt: skip
    signed = topLevel(
        multipart(
            "signed",
            "signed",
            [signedBody, signature],
            '; protocol="application/pkcs7-signature"; micalg=sha-256',
        )
    )
    bomb = zipBomb(150 << 20)
    innerBomb = zipBomb(40 << 20)
    nestedBomb = zipArchive({f"part{i}.zip": innerBomb for i in range(4)}, zipfile.ZIP_STORED)
    return [
        Case(
            "disguised executable",
            buildMessage(TEXT, _exe("photo.jpg", contentType="image/jpeg"), PDF),
            removed=((1,),),
            reason="Windows",
        ),
        Case(
            "RFC 2231 encoded name",
            buildMessage(TEXT, attachmentPart(harmless, "résumé.exe"), PNG),
            removed=((1,),),
            reason=".exe",
        ),
        Case(
            "RFC 2047 encoded name",
            buildMessage(
                TEXT,
                base64Part(
                    [
                        f'Content-Type: application/octet-stream; name="{_rfc2047("résumé.exe")}"',
                        f'Content-Disposition: attachment; filename="{_rfc2047("résumé.exe")}"',
                    ],
                    harmless,
                ),
                PDF,
            ),
            removed=((1,),),
            reason=".exe",
        ),  # fmt: skip
        Case(
            "filename* says exe, filename says pdf",
            buildMessage(
                TEXT,
                base64Part(
                    [
                        "Content-Type: application/octet-stream",
                        'Content-Disposition: attachment; filename="report.pdf"; '
                        "filename*=utf-8''report%2Eexe",
                    ],
                    harmless,
                ),
            ),
            removed=((1,),),
            reason=".exe",
        ),  # fmt: skip
        Case(
            "filename says exe, filename* says pdf",
            buildMessage(
                TEXT,
                base64Part(
                    [
                        "Content-Type: application/octet-stream",
                        "Content-Disposition: attachment; filename*=utf-8''report.pdf; "
                        'filename="report.exe"',
                    ],
                    harmless,
                ),
            ),
            removed=((1,),),
            reason=".exe",
        ),  # fmt: skip
        Case(
            "Content-Type name only",
            buildMessage(
                TEXT,
                base64Part(['Content-Type: application/octet-stream; name="tool.scr"'], harmless),
            ),
            removed=((1,),),
            reason=".scr",
        ),
        Case(
            "double extension",
            buildMessage(TEXT, PDF, attachmentPart(harmless, "invoice.pdf.exe")),
            removed=((2,),),
            reason=".exe",
        ),
        Case(
            "right-to-left override",
            buildMessage(TEXT, attachmentPart(harmless, rtlo)),
            removed=((1,),),
            reason=".exe",
        ),
        Case(
            "right-to-left override, harmless real extension",
            buildMessage(TEXT, attachmentPart(harmless, "photo\u202egpj.txt")),
            removed=((1,),),
            reason="right-to-left",
        ),
        Case(
            "trailing dot and space",
            buildMessage(
                TEXT,
                base64Part(
                    [
                        "Content-Type: application/octet-stream",
                        'Content-Disposition: attachment; filename="setup.exe. "',
                    ],
                    harmless,
                ),
            ),
            removed=((1,),),
            reason=".exe",
        ),  # fmt: skip
        Case(
            "fullwidth and zero-width characters",
            buildMessage(TEXT, attachmentPart(harmless, "setup.e\u200bｘｅ")),
            removed=((1,),),
            reason=".exe",
        ),
        Case(
            "hidden class id extension",
            buildMessage(
                TEXT,
                attachmentPart(harmless, "notes.txt.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}"),
            ),
            removed=((1,),),
            reason="class-id",
        ),
        Case(
            "nested multipart inside an attached message",
            buildMessage(HTML_ALTERNATIVE, embedded(nestedMessage), PDF),
            removed=((1, 0, 1, 1),),
            reason=".exe",
        ),
        Case(
            "attached message that is an executable",
            buildMessage(TEXT, embedded(exeOnlyMessage), PNG),
            removed=((1,),),
            reason=".exe",
        ),
        Case(
            "base64-encoded attached message",
            buildMessage(TEXT, embedded(nestedMessage, "base64")),
            removed=((1,),),
            reason="tool.exe",
        ),
        Case(
            "whole message is an executable",
            exeOnlyMessage,
            removed=((),),
            reason=".exe",
        ),
        Case(
            "zip holding an executable",
            buildMessage(
                TEXT,
                attachmentPart(
                    zipArchive({"docs/readme.txt": b"read me", "docs/setup.exe": peExecutable()}),
                    "docs.zip",
                    contentType="application/zip",
                ),
                PDF,
            ),
            removed=((1,),),
            reason="docs/setup.exe",
        ),
        Case(
            "zip holding a disguised executable",
            buildMessage(
                TEXT, attachmentPart(zipArchive({"photo.jpg": peExecutable()}), "photos.zip")
            ),
            removed=((1,),),
            reason="photo.jpg",
        ),
        Case(
            "zip inside a zip",
            buildMessage(
                TEXT,
                attachmentPart(
                    zipArchive(
                        {"a.txt": b"a", "inner.zip": zipArchive({"run.js": b"WScript.Echo(1)"})}
                    ),
                    "outer.zip",
                ),
            ),
            removed=((1,),),
            reason="inner.zip/run.js",
        ),
        Case(
            "zip nested too deep",
            buildMessage(
                TEXT,
                attachmentPart(
                    zipArchive({"1.zip": zipArchive({"2.zip": zipArchive({"x.txt": b"x"})})}),
                    "deep.zip",
                ),
            ),
            removed=((1,),),
            settings={"max_nesting": 2},
            reason="nested",
        ),
        Case(
            "zip bomb",
            buildMessage(TEXT, attachmentPart(bomb, "data.zip")),
            removed=((1,),),
            reason="inflating",
        ),
        Case(
            "nested zip bomb",
            buildMessage(TEXT, attachmentPart(nestedBomb, "data.zip")),
            removed=((1,),),
            reason="inflating",
        ),
        Case(
            "zip with lying sizes",
            buildMessage(TEXT, attachmentPart(lyingZip(0xFFFFFFF0), "data.zip")),
            removed=((1,),),
            reason="inflating",
        ),
        Case(
            "zip with too many files",
            buildMessage(
                TEXT,
                attachmentPart(zipArchive({f"f{i}.txt": b"" for i in range(50)}), "many.zip"),
            ),
            removed=((1,),),
            settings={"max_members": 20},
            reason="more than 20",
        ),
        Case(
            "encrypted zip, strip policy",
            buildMessage(
                TEXT, attachmentPart(encryptedZip({"salary.pdf": pdfDocument()}), "s.zip")
            ),
            removed=((1,),),
            settings={"encrypted": "strip"},
            reason="encrypted",
        ),
        Case(
            "encrypted zip holding an executable",
            buildMessage(TEXT, attachmentPart(encryptedZip({"setup.exe": harmless}), "s.zip")),
            removed=((1,),),
            reason="setup.exe",
        ),
        Case(
            "not a zip, named like one",
            buildMessage(TEXT, attachmentPart(b"garbage " * 40, "broken.zip")),
            removed=((1,),),
            reason="unreadable",
        ),
        Case(
            "uuencoded executable in the text",
            buildMessage(part(["Content-Type: text/plain; charset=us-ascii"], uuText), PDF),
            removed=((0,),),
            cut=True,
            gone=(b"begin 644 setup.exe",),
            kept=(b"Here is the tool you asked for:\r\n", b"begin 644 cat.png", b"Regards,"),
            reason="setup.exe",
        ),
        Case(
            "uuencoded executable in a quoted-printable text",
            buildMessage(
                part(
                    [
                        "Content-Type: text/plain; charset=utf-8",
                        "Content-Transfer-Encoding: quoted-printable",
                    ],
                    uuText.replace(b"=", b"=3D"),
                )
            ),
            removed=((0,),),
            cut=True,
            gone=(b"begin 644 setup.exe",),
            kept=(b"begin 644 cat.png", b"Regards,"),
            reason="setup.exe",
        ),  # fmt: skip
        Case(
            "uuencoded executable in a single-part message",
            topLevel(part(["Content-Type: text/plain"], uuText)),
            removed=((),),
            cut=True,
            gone=(b"begin 644 setup.exe",),
            kept=(b"From: Alice", b"Here is the tool", b"begin 644 cat.png"),
            reason="setup.exe",
        ),
        Case(
            "signed message, strip policy",
            signed,
            removed=((0, 1),),
            settings={"signed": "strip"},
            kept=(b"smime.p7s",),
            reason=".exe",
        ),
        Case(
            "missing final boundary",
            buildMessage(TEXT, PDF, _exe("setup.exe")).replace(
                b"--=_popproxy_test_boundary--\r\n", b""
            ),
            removed=((2,),),
            reason=".exe",
        ),
        Case(
            "TNEF winmail.dat",
            buildMessage(
                TEXT,
                attachmentPart(
                    tnefStream("REPORT~1.PDF", "report.pdf.exe", harmless),
                    "winmail.dat",
                    contentType="application/ms-tnef",
                ),
            ),
            removed=((1,),),
            reason="report.pdf.exe",
        ),
        Case(
            "blocked content type",
            buildMessage(TEXT, _exe("update", harmless, "application/x-msdownload")),
            removed=((1,),),
            reason="content type",
        ),
        Case(
            "Linux executable named like a document",
            buildMessage(TEXT, _exe("notes.pdf", elfExecutable())),
            removed=((1,),),
            reason="ELF",
        ),
        Case(
            "shortcut named like a picture",
            buildMessage(TEXT, _exe("holiday.jpg", windowsShortcut())),
            removed=((1,),),
            reason="shortcut",
        ),
        Case(
            "disk image named like a document",
            buildMessage(TEXT, _exe("scan.pdf", isoImage())),
            removed=((1,),),
            reason="Disc Image",
        ),
        Case(
            "installer named like a spreadsheet",
            buildMessage(TEXT, _exe("budget.xls", msiPackage())),
            removed=((1,),),
            reason="Installer",
        ),
        Case(
            "two executables, LF line ends",
            buildMessage(
                textPart("two files\n", lineEnding=b"\n"),
                attachmentPart(harmless, "a.exe", lineEnding=b"\n"),
                attachmentPart(pdfDocument(), "b.pdf", lineEnding=b"\n"),
                attachmentPart(harmless, "c.js", lineEnding=b"\n"),
                lineEnding=b"\n",
            ),
            removed=((1,), (3,)),
            reason="blocked extension",
        ),
        Case(
            "attachment over max_size",
            buildMessage(TEXT, attachmentPart(b"x" * 5000, "big.txt"), PDF),
            removed=((1,),),
            settings={"max_size": 4096},
            reason="larger than 4096",
        ),
    ]


def signedMessage() -> bytes:
    """
    The signed message of the corpus (a multipart/signed whose signed
    content holds an .exe).
    """
    return next(case.raw for case in cases() if case.name == "signed message, strip policy")


def cleanMessage() -> bytes:
    """
    A message with attachments of every harmless kind: text and HTML, a
    PDF, a picture, an Office document (a zip inside), a plain zip of
    documents, an attached message, an inline image, a text file that
    happens to start with "MZ", a uuencoded picture in the text.
    """
    docx = zipArchive(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<w:document/>",
            "word/media/image1.png": pngImage(),
        }
    )
    return buildMessage(
        HTML_ALTERNATIVE,
        PDF,
        PNG,
        attachmentPart(
            docx,
            "letter.docx",
            contentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        attachmentPart(zipArchive({"a.pdf": pdfDocument(), "b.png": pngImage()}), "docs.zip"),
        embedded(buildMessage(text="an old message\n")),
        base64Part(
            ["Content-Type: image/png", "Content-ID: <logo@example.com>",
             "Content-Disposition: inline"],
            pngImage(),
        ),
        attachmentPart(b"MZ is a postcode area. " * 10, "areas.txt", contentType="text/plain"),
        part(["Content-Type: text/plain"], b"A picture:\r\n" + uuencoded("cat.png", pngImage())),
        attachmentPart(encryptedZip({"salary.pdf": pdfDocument()}), "salary.zip"),
    )  # fmt: skip
