"""
Content transfer encodings and charsets: turning encoded octets into the
octets (or text) they stand for, and back for the parts we write ourselves.

Decoders are lenient the way mail clients are: a filter must see what a
client would show, and must never crash on what an attacker sends.  Every
function here accepts any input and works on whole buffers with C-level
``bytes`` methods.
"""

from __future__ import annotations

import binascii
import codecs
import re

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64_OR_PAD = bytes(b for b in range(256) if b not in _BASE64_ALPHABET + b"=")
_WHITESPACE = b" \t\r\n"
_CLEAN_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_PADDING = re.compile(rb"=+")
_SPLIT_SLICE = 32768

# RFC 2045 section 6.7 rule 3: trailing whitespace on a quoted-printable
# line was added in transport and must be removed before decoding.  The
# look-behind lets a run of blanks be tried from its first octet only, and
# the possessive run is never given back: a long run of blanks that does not
# end its line costs one pass, not one pass per blank.
_QP_TRAILING_SPACE = re.compile(rb"(?<![ \t])[ \t]++(?=\r?\n|\Z)")

# Names that promise nothing about the octets: decode those as UTF-8, which
# also covers mislabelled 8-bit text in practice.
_UNLABELLED = frozenset({"", "us-ascii", "ascii", "unknown-8bit", "x-unknown", "unknown", "8bit"})

# Python text codecs that are no mail charset: they would interpret escapes
# (unicode-escape), refuse everything (undefined) or cost more than linear
# time on crafted input (punycode, idna).
_NOT_CHARSETS = frozenset(
    {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined", "charmap"}
)


def decodeBase64(data: bytes) -> bytes:
    """
    Decode base64 the way lenient clients do: characters outside the
    alphabet are skipped, missing padding is supplied, and data after a
    padding sign starts a new run (some mailers concatenate encoded blocks).
    """
    kept = data.translate(None, _NOT_BASE64_OR_PAD)
    if b"=" not in kept:
        return _decodeRun(kept)
    # Split a slice at a time (each ending at a padding sign, so no run is
    # cut): splitting all at once would hold every run and every decoded
    # run as an object of its own, about 20 times the input for a body of
    # "QQ==" quanta.
    out = bytearray()
    start, end = 0, len(kept)
    while start < end:
        stop = kept.find(b"=", min(start + _SPLIT_SLICE, end))
        stop = end if stop == -1 else stop
        out += b"".join([_decodeRun(run) for run in _PADDING.split(kept[start:stop])])
        start = stop
    return bytes(out)


def _decodeRun(run: bytes) -> bytes:
    extra = len(run) % 4
    if extra == 1:
        # One sextet alone encodes no octet; drop it.
        run = run[:-1]
    elif extra:
        run += b"=" * (4 - extra)
    return binascii.a2b_base64(run)


def isCleanBase64(data: bytes) -> bool:
    """
    Whether C{data} is well-formed base64 apart from line breaks and
    whitespace: the alphabet only, padding only at the end, whole quanta.
    """
    compact = data.translate(None, _WHITESPACE)
    return len(compact) % 4 == 0 and _CLEAN_BASE64.fullmatch(compact) is not None


def decodeQuotedPrintable(data: bytes) -> bytes:
    """
    Decode quoted-printable; malformed escapes are kept as they are.
    """
    return binascii.a2b_qp(_QP_TRAILING_SPACE.sub(b"", data))


def decodeQEncoding(data: bytes) -> bytes:
    """
    Decode the RFC 2047 "Q" encoding (quoted-printable with C{_} for space).
    """
    return binascii.a2b_qp(data, header=True)


def textCodec(charset: str | None) -> str:
    """
    The Python codec to decode text declared with C{charset}: the charset's
    codec if Python knows it as a text encoding, UTF-8 otherwise.
    """
    name = (charset or "").strip().strip('"').strip().lower()
    if name in _UNLABELLED:
        return "utf-8"
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return "utf-8"
    # base64, rot13, zlib and friends are codecs but not text encodings.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return "utf-8"
    return info.name


def decodeText(data: bytes, charset: str | None) -> str:
    """
    Decode octets declared as C{charset}; undecodable octets become U+FFFD,
    unknown charsets fall back to UTF-8.  Never raises.
    """
    codec = textCodec(charset)
    try:
        return data.decode(codec, "replace")
    except (UnicodeError, LookupError, ValueError, TypeError):
        # A few codecs (idna, punycode) refuse some input even with
        # errors="replace".
        return data.decode("utf-8", "replace")


def encodeBase64Lines(data: bytes, lineEnding: bytes) -> bytes:
    """
    Base64 in lines of 76 characters, each ending with C{lineEnding}.
    """
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join(encoded[i : i + 76] + lineEnding for i in range(0, len(encoded), 76))


_QP_SAFE = frozenset(range(33, 127)) - {ord("=")}


def encodeQuotedPrintable(lines: list[bytes], lineEnding: bytes) -> bytes:
    """
    Quoted-printable for text given as lines (without line ends): lines of
    at most 76 characters, soft line breaks where needed, trailing
    whitespace escaped, each line ending with C{lineEnding}.
    """
    out: list[bytes] = []
    for line in lines:
        tokens = [
            bytes((octet,)) if octet in _QP_SAFE or octet in (9, 32) else b"=%02X" % octet
            for octet in line
        ]
        if tokens and tokens[-1] in (b" ", b"\t"):
            tokens[-1] = b"=%02X" % tokens[-1][0]
        current = b""
        for token in tokens:
            if len(current) + len(token) > 75:
                out.append(current + b"=" + lineEnding)
                current = b""
            current += token
        out.append(current + lineEnding)
    return b"".join(out)
