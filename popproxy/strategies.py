"""
Hypothesis strategies for popproxy and for plugin authors: random but
plausible MIME messages, as bytes, to make sure a filter never crashes
whatever arrives.

This module needs hypothesis (installed with C{pip install 'popproxy[test]'});
L{popproxy.testing}, which builds messages by hand and runs filters, does not.

    from hypothesis import given
    from popproxy.strategies import mimeMessages
    from popproxy.testing import loadPlugin, runFilter

    @given(mimeMessages())
    def test_myFilterNeverCrashes(raw: bytes) -> None:
        runFilter(loadPlugin("plugins/my_filter.py"), raw)
"""

from __future__ import annotations

import base64
import string
from collections.abc import Sequence
from urllib.parse import quote

from hypothesis import strategies as st

from popproxy._mimecodec import encodeBase64Lines, encodeQuotedPrintable

__all__ = ["mimeMessages"]

_WORDS = st.sampled_from(
    ["hello", "invoice", "report", "Grüße", "naïve", "日本語", "x", "--", "=", "dear", "FYI"]
)
_ASCII_WORDS = st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)
_BOUNDARY_SPECIALS = "'()+_,-./:=? "
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


@st.composite
def _lineOfText(draw: st.DrawFn, ascii: bool = False) -> str:
    words = draw(st.lists(_ASCII_WORDS if ascii else _WORDS, max_size=12))
    return " ".join(words)


@st.composite
def _field(draw: st.DrawFn, name: bytes, value: bytes, eol: bytes) -> bytes:
    """
    A header field, sometimes folded at random spaces with a space or a
    tab, sometimes with no space after the colon.
    """
    words = value.split(b" ")
    out = name + draw(st.sampled_from([b": ", b": ", b":", b":\t"])) + words[0]
    for word in words[1:]:
        if draw(st.integers(0, 5)) == 0:
            out += eol + draw(st.sampled_from([b" ", b"\t", b"  "])) + word
        else:
            out += b" " + word
    return out + eol


@st.composite
def _subject(draw: st.DrawFn) -> bytes:
    text = draw(_lineOfText())
    style = draw(st.sampled_from(["plain", "b", "q", "8bit", "long", "nul"]))
    octets = text.encode("utf-8")
    if style == "b":
        return b"=?utf-8?B?" + base64.b64encode(octets) + b"?= tail"
    if style == "q":
        encoded = b"".join(
            bytes((octet,)) if chr(octet).isalnum() and octet < 0x80 else b"=%02X" % octet
            for octet in octets
        )
        return b"=?UTF-8?Q?" + encoded + b"?="
    if style == "8bit":
        return octets or b"\xff"
    if style == "long":
        return b"A" * draw(st.integers(200, 2000))
    if style == "nul":
        return b"with\x00nul"
    return text.encode("ascii", "replace") or b"(none)"


@st.composite
def _boundary(draw: st.DrawFn, counter: list[int]) -> bytes:
    """
    A boundary with RFC 2046 special characters.  Each one in a message
    ends with a distinct C{_n=}, so no boundary is a prefix of another.
    """
    counter[0] += 1
    prefix = draw(st.text(_BOUNDARY_SPECIALS, max_size=8))
    token = draw(st.text(string.ascii_letters + string.digits, min_size=1, max_size=20))
    return f"{prefix}{token}_{counter[0]}=".encode("ascii")


@st.composite
def _filenameParameters(draw: st.DrawFn, eol: bytes) -> tuple[bytes, bytes]:
    """
    Filename parameters in one of the styles clients meet: returns what to
    append to the Content-Type and Content-Disposition values.
    """
    stem = draw(_ASCII_WORDS)
    extension = draw(st.sampled_from(["pdf", "exe", "txt", "zip", "js"]))
    name = f"{stem}.{extension}"
    fancy = f"ré{stem}€.{extension}".encode()
    style = draw(
        st.sampled_from(
            ["none", "quoted", "token", "rfc2231", "continued", "name", "rfc2047", "conflict"]
        )
    )
    folded = b";" + eol + b"\t" if draw(st.booleans()) else b"; "
    if style == "none":
        return b"", b""
    if style == "quoted":
        return b"", folded + b'filename="' + name.encode() + b'"'
    if style == "token":
        return b"", folded + b"filename=" + name.encode()
    if style == "rfc2231":
        return b"", folded + b"filename*=UTF-8''" + quote(fancy).encode()
    if style == "continued":
        encoded = quote(fancy).encode()
        return b"", (
            folded
            + b"filename*0*=utf-8'en'"
            + encoded[:5]
            + b";"
            + eol
            + b" filename*1*="
            + encoded[5:]
            + b'; filename*2="x"'
        )
    if style == "name":
        return b'; name="' + name.encode() + b'"', b""
    if style == "rfc2047":
        word = b"=?utf-8?B?" + base64.b64encode(fancy) + b"?="
        return b'; name="' + word + b'"', folded + b'filename="' + word + b'"'
    return b"", folded + b'filename="' + name.encode() + b"\"; filename*=utf-8''" + quote(
        fancy
    ).encode()


@st.composite
def _leaf(draw: st.DrawFn, eol: bytes) -> tuple[list[bytes], bytes]:
    """
    A leaf entity: its header fields and its body.
    """
    kind = draw(st.sampled_from(["text", "qp", "base64", "binary", "html"]))
    lines = [line.encode() for line in draw(st.lists(_lineOfText(), max_size=6))]
    if kind in ("text", "html"):
        subtype = b"plain" if kind == "text" else b"html"
        encoding = b"8bit" if any(not line.isascii() for line in lines) else b"7bit"
        fields = [
            draw(_field(b"Content-Type", b"text/" + subtype + b"; charset=utf-8", eol)),
            draw(_field(b"Content-Transfer-Encoding", encoding, eol)),
        ]
        return fields, b"".join(line + eol for line in lines)
    if kind == "qp":
        fields = [
            draw(_field(b"Content-Type", b'text/plain; charset="UTF-8"', eol)),
            draw(_field(b"Content-Transfer-Encoding", b"quoted-printable", eol)),
        ]
        return fields, encodeQuotedPrintable(lines, eol)
    typeExtra, dispositionExtra = draw(_filenameParameters(eol))
    contentType = b"application/octet-stream" + typeExtra
    disposition = draw(st.sampled_from([b"attachment", b"inline", b"Attachment"]))
    fields = [
        draw(_field(b"Content-Type", contentType, eol)),
        draw(_field(b"Content-Disposition", disposition + dispositionExtra, eol)),
    ]
    data = draw(st.binary(max_size=200))
    if kind == "base64":
        encoding = draw(
            st.sampled_from([b"base64", b"BASE64", b"base64  ", b"Base" + eol + b" 64"])
        )
        fields.append(b"Content-Transfer-Encoding: " + encoding + eol)
        body = encodeBase64Lines(data, eol)
        if draw(st.booleans()):
            body = body.rstrip(b"=" + eol) + eol  # padding lost in transit
        return fields, body
    fields.append(b"Content-Transfer-Encoding: binary" + eol)
    # Bare CR, LF and NUL, but no line that could pass for a delimiter.
    return fields, data.replace(b"--", b"-\x00") + eol


@st.composite
def _entity(
    draw: st.DrawFn,
    eol: bytes,
    depth: int,
    maxDepth: int,
    maxParts: int,
    counter: list[int],
    multipart: bool = False,
) -> tuple[list[bytes], bytes]:
    """
    Any entity: a leaf, a multipart, or a message/rfc822 part; always a
    multipart if C{multipart}.
    """
    kinds = ["leaf", "leaf", "headerless"]
    if depth < maxDepth:
        kinds += ["multipart", "multipart", "message"]
    kind = "multipart" if multipart else draw(st.sampled_from(kinds))
    if kind == "headerless":
        return [], b"".join(line.encode() + eol for line in draw(st.lists(_lineOfText())))
    if kind == "leaf":
        return draw(_leaf(eol))
    if kind == "message":
        fields, body = draw(_message(eol, depth + 1, maxDepth, maxParts, counter))
        return [draw(_field(b"Content-Type", b"message/rfc822", eol))], b"".join(fields) + body
    boundary = draw(_boundary(counter))
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"signed", b"digest"]))
    safe = all(chr(octet) in _TOKEN_CHARS for octet in boundary)
    quoted = boundary if safe and draw(st.booleans()) else b'"' + boundary + b'"'
    fields = [draw(_field(b"Content-Type", b"multipart/" + subtype + b"; boundary=" + quoted, eol))]
    delimiter = b"--" + boundary
    padding = st.sampled_from([b"", b"", b" ", b"\t ", b"  "])
    body = b""
    if draw(st.booleans()):
        body += draw(_lineOfText(ascii=True)).encode() + eol
    for _ in range(draw(st.integers(1, maxParts))):
        if subtype == b"digest" and draw(st.booleans()):
            # A digest part without Content-Type is a message/rfc822.
            childFields, childBody = draw(_message(eol, depth + 1, maxDepth, maxParts, counter))
            child = eol + b"".join(childFields) + childBody
        else:
            childFields, childBody = draw(_entity(eol, depth + 1, maxDepth, maxParts, counter))
            child = b"".join(childFields) + eol + childBody
        body += delimiter + draw(padding) + eol + child + eol
    if draw(st.integers(0, 9)) != 0:
        body += delimiter + b"--" + draw(padding) + eol
        if draw(st.booleans()):
            body += draw(_lineOfText(ascii=True)).encode() + eol
    return fields, body


@st.composite
def _message(
    draw: st.DrawFn,
    eol: bytes,
    depth: int,
    maxDepth: int,
    maxParts: int,
    counter: list[int],
    multipart: bool = False,
) -> tuple[list[bytes], bytes]:
    """
    A message: top-level fields (with the entity's fields among them) and
    the body, which starts with the empty line.
    """
    fields = [
        draw(_field(b"Received", b"from relay.example.com by mx.example.net; Mon, 1 Jan 2024", eol))
        for _ in range(draw(st.integers(0, 2)))
    ]
    fields.append(draw(_field(b"From", b"Alice <alice@example.com>", eol)))
    fields.append(draw(_field(b"Subject", draw(_subject()), eol)))
    fields.append(b"MIME-Version: 1.0" + eol)
    entityFields, body = draw(_entity(eol, depth, maxDepth, maxParts, counter, multipart))
    fields.extend(entityFields)
    return fields, eol + body


def mimeMessages(
    *,
    lineEndings: Sequence[bytes] = (b"\r\n", b"\n"),
    maxDepth: int = 3,
    maxParts: int = 3,
    multipart: bool = False,
) -> st.SearchStrategy[bytes]:
    """
    A hypothesis strategy for random but plausible MIME messages, as bytes:
    nested multiparts (mixed, alternative, signed, digest ...) with boundaries
    full of special characters, preambles and epilogues, delimiter lines
    with trailing whitespace, sometimes no close delimiter; message/rfc822
    parts; text, quoted-printable, base64 and binary leaves (bare CR, LF,
    NUL); headerless parts; filenames in every style (plain, token, RFC 2231
    with continuations and charsets, RFC 2047 in quotes, conflicting
    C{filename}/C{filename*}, Content-Type C{name}); folded header fields,
    folded or padded Content-Transfer-Encoding values, 8-bit, NUL and
    2,000-character header values; CRLF or bare LF line ends, sometimes no
    line end at the end.

    @param lineEndings: the line endings to choose from, one per message.
    @param maxDepth: the deepest nesting of multiparts and messages.
    @param maxParts: the most parts in one multipart.
    @param multipart: the top-level part is always a multipart (with
        C{maxDepth} at least 1).
    """

    return _messages(tuple(lineEndings), maxDepth, maxParts, multipart)


@st.composite
def _messages(
    draw: st.DrawFn,
    lineEndings: tuple[bytes, ...],
    maxDepth: int,
    maxParts: int,
    multipart: bool,
) -> bytes:
    """
    One message of L{mimeMessages}, sometimes without its last line end.
    """
    eol = draw(st.sampled_from(list(lineEndings)))
    fields, body = draw(_message(eol, 0, maxDepth, maxParts, [0], multipart))
    raw = b"".join(fields) + body
    if draw(st.integers(0, 9)) == 0:
        raw = raw.rstrip(b"\r\n")
    return raw
