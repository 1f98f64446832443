"""
Tests for popproxy.message: reading headers and the MIME tree of normal,
broken and hostile messages, decoding payloads, and splicing edits that
produce exactly the expected octets.
"""

from __future__ import annotations

import base64

import pytest

import popproxy.message
from popproxy.message import Defect, EditError, Message, textPart
from popproxy.testing import attachmentPart, buildMessage


def crlf(text: str) -> bytes:
    """
    The text as UTF-8 with every LF turned into CRLF.
    """
    return text.encode("utf-8").replace(b"\n", b"\r\n")


MULTIPART = crlf(
    "From: a@example.com\n"
    "Subject: three parts\n"
    'Content-Type: multipart/mixed; boundary="XX"\n'
    "\n"
    "preamble\n"
    "--XX\n"
    "Content-Type: text/plain\n"
    "\n"
    "first\n"
    "--XX\n"
    "Content-Type: text/plain\n"
    "\n"
    "second\n"
    "--XX\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "dGhpcmQ=\n"
    "--XX--\n"
    "epilogue\n"
)


class TestLaziness:
    def test_headersOfHugeMessage(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Reading the headers of a 20 MB multipart message builds no part and
        splits no body: the tree is only built when asked for.
        """

        def refuse(*args: object) -> None:
            raise AssertionError("the body was split")

        monkeypatch.setattr(popproxy.message, "splitMultipart", refuse)
        raw = buildMessage(attachmentPart(b"\0" * 15_000_000, "big.bin"))
        assert len(raw) > 20_000_000
        message = Message.fromBytes(raw)
        assert message.headers.get("subject") == "test message"
        assert message.headers.range[1] < 400
        assert message._root is None

    def test_treeBuiltPartByPart(self) -> None:
        """
        Asking for the children of the top-level part splits only its body;
        a nested multipart is split when its own children are asked for.
        """
        inner = crlf('Content-Type: multipart/alternative; boundary="in"\n\n--in\n\na\n--in--\n')
        message = Message.fromBytes(buildMessage(inner, textPart("b")))
        nested = message.root.children[0]
        assert nested._tree is None
        assert [part.path for part in nested.children] == [(0, 0)]
        assert message.root.children[1]._tree is None

    def test_noParsingOnCreation(self) -> None:
        """
        Creating a message parses nothing, not even the headers.
        """
        message = Message.fromBytes(MULTIPART)
        assert message._block is None
        assert message._root is None


class TestHeaders:
    def test_valuesInOrderCaseInsensitive(self) -> None:
        """
        Every field of a name is kept in order, whatever the case of the
        name; get() is the first; names() lists every field.
        """
        raw = crlf("Received: one\nsubject: hi\nRECEIVED: two\nX-Empty:\n\nbody\n")
        headers = Message.fromBytes(raw).headers
        assert headers.values("received") == ("one", "two")
        assert headers.get("Received") == "one"
        assert headers.get("Missing") is None
        assert headers.get("Missing", "x") == "x"
        assert headers.names() == ("Received", "subject", "RECEIVED", "X-Empty")
        assert headers.values("x-empty") == ("",)
        assert "SUBJECT" in headers
        assert "Süb" not in headers
        assert len(headers) == 4
        assert headers.items()[1] == ("subject", "hi")

    def test_foldedRawAndDecoded(self) -> None:
        """
        rawValues() are the octets after the colon exactly, folding
        included; values() are unfolded and stripped.
        """
        raw = crlf("Subject: a long\n\tfolded  \n  value\nTo: b\n\nbody\n")
        headers = Message.fromBytes(raw).headers
        assert headers.rawValues("subject") == (b" a long\r\n\tfolded  \r\n  value",)
        assert headers.values("subject") == ("a long\tfolded    value",)

    def test_encodedWords(self) -> None:
        """
        RFC 2047 B and Q words are decoded; whitespace between adjacent
        words disappears; a character split across two words survives.
        """
        euro = "€".encode()
        first = base64.b64encode(euro[:1]).decode()
        second = base64.b64encode(euro[1:]).decode()
        raw = crlf(
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= =?ISO-8859-1?B?S/Zsbg==?= !\n"
            f"X-Split: =?utf-8?b?{first}?=\n =?utf-8?b?{second}?=\n"
            "X-Unknown: =?x-nonsense?q?abc?= and =?utf-8?q?broken\n"
            "\n"
        )
        headers = Message.fromBytes(raw).headers
        assert headers.get("subject") == "Grüße ausKöln !"
        assert headers.get("x-split") == "€"
        assert headers.get("x-unknown") == "abc and =?utf-8?q?broken"

    def test_eightBitHeaders(self) -> None:
        """
        Raw 8-bit octets in headers are read as UTF-8; octets that are not
        UTF-8 become U+FFFD instead of raising.
        """
        raw = b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: K\xf6ln\r\n\r\n"
        headers = Message.fromBytes(raw).headers
        assert headers.get("subject") == "Grüße"
        assert headers.get("from") == "K\ufffdln"
        assert headers.rawValues("from") == (b" K\xf6ln",)

    def test_nulAndLongLines(self) -> None:
        """
        NUL octets and a 2,000-character line are ordinary header content.
        """
        long = "x" * 2000
        raw = crlf(f"X-Long: {long}\nX-Nul: a\0b\n\nbody\n")
        headers = Message.fromBytes(raw).headers
        assert headers.get("x-long") == long
        assert headers.get("x-nul") == "a\0b"

    def test_bareLFAndMixed(self) -> None:
        """
        Bare LF ends lines and LF LF ends the header block, also mixed with
        CRLF.
        """
        raw = b"Subject: one\nX-A: two\r\n  more\n\nBody: not a header\n"
        message = Message.fromBytes(raw)
        assert message.headers.items() == (("Subject", "one"), ("X-A", "two  more"))
        assert message.root.body() == b"Body: not a header\n"
        assert message.lineEnding == b"\n"

    def test_stopsAtFirstEmptyLine(self) -> None:
        """
        Header-like lines after the first empty line belong to the body.
        """
        raw = crlf("Subject: real\n\nSubject: fake\n")
        message = Message.fromBytes(raw)
        assert message.headers.values("subject") == ("real",)
        assert message.root.bodyRange == (len(b"Subject: real\r\n\r\n"), len(raw))
        assert message.root.headerRange == (0, len(b"Subject: real\r\n"))

    def test_missingSeparator(self) -> None:
        """
        A line that is neither a field nor a continuation starts the body,
        and the missing empty line is a defect.
        """
        raw = crlf("Subject: x\nthis is the body\nX-Not: header\n")
        message = Message.fromBytes(raw)
        assert message.headers.names() == ("Subject",)
        assert message.root.body() == crlf("this is the body\nX-Not: header\n")
        assert Defect.MISSING_HEADER_BODY_SEPARATOR in message.root.defects

    def test_mboxFromLineAndLeadingContinuation(self) -> None:
        """
        A leading mbox 'From ' line is not a field (only at the top of the
        message: in a part it is body text); a continuation line before any
        field is a defect and is not a field either.
        """
        message = Message.fromBytes(crlf("From alice Mon Jan 1\nSubject: x\n\nb\n"))
        assert message.headers.items() == (("Subject", "x"),)
        part = Message.fromBytes(buildMessage(b"From me to you\r\nline")).root.children[0]
        assert part.body() == b"From me to you\r\nline"
        message = Message.fromBytes(crlf(" stray\nSubject: x\n\nb\n"))
        assert message.headers.items() == (("Subject", "x"),)
        assert Defect.FIRST_LINE_IS_CONTINUATION in message.root.defects

    def test_headerlessAndBodiless(self) -> None:
        """
        A message starting with an empty line has no fields; one without an
        empty line or line end is all headers and an empty body.
        """
        message = Message.fromBytes(b"\r\nbody\r\n")
        assert message.headers.names() == ()
        assert message.root.body() == b"body\r\n"
        message = Message.fromBytes(b"Subject: x")
        assert message.headers.get("subject") == "x"
        assert message.root.body() == b""
        assert Message.fromBytes(b"").headers.names() == ()


class TestContentType:
    def test_defaults(self) -> None:
        """
        Without Content-Type a part is text/plain; inside multipart/digest
        it is message/rfc822.
        """
        assert Message.fromBytes(b"Subject: x\r\n\r\nhi\r\n").root.contentType == "text/plain"
        digest = buildMessage(crlf("\nSubject: inner\n\nhello\n"), subtype="digest")
        child = Message.fromBytes(digest).root.children[0]
        assert child.contentType == "message/rfc822"
        assert child.children[0].headers.get("subject") == "inner"

    def test_parametersAndCase(self) -> None:
        """
        Type and subtype are lowercased; parameters are unquoted, keyed by
        lowercased name, and comments around the type are ignored.
        """
        raw = crlf('Content-Type: Text/HTML (comment); CHARSET="ISO-8859-1"; format=flowed\n\n')
        part = Message.fromBytes(raw).root
        assert part.contentType == "text/html"
        assert dict(part.params) == {"charset": "ISO-8859-1", "format": "flowed"}
        assert part.charset == "iso-8859-1"

    def test_rfc2231Parameters(self) -> None:
        """
        RFC 2231 continuations with a charset are joined and decoded, and
        win over a plain parameter of the same name.
        """
        raw = crlf(
            "Content-Type: application/x-stuff;\n"
            " title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
            " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
            ' title*2="isn\'t it!"; title="plain"\n\n'
        )
        part = Message.fromBytes(raw).root
        assert part.params["title"] == "This is even more ***fun*** isn't it!"

    def test_invalidAndDuplicate(self) -> None:
        """
        An invalid Content-Type falls back to the default with a defect; of
        two Content-Type fields the first counts, with a defect.
        """
        part = Message.fromBytes(crlf("Content-Type: garbage\n\nx\n")).root
        assert part.contentType == "text/plain"
        assert Defect.INVALID_CONTENT_TYPE in part.defects
        raw = crlf("Content-Type: text/html\nContent-Type: application/x-evil\n\nx\n")
        part = Message.fromBytes(raw).root
        assert part.contentType == "text/html"
        assert Defect.DUPLICATE_CONTENT_TYPE in part.defects

    def test_disposition(self) -> None:
        """
        Disposition types are lowercased; an unknown one counts as
        attachment (RFC 2183) with a defect; none is None.
        """
        assert Message.fromBytes(b"\r\n").root.disposition is None
        part = Message.fromBytes(crlf("Content-Disposition: INLINE; size=3\n\n")).root
        assert part.disposition == "inline"
        assert dict(part.dispositionParams) == {"size": "3"}
        part = Message.fromBytes(crlf("Content-Disposition: attachement\n\n")).root
        assert part.disposition == "attachment"
        assert Defect.UNKNOWN_DISPOSITION in part.defects


def filenamesOf(*fields: str) -> tuple[tuple[str, ...], str | None]:
    part = Message.fromBytes(crlf("\n".join(fields) + "\n\nbody\n")).root
    return part.filenames, part.filename


class TestFilenames:
    def test_plainForms(self) -> None:
        """
        Quoted and token filenames, and none at all.
        """
        assert filenamesOf('Content-Disposition: attachment; filename="a b.pdf"') == (
            ("a b.pdf",),
            "a b.pdf",
        )
        assert filenamesOf("Content-Disposition: attachment; filename=a.pdf") == (
            ("a.pdf",),
            "a.pdf",
        )
        assert filenamesOf("Content-Type: text/plain") == ((), None)

    def test_rfc2231WithCharsetAndContinuations(self) -> None:
        """
        filename* with a charset, and continuations mixing encoded and
        plain pieces, with a multi-octet character split across pieces.
        """
        assert filenamesOf(
            "Content-Disposition: attachment; filename*=iso-8859-1'de'K%F6ln.exe"
        ) == (("Köln.exe",), "Köln.exe")
        assert filenamesOf(
            "Content-Disposition: attachment;\n"
            " filename*0*=utf-8''%E2%82; filename*1*=%AC%20rate;\n"
            ' filename*2=".exe"'
        ) == (("€ rate.exe",), "€ rate.exe")

    def test_continuationOrder(self) -> None:
        """
        Continuations are joined in index order, not in the order written.
        """
        assert filenamesOf(
            'Content-Disposition: attachment; filename*1="exe"; filename*0="evil."'
        ) == (("evil.exe",), "evil.exe")

    def test_encodedWordInQuotes(self) -> None:
        """
        RFC 2047 inside a quoted name is decoded (clients do), and the form
        as written is kept as a candidate too.
        """
        word = "=?utf-8?B?" + base64.b64encode(b"invoice.pdf.exe").decode() + "?="
        assert filenamesOf(f'Content-Type: application/pdf; name="{word}"') == (
            ("invoice.pdf.exe", word),
            "invoice.pdf.exe",
        )

    def test_conflictingFilenameStar(self) -> None:
        """
        A filename and a filename* that disagree both count; filename* is
        the one clients show.
        """
        assert filenamesOf(
            'Content-Disposition: attachment; filename="invoice.pdf";',
            " filename*=utf-8''invoice.exe",
        ) == (("invoice.exe", "invoice.pdf"), "invoice.exe")

    def test_nameVersusFilename(self) -> None:
        """
        Content-Type name is a candidate after Content-Disposition
        filename; the unusual places come last; repeats appear once.
        """
        assert filenamesOf(
            'Content-Type: application/octet-stream; name="setup.exe"; filename="ct.js"',
            'Content-Disposition: attachment; filename="readme.txt"; name="setup.exe"',
        ) == (("readme.txt", "setup.exe", "ct.js"), "readme.txt")

    def test_everyOccurrence(self) -> None:
        """
        Names from a second Content-Disposition field and a repeated
        parameter are candidates too.
        """
        assert filenamesOf(
            'Content-Disposition: attachment; filename="a.txt"; filename="b.exe"',
            'Content-Disposition: attachment; filename="c.scr"',
        ) == (("a.txt", "b.exe", "c.scr"), "a.txt")

    def test_backslashes(self) -> None:
        """
        A quoted name with backslashes yields the unescaped name and the
        name as written between the quotes.
        """
        assert filenamesOf(r'Content-Disposition: attachment; filename="C:\\evil.exe"') == (
            ("C:\\evil.exe", "C:\\\\evil.exe"),
            "C:\\evil.exe",
        )

    def test_semicolonInQuotesAndUnterminated(self) -> None:
        """
        A semicolon inside quotes does not split; an unterminated quoted
        string runs to the end of the field.
        """
        assert filenamesOf('Content-Disposition: attachment; filename="a;b.exe"') == (
            ("a;b.exe",),
            "a;b.exe",
        )
        assert filenamesOf('Content-Disposition: attachment; filename="a.exe; x=1') == (
            ("a.exe; x=1",),
            "a.exe; x=1",
        )


class TestTransferEncoding:
    @pytest.mark.parametrize(
        ("value", "expected", "defects"),
        [
            ("base64", "base64", ()),
            ("BASE64", "base64", ()),
            (" Base64 ", "base64", ()),
            ("base64 \t", "base64", ()),
            ("Base\n 64", "base64", (Defect.IRREGULAR_TRANSFER_ENCODING,)),
            ("ba se64", "base64", (Defect.IRREGULAR_TRANSFER_ENCODING,)),
            ('"base64"', "base64", (Defect.IRREGULAR_TRANSFER_ENCODING,)),
            ("base64 (really)", "base64", (Defect.IRREGULAR_TRANSFER_ENCODING,)),
            ("Quoted-Printable", "quoted-printable", ()),
            ("x-uuencode", "x-uuencode", (Defect.UNKNOWN_TRANSFER_ENCODING,)),
        ],
    )
    def test_normalized(self, value: str, expected: str, defects: tuple[Defect, ...]) -> None:
        """
        Folded, padded, quoted and commented values are normalized (a known
        evasion); needing more than case or outer whitespace is a defect;
        unknown values are kept and flagged.
        """
        part = Message.fromBytes(crlf(f"Content-Transfer-Encoding: {value}\n\naGk=\n")).root
        assert part.transferEncoding == expected
        assert part.defects == defects

    def test_foldedEvasionDecodes(self) -> None:
        """
        The folded value does not hide the payload: it is base64-decoded.
        """
        raw = crlf("Content-Transfer-Encoding: Base\n 64\n\nTVqQAAMAAAAEAAAA\n")
        assert (
            Message.fromBytes(raw).root.payload() == b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00"
        )

    def test_missingAndDuplicate(self) -> None:
        """
        No field means 7bit; of two fields the first counts, with a defect.
        """
        assert Message.fromBytes(b"\r\nx").root.transferEncoding == "7bit"
        raw = crlf("Content-Transfer-Encoding: 7bit\nContent-Transfer-Encoding: base64\n\naGk=\n")
        part = Message.fromBytes(raw).root
        assert part.transferEncoding == "7bit"
        assert part.payload() == b"aGk=\r\n"
        assert Defect.DUPLICATE_TRANSFER_ENCODING in part.defects

    def test_unknownPassesThrough(self) -> None:
        """
        An unknown encoding's payload is the body as sent.
        """
        raw = crlf("Content-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n")
        assert Message.fromBytes(raw).root.payload() == b"begin 644 a\r\n"


def leaf(encoding: str, body: bytes) -> Message:
    return Message.fromBytes(
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body
    )


class TestPayload:
    def test_base64(self) -> None:
        """
        Clean base64 in lines decodes, with no defect.
        """
        part = leaf("base64", b"aGVsbG8g\r\nd29ybGQ=\r\n").root
        assert part.payload() == b"hello world"
        assert part.defects == ()

    def test_base64Lenient(self) -> None:
        """
        Junk characters are skipped, missing padding is supplied, a lone
        trailing sextet is dropped, concatenated padded blocks both decode;
        junk and bad padding are defects.
        """
        part = leaf("base64", b"aGVs*bG8g!d29y\r\nbGQ").root
        assert part.payload() == b"hello world"
        assert part.defects == (Defect.BAD_BASE64,)
        assert leaf("base64", b"aGVsbG8gd29ybGQx").root.payload() == b"hello world1"
        assert leaf("base64", b"aGk=aGk=").root.payload() == b"hihi"
        assert leaf("base64", b"aGk=a").root.payload() == b"hi"
        assert leaf("base64", b"").root.payload() == b""

    def test_quotedPrintable(self) -> None:
        """
        Soft line breaks (CRLF or LF), escapes, transport padding; a
        malformed escape is kept.
        """
        body = b"caf=C3=A9 =3D x=\r\ny  \r\nsoft=\nbreak =ZZ\r\n"
        part = leaf("quoted-printable", body).root
        assert part.payload() == b"caf\xc3\xa9 = xy\r\nsoftbreak =ZZ\r\n"
        assert part.text() == "café = xy\r\nsoftbreak =ZZ\r\n"

    def test_identityEncodings(self) -> None:
        """
        7bit, 8bit and binary bodies pass through, bare CR, LF and NUL
        included.
        """
        for encoding in ("7bit", "8bit", "binary"):
            assert leaf(encoding, b"a\rb\nc\0\xff").root.payload() == b"a\rb\nc\0\xff"

    def test_textCharsets(self) -> None:
        """
        text() decodes with the declared charset; unknown or non-text
        charsets fall back to UTF-8 with U+FFFD.
        """
        raw = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nK\xf6ln"
        assert Message.fromBytes(raw).root.text() == "Köln"
        for charset in (b"x-nonsense", b"base64", b"rot13", b"", b"punycode", b"unicode_escape"):
            raw = b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\nK\xf6ln \xc3\xa9"
            assert Message.fromBytes(raw).root.text() == "K\ufffdln é"


class TestStructure:
    def test_multipartRanges(self) -> None:
        """
        Parts, preamble and epilogue lie exactly where expected; a part's
        range excludes the delimiter lines and the line end before the next
        delimiter.
        """
        message = Message.fromBytes(MULTIPART)
        root = message.root
        assert root.isMultipart
        assert root.boundary == "XX"
        first, second, third = root.children
        assert [part.path for part in root.children] == [(0,), (1,), (2,)]
        assert MULTIPART[slice(*first.range)] == b"Content-Type: text/plain\r\n\r\nfirst"
        assert first.body() == b"first"
        assert MULTIPART[slice(*second.bodyRange)] == b"second"
        assert third.payload() == b"third"
        assert root.preamble() == b"preamble"
        assert root.epilogue() == b"epilogue\r\n"
        assert root.defects == ()
        assert list(message.walk()) == [root, first, second, third]
        assert message.partAt((1,)) is second
        with pytest.raises(IndexError):
            message.partAt((3,))

    @pytest.mark.parametrize("boundary", ["(+).?*", "a[b]{c}^$|\\", "?=", "'()+_,-./:=? x"])
    def test_specialCharacterBoundaries(self, boundary: str) -> None:
        """
        Boundaries full of regular expression metacharacters and RFC 2046
        specials split exactly where their delimiter lines are.
        """
        quoted = boundary.replace("\\", "\\\\")
        raw = crlf(
            f'Content-Type: multipart/mixed; boundary="{quoted}"\n\n'
            f"--{boundary}\n\none\n--{boundary}\n\ntwo\n--{boundary}--\n"
        )
        root = Message.fromBytes(raw).root
        assert root.boundary == boundary
        assert [part.body() for part in root.children] == [b"one", b"two"]
        assert root.defects == ()

    def test_delimiterPadding(self) -> None:
        """
        Spaces and tabs after a delimiter or close delimiter (RFC 2046
        transport padding) still delimit.
        """
        raw = crlf(
            "Content-Type: multipart/mixed; boundary=b\n\n--b \t\n\none\n--b  \n\ntwo\n--b-- \n"
        )
        root = Message.fromBytes(raw).root
        assert [part.body() for part in root.children] == [b"one", b"two"]
        assert root.epilogue() == b""
        assert root.defects == ()

    def test_boundaryLikeLine(self) -> None:
        """
        A line that starts with the delimiter but goes on is body content,
        recorded as a defect because some clients split there.
        """
        raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--bX\ntwo\n--b--\n")
        root = Message.fromBytes(raw).root
        assert [part.body() for part in root.children] == [crlf("one\n--bX\ntwo")]
        assert root.defects == (Defect.BOUNDARY_LIKE_LINE,)

    def test_missingFinalBoundary(self) -> None:
        """
        Without a close delimiter the last part runs to the end.
        """
        raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n")
        root = Message.fromBytes(raw).root
        assert [part.body() for part in root.children] == [b"one", b"two\r\n"]
        assert root.defects == (Defect.MISSING_FINAL_BOUNDARY,)

    def test_noDelimiterOrNoBoundary(self) -> None:
        """
        A multipart without any delimiter line, or without a boundary, is a
        leaf with a defect (its body is still there to scan).
        """
        raw = crlf("Content-Type: multipart/mixed; boundary=b\n\nno parts here\n")
        root = Message.fromBytes(raw).root
        assert not root.isMultipart
        assert root.children == ()
        assert root.payload() == b"no parts here\r\n"
        assert root.defects == (Defect.START_BOUNDARY_NOT_FOUND,)
        root = Message.fromBytes(crlf("Content-Type: multipart/mixed\n\n--b\n")).root
        assert root.boundary is None
        assert root.defects == (Defect.MISSING_BOUNDARY,)

    def test_headerlessParts(self) -> None:
        """
        A part starting with an empty line has no headers; a part starting
        with a body line has none either (missing separator); both are
        text/plain.
        """
        raw = crlf(
            "Content-Type: multipart/mixed; boundary=b\n\n"
            "--b\n\nempty headers\n--b\nno headers at all\n--b--\n"
        )
        first, second = Message.fromBytes(raw).root.children
        assert first.headers.names() == ()
        assert first.body() == b"empty headers"
        assert second.headers.names() == ()
        assert second.body() == b"no headers at all"
        assert second.contentType == "text/plain"
        assert second.defects == (Defect.MISSING_HEADER_BODY_SEPARATOR,)

    def test_nestedClosingBoundaries(self) -> None:
        """
        S/MIME shape: a nested close delimiter directly followed by the
        outer delimiter, no empty line in between.
        """
        raw = crlf(
            'Content-Type: multipart/signed; boundary="outer";\n'
            ' protocol="application/pkcs7-signature"\n\n'
            "--outer\n"
            "Content-Type: multipart/mixed; boundary=inner\n\n"
            "--inner\n\nsigned text\n--inner--\n"
            "--outer\n"
            "Content-Type: application/pkcs7-signature\n\nc2ln\n"
            "--outer--\n"
        )
        root = Message.fromBytes(raw).root
        mixed, signature = root.children
        assert mixed.body() == crlf("--inner\n\nsigned text\n--inner--")
        assert mixed.children[0].body() == b"signed text"
        assert mixed.epilogue() == b""
        assert signature.body() == b"c2ln"

    def test_nestedRfc822(self) -> None:
        """
        message/rfc822 inside message/rfc822: each has one child, the
        embedded message's top-level part, with its own headers.
        """
        innermost = "Subject: innermost\n\ndeep text\n"
        middle = f"Subject: middle\nContent-Type: message/rfc822\n\n{innermost}"
        raw = crlf(f"Subject: outer\nContent-Type: message/rfc822\n\n{middle}")
        message = Message.fromBytes(raw)
        parts = list(message.walk())
        assert [part.path for part in parts] == [(), (0,), (0, 0)]
        assert [part.headers.get("subject") for part in parts] == ["outer", "middle", "innermost"]
        assert parts[2].body() == b"deep text\r\n"
        assert parts[1].range == parts[0].bodyRange

    def test_encodedRfc822IsALeaf(self) -> None:
        """
        A base64-encoded message/rfc822 (forbidden, but sent) is a leaf
        with a defect; its payload is the decoded message.
        """
        inner = base64.b64encode(b"Subject: hidden\r\n\r\nx\r\n")
        raw = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n" + inner
        root = Message.fromBytes(raw).root
        assert root.children == ()
        assert root.defects == (Defect.ENCODED_CONTAINER,)
        assert Message.fromBytes(root.payload()).headers.get("subject") == "hidden"

    def test_depthLimit(self) -> None:
        """
        Nesting deeper than maxDepth stops: the part at the limit is an
        opaque leaf with a defect, however deep the rest goes.
        """
        depth = 60
        raw = b""
        for level in range(depth):
            raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
        raw += b"\r\nleaf\r\n"
        for level in reversed(range(depth)):
            raw += b"\r\n--b%d--" % level
        parts = list(Message.fromBytes(raw).walk())
        assert len(parts) == 31
        assert parts[-1].path == (0,) * 30
        assert parts[-1].defects == (Defect.DEPTH_LIMIT,)
        assert not parts[-1].isMultipart
        parts = list(Message.fromBytes(raw, maxDepth=2).walk())
        assert [part.path for part in parts] == [(), (0,), (0, 0)]
        assert len(list(Message.fromBytes(raw, maxDepth=100).walk())) == depth + 1

    def test_bareLFAndNul(self) -> None:
        """
        A bare-LF message with NUL octets in its parts and in its boundary
        splits like a CRLF one.
        """
        raw = (
            b'Content-Type: multipart/mixed; boundary="a\x00b"\n\n'
            b"--a\x00b\n\nnul\x00here\n--a\x00b\n\nsecond\r\n--a\x00b--\n"
        )
        root = Message.fromBytes(raw).root
        assert [part.body() for part in root.children] == [b"nul\x00here", b"second"]

    def test_outerDelimiterEndsInnerPart(self) -> None:
        """
        An outer delimiter inside an unterminated inner multipart ends the
        inner part (the boundary stack of RFC 2046).
        """
        raw = crlf(
            "Content-Type: multipart/mixed; boundary=out\n\n"
            "--out\nContent-Type: multipart/mixed; boundary=in\n\n--in\n\ninner\n"
            "--out\n\nsecond\n--out--\n"
        )
        inner, second = Message.fromBytes(raw).root.children
        assert inner.children[0].body() == b"inner"
        assert inner.defects == (Defect.MISSING_FINAL_BOUNDARY,)
        assert second.body() == b"second"


class TestEdits:
    def test_unchanged(self) -> None:
        """
        Without edits the output is the very input object.
        """
        message = Message.fromBytes(MULTIPART)
        list(message.walk())
        assert message.toBytes() is MULTIPART
        assert message.raw is MULTIPART
        assert not message.changed

    def test_headerAdded(self) -> None:
        """
        A new field goes on top, in the message's own line ending; the last
        one added comes first; the original is unchanged.
        """
        message = Message.fromBytes(MULTIPART)
        tagged = message.withHeaderAdded("X-Scan", "clean").withHeaderAdded("X-Two", "2")
        assert tagged.toBytes() == b"X-Two: 2\r\nX-Scan: clean\r\n" + MULTIPART
        assert tagged.changed
        assert tagged.raw is MULTIPART
        assert tagged.headers.get("x-scan") == "clean"
        assert not message.changed
        lf = Message.fromBytes(b"Subject: x\n\nbody\n").withHeaderAdded("X-A", "b")
        assert lf.toBytes() == b"X-A: b\nSubject: x\n\nbody\n"

    def test_headerAddedEncodedAndFolded(self) -> None:
        """
        Non-ASCII values become RFC 2047 words; long ASCII values are
        folded at spaces; both read back as the value given.
        """
        message = Message.fromBytes(b"Subject: x\r\n\r\n")
        value = "Grüße " * 20
        added = message.withHeaderAdded("X-Note", value)
        field = added.toBytes().split(b"\r\nSubject")[0]
        assert field.startswith(b"X-Note: =?utf-8?b?")
        assert all(len(line) <= 78 for line in field.split(b"\r\n"))
        assert added.headers.get("x-note") == value
        words = " ".join(["word"] * 40)
        added = message.withHeaderAdded("X-Long", words)
        field = added.toBytes().split(b"\r\nSubject")[0]
        assert b"\r\n word" in field
        assert all(len(line) <= 78 for line in field.split(b"\r\n"))
        assert added.headers.get("x-long") == words

    def test_headerAddedAfterFromLine(self) -> None:
        """
        A leading mbox 'From ' line stays first.
        """
        message = Message.fromBytes(b"From a Mon\r\nSubject: x\r\n\r\n")
        assert message.withHeaderAdded("X-A", "1").toBytes() == (
            b"From a Mon\r\nX-A: 1\r\nSubject: x\r\n\r\n"
        )

    def test_headerInjectionRefused(self) -> None:
        """
        A line break in a value, or an invalid name, is a ValueError.
        """
        message = Message.fromBytes(MULTIPART)
        with pytest.raises(ValueError):
            message.withHeaderAdded("X-A", "a\r\nBcc: victim@example.com")
        with pytest.raises(ValueError):
            message.withHeaderAdded("X A", "a")
        with pytest.raises(ValueError):
            message.withHeaderReplaced("Subject:", "a")

    def test_headerReplaced(self) -> None:
        """
        The first field of the name is rewritten in place, folding and all;
        the others stay unless removeOthers; without one it is added.
        """
        raw = crlf("Received: a\nSubject: old\n folded\nReceived: b\nTo: x\n\nbody\n")
        message = Message.fromBytes(raw)
        assert message.withHeaderReplaced("subject", "new").toBytes() == crlf(
            "Received: a\nsubject: new\nReceived: b\nTo: x\n\nbody\n"
        )
        assert message.withHeaderReplaced("Received", "c").toBytes() == crlf(
            "Received: c\nSubject: old\n folded\nReceived: b\nTo: x\n\nbody\n"
        )
        assert message.withHeaderReplaced("Received", "c", removeOthers=True).toBytes() == crlf(
            "Received: c\nSubject: old\n folded\nTo: x\n\nbody\n"
        )
        assert message.withHeaderReplaced("X-New", "1").toBytes() == b"X-New: 1\r\n" + raw

    def test_headerRemoved(self) -> None:
        """
        Every field of the name goes, continuation lines included; removing
        an absent field returns the same message.
        """
        raw = crlf("Received: a\n  more\nSubject: s\nreceived: b\n\nReceived: body\n")
        message = Message.fromBytes(raw)
        assert message.withHeaderRemoved("RECEIVED").toBytes() == crlf(
            "Subject: s\n\nReceived: body\n"
        )
        assert message.withHeaderRemoved("X-None") is message

    def test_addThenRemoveIsUnchanged(self) -> None:
        """
        Edits that cancel out give back the original object.
        """
        message = Message.fromBytes(MULTIPART)
        back = message.withHeaderAdded("X-A", "1").withHeaderRemoved("X-A")
        assert back.toBytes() is MULTIPART
        assert not back.changed

    def test_partReplaced(self) -> None:
        """
        The part's headers and body are replaced; delimiters, the other
        parts, preamble and epilogue stay octet for octet.
        """
        message = Message.fromBytes(MULTIPART)
        notice = textPart("removed", lineEnding=message.lineEnding)
        replaced = message.withPartReplaced(message.root.children[2], notice)
        start, end = message.root.children[2].range
        assert replaced.toBytes() == MULTIPART[:start] + notice + MULTIPART[end:]
        assert replaced.root.children[2].text() == "removed\r\n"
        assert replaced.root.children[2].headers.get("content-transfer-encoding") == "7bit"

    def test_partRemoved(self) -> None:
        """
        Removing a part takes its delimiter line with it, for the first,
        a middle and the last part.
        """
        message = Message.fromBytes(MULTIPART)
        first, second, third = message.root.children
        head = MULTIPART.split(b"--XX\r\n", 1)[0]
        tail = b"--XX--\r\nepilogue\r\n"
        one = b"--XX\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        two = b"--XX\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"
        three = (
            b"--XX\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\ndGhpcmQ=\r\n"
        )
        assert head + one + two + three + tail == MULTIPART
        assert message.withPartRemoved(first).toBytes() == head + two + three + tail
        assert message.withPartRemoved(second).toBytes() == head + one + three + tail
        assert message.withPartRemoved(third).toBytes() == head + one + two + tail

    def test_partRemovedWithoutCloseDelimiter(self) -> None:
        """
        The last part of a multipart missing its close delimiter can be
        removed; the part before keeps its octets.
        """
        raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n")
        message = Message.fromBytes(raw)
        removed = message.withPartRemoved(message.root.children[1])
        assert removed.toBytes() == crlf(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n"
        )

    def test_removalsRefused(self) -> None:
        """
        The top-level part, the only part of a multipart and the message
        inside a message/rfc822 part cannot be removed.
        """
        message = Message.fromBytes(MULTIPART)
        with pytest.raises(EditError):
            message.withPartRemoved(message.root)
        single = Message.fromBytes(buildMessage(textPart("only")))
        with pytest.raises(EditError):
            single.withPartRemoved(single.root.children[0])
        embedded = Message.fromBytes(crlf("Content-Type: message/rfc822\n\nSubject: x\n\ny\n"))
        with pytest.raises(EditError):
            embedded.withPartRemoved(embedded.root.children[0])

    def test_replacementWithEnclosingDelimiterRefused(self) -> None:
        """
        New octets that contain an enclosing multipart's delimiter would
        change the structure: refused.
        """
        message = Message.fromBytes(MULTIPART)
        with pytest.raises(EditError):
            message.withPartReplaced(message.root.children[0], b"\r\nx\r\n--XX\r\n\r\nevil")

    def test_staleParts(self) -> None:
        """
        Parts found before edits can still be edited after them: header
        additions, removals and replacements elsewhere move them, and the
        result is the same as making the edits on fresh parts.
        """
        message = Message.fromBytes(MULTIPART)
        first, second, third = message.root.children
        notice = textPart("gone")
        edited = (
            message.withHeaderAdded("X-A", "1")
            .withPartRemoved(first)
            .withPartReplaced(third, notice)
            .withHeaderRemoved("Subject")
        )
        start, end = third.range
        expected = (
            b"X-A: 1\r\n"
            + MULTIPART[: first.range[0] - len(b"--XX\r\n")].replace(
                b"Subject: three parts\r\n", b""
            )
            + MULTIPART[second.range[0] - len(b"--XX\r\n") : start]
            + notice
            + MULTIPART[end:]
        )
        assert edited.toBytes() == expected
        assert [part.body() for part in edited.root.children] == [b"second", b"gone\r\n"]

    def test_nestedEditsAndAncestorReplacement(self) -> None:
        """
        After editing a nested part, its ancestor can still be replaced as
        a whole (the ancestor's range grew with the edit); after replacing
        an ancestor, its old descendants are gone.
        """
        inner = crlf(
            "Content-Type: multipart/alternative; boundary=in\n\n--in\n\na\n--in\n\nb\n--in--"
        )
        raw = buildMessage(inner, textPart("c"))
        message = Message.fromBytes(raw)
        nested = message.root.children[0]
        leafA, leafB = nested.children
        once = message.withPartReplaced(leafA, b"\r\nAAAA")
        twice = once.withPartRemoved(leafB)
        assert twice.root.children[0].children[0].body() == b"AAAA"
        assert len(twice.root.children[0].children) == 1
        final = twice.withPartReplaced(nested, b"\r\nflat")
        assert final.root.children[0].body() == b"flat"
        with pytest.raises(EditError):
            final.withPartReplaced(leafA, b"\r\nagain")
        with pytest.raises(EditError):
            once.withPartRemoved(leafA)

    def test_editInsideRfc822(self) -> None:
        """
        A part of a message attached as message/rfc822 is replaced in place.
        """
        attached = buildMessage(textPart("inner one"), textPart("inner two"), boundary="in")
        raw = buildMessage(b"Content-Type: message/rfc822\r\n\r\n" + attached)
        message = Message.fromBytes(raw)
        target = message.partAt((0, 0, 1))
        edited = message.withPartReplaced(target, textPart("replaced"))
        assert edited.partAt((0, 0, 1)).text() == "replaced\r\n"
        assert edited.partAt((0, 0, 0)).text() == "inner one\r\n"

    def test_foreignParts(self) -> None:
        """
        A part of another message, or of a different edit of the same
        message, is refused.
        """
        message = Message.fromBytes(MULTIPART)
        other = Message.fromBytes(MULTIPART)
        with pytest.raises(EditError):
            message.withPartRemoved(other.root.children[0])
        branchA = message.withHeaderAdded("X-A", "1")
        branchB = message.withHeaderAdded("X-B", "2")
        with pytest.raises(EditError):
            branchB.withPartRemoved(branchA.root.children[0])
        with pytest.raises(TypeError):
            message.withPartRemoved("0")  # type: ignore[arg-type]

    def test_withBytes(self) -> None:
        """
        Replacing the whole message: new octets out, old parts refused;
        the same octets give back the same message.
        """
        message = Message.fromBytes(MULTIPART)
        part = message.root.children[0]
        replaced = message.withBytes(b"Subject: new\r\n\r\nnew\r\n")
        assert replaced.toBytes() == b"Subject: new\r\n\r\nnew\r\n"
        assert replaced.raw is MULTIPART
        assert replaced.headers.get("subject") == "new"
        with pytest.raises(EditError):
            replaced.withPartRemoved(part)
        assert message.withBytes(MULTIPART) is message

    def test_lineEnding(self) -> None:
        """
        The line ending is the first line's.
        """
        assert Message.fromBytes(b"A: b\r\n\nc\n").lineEnding == b"\r\n"
        assert Message.fromBytes(b"A: b\n\r\n").lineEnding == b"\n"
        assert Message.fromBytes(b"no line end").lineEnding == b"\r\n"


class TestTextPart:
    def test_shortAscii(self) -> None:
        """
        Short ASCII text is 7bit and inline, in the given line ending.
        """
        assert textPart("Removed.\nSorry.") == (
            b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: 7bit\r\n"
            b"Content-Disposition: inline\r\n"
            b"\r\n"
            b"Removed.\r\nSorry.\r\n"
        )
        assert textPart("x", lineEnding=b"\n").endswith(b"inline\n\nx\n")

    @pytest.mark.parametrize(
        ("text", "encoding"),
        [
            ("Der Anhang wurde entfernt. Grüße", "quoted-printable"),
            ("a" * 200, "quoted-printable"),
            ("日本語のテキスト", "base64"),
        ],
    )
    def test_encodings(self, text: str, encoding: str) -> None:
        """
        Mostly-ASCII text is quoted-printable, other text base64; it reads
        back as the text given.
        """
        part = Message.fromBytes(textPart(text)).root
        assert part.transferEncoding == encoding
        assert part.text() == text + "\r\n"
        assert all(len(line) <= 76 for line in part.body().split(b"\r\n"))

    def test_filename(self) -> None:
        """
        With a filename the part is an attachment with that name, RFC 2231
        encoded when it is not ASCII.
        """
        assert Message.fromBytes(textPart("x", filename='a "b".txt')).root.filename == 'a "b".txt'
        part = Message.fromBytes(textPart("x", filename="Entfernt – Köln.txt")).root
        assert part.disposition == "attachment"
        assert part.filenames == ("Entfernt – Köln.txt",)


class TestBuildMessage:
    def test_singlePart(self) -> None:
        """
        Without parts, buildMessage gives a text message with the default
        headers.
        """
        message = Message.fromBytes(buildMessage(text="Hi.\n"))
        assert message.headers.get("subject") == "test message"
        assert message.root.contentType == "text/plain"
        assert message.root.text() == "Hi.\r\n"

    def test_multipart(self) -> None:
        """
        With parts, buildMessage gives a multipart of exactly those parts,
        with the preamble, epilogue, subtype and line ending asked for.
        """
        parts = (
            textPart("a", lineEnding=b"\n"),
            attachmentPart(b"\0\1", "ö.bin", lineEnding=b"\n"),
        )
        raw = buildMessage(
            *parts,
            headers=[("Subject", "Größe")],
            subtype="alternative",
            preamble=b"pre",
            epilogue=b"post\n",
            lineEnding=b"\n",
        )
        assert b"\r" not in raw
        message = Message.fromBytes(raw)
        root = message.root
        assert message.headers.get("subject") == "Größe"
        assert root.contentType == "multipart/alternative"
        assert (root.preamble(), root.epilogue()) == (b"pre", b"post\n")
        assert [raw[slice(*part.range)] for part in root.children] == list(parts)
        assert root.children[1].filename == "ö.bin"
        assert root.children[1].payload() == b"\0\1"
