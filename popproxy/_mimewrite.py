"""
The few octets popproxy writes itself: new header fields and small text
parts (notices that replace removed attachments).

Everything else in an outgoing message is copied from the incoming one, so
this is the only place where line endings, folding and encoding are chosen.
"""

from __future__ import annotations

import base64
import re

from popproxy._mimecodec import encodeBase64Lines, encodeQuotedPrintable

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_PLAIN = re.compile(r"[\x20-\x7e\t]*")
_NEWLINES = re.compile(r"\r\n|\r|\n")
#: Octets that may stand for themselves in an RFC 2231 value.
_ATTRIBUTE_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!#$&+^`|"
)

#: RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters.
_FOLD_AT = 78


def checkFieldName(name: str) -> None:
    """
    @raise ValueError: C{name} is not a valid field name (RFC 5322 ftext).
    """
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"invalid header field name: {name!r}")


def encodeField(name: str, value: str, lineEnding: bytes) -> bytes:
    """
    A complete header field, ending with C{lineEnding}.

    Printable ASCII values are folded at spaces so that lines stay within
    78 characters where possible; any other value is written as RFC 2047
    encoded-words (UTF-8, base64), one per line.

    @raise ValueError: the name is invalid, or the value contains a line
        break (a header injection, never what a filter means).
    """
    checkFieldName(name)
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the value of header field {name}")
    if _PLAIN.fullmatch(value):
        return _folded(name, value, lineEnding)
    return _encoded(name, value, lineEnding)


def _folded(name: str, value: str, lineEnding: bytes) -> bytes:
    lines: list[str] = []
    current = f"{name}:"
    # Every chunk but the first starts with the space it is folded before,
    # so unfolding (removing the line ends) gives the value back exactly.
    chunks = re.findall(r"[ \t]*[^ \t]+|[ \t]+$", value)
    for index, chunk in enumerate(chunks):
        if index == 0:
            current += " " + chunk
        elif len(current) + len(chunk) > _FOLD_AT and current.strip(" \t") and chunk[0] in " \t":
            lines.append(current)
            current = chunk
        else:
            current += chunk
    if not chunks:
        current += " "
    lines.append(current)
    return lineEnding.join(line.encode("ascii") for line in lines) + lineEnding


def _encoded(name: str, value: str, lineEnding: bytes) -> bytes:
    # Each line holds one word: the first after "Name: ", the others after
    # a space.
    encoded = encodedWords(value, firstRoom=_FOLD_AT - len(name) - 2)
    return name.encode("ascii") + b": " + (lineEnding + b" ").join(encoded) + lineEnding


def encodedWords(text: str, firstRoom: int = 75) -> list[bytes]:
    """
    C{text} as RFC 2047 encoded-words (UTF-8, base64), each at most 75
    characters long and the first at most C{firstRoom}; a character is
    never split between two words.  Join them with spaces (decoders drop
    the whitespace between two encoded-words) or with folds.
    """
    # A word's octets are what its base64 text can carry.
    budget = _wordOctets(firstRoom)
    words: list[bytes] = []
    chunk = b""
    for char in text:
        octets = char.encode("utf-8", "replace")
        if chunk and len(chunk) + len(octets) > budget:
            words.append(chunk)
            chunk = b""
            budget = _wordOctets(75)
        chunk += octets
    if chunk:
        words.append(chunk)
    return [b"=?utf-8?b?" + base64.b64encode(word) + b"?=" for word in words]


def _wordOctets(room: int) -> int:
    """
    How many octets fit in a base64 encoded-word of at most C{room}
    characters (and at most 75, RFC 2047 section 2); at least a few, so a
    long field name cannot stop progress.
    """
    characters = min(room, 75) - len("=?utf-8?b??=")
    return max(4, characters // 4 * 3)


def textPart(text: str, *, filename: str | None = None, lineEnding: bytes = b"\r\n") -> bytes:
    """
    A complete C{text/plain; charset=utf-8} MIME part (header fields, empty
    line, body), for example a notice replacing a removed attachment.

    The body is 7bit when it is short-lined ASCII, quoted-printable when it
    is mostly ASCII, base64 otherwise.  Line breaks in C{text} become
    C{lineEnding}, which should be the message's own (L{Message.lineEnding}).

    @param filename: if given, the part is an attachment with this name
        (RFC 2231 encoded if it is not ASCII); otherwise it is inline.
    """
    if lineEnding not in (b"\r\n", b"\n"):
        raise ValueError("lineEnding must be CRLF or LF")
    lines = [line.encode("utf-8", "replace") for line in _NEWLINES.split(text)]
    if lines[-1] == b"":
        lines.pop()
    octets = b"".join(lines)
    if octets.isascii() and all(len(line) <= 76 for line in lines):
        encoding = "7bit"
        body = b"".join(line + lineEnding for line in lines)
    elif sum(octet >= 0x80 for octet in octets) * 3 <= len(octets):
        encoding = "quoted-printable"
        body = encodeQuotedPrintable(lines, lineEnding)
    else:
        encoding = "base64"
        body = encodeBase64Lines(lineEnding.join(lines) + lineEnding, lineEnding)
    if filename is None:
        disposition = "inline"
    elif _PLAIN.fullmatch(filename) and "\t" not in filename:
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        disposition = f'attachment; filename="{quoted}"'
    else:
        percent = "".join(
            chr(octet) if octet in _ATTRIBUTE_CHARS else f"%{octet:02X}"
            for octet in filename.encode("utf-8", "replace")
        )
        disposition = f"attachment; filename*=utf-8''{percent}"
    head = (
        b'Content-Type: text/plain; charset="utf-8"'
        + lineEnding
        + b"Content-Transfer-Encoding: "
        + encoding.encode("ascii")
        + lineEnding
        + encodeField("Content-Disposition", disposition, lineEnding)
    )
    return head + lineEnding + body
