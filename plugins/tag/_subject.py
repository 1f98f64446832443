"""
Subject prefixes spliced in front of the Subject as it was sent: an RFC
2047-encoded or folded subject is never decoded or re-encoded, and every
other octet of the message stays as it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from popproxy.message import Message, encodedWords

_ENCODED_WORD = re.compile(rb"=\?[^?\s]++\?[BbQq]\?[^?\s]*+\?=")
#: RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters.
_FOLD_AT = 78


def withSubjectPrefixes(message: Message, prefixes: Sequence[str]) -> tuple[Message, list[str]]:
    """
    Put C{prefixes} (in order, space-separated) in front of the first
    Subject field; add a Subject if there is none.  A prefix the subject
    already shows (decoded, without regard to case) is not added again.

    The prefix is spliced in right after C{Subject:}: the rest of the field
    (encoded-words, folding, 8-bit octets, the field name's spelling) and
    every other octet of the message stay exactly as they were.  A prefix
    that is not ASCII becomes encoded-words of its own.  If the first line
    would grow beyond 78 characters, the field is folded after the prefix.

    @return: the message (the same object if nothing was added) and the
        prefixes added.
    """
    current = (message.headers.get("Subject") or "").casefold()
    wanted = [prefix for prefix in dict.fromkeys(prefixes) if prefix.casefold() not in current]
    if not wanted:
        return message, []
    text = " ".join(wanted)
    rawValues = message.headers.rawValues("Subject")
    if not rawValues:
        return message.withHeaderAdded("Subject", text), wanted
    data = message.toBytes()
    value = rawValues[0]
    start, end = message.headers.fieldRanges("Subject")[0]
    field = data[start:end]
    lineEnd = b"\r\n" if field.endswith(b"\r\n") else b"\n" if field.endswith(b"\n") else b""
    valueEnd = end - len(lineEnd)
    valueStart = valueEnd - len(value)
    if data[valueStart:valueEnd] != value or valueStart <= start:
        raise ValueError("the Subject field is not where its value says it is")
    firstLineStart = data[start:valueStart]
    newValue = _prefixed(value, text, firstLineStart, lineEnd or message.lineEnding)
    edited = data[:valueStart] + newValue + data[valueEnd:]
    return message.withBytes(edited), wanted


def _prefixed(value: bytes, text: str, fieldStart: bytes, fold: bytes) -> bytes:
    """
    The Subject value C{value} with C{text} in front, encoded when it is not
    ASCII, folded after it when the first line (starting with
    C{fieldStart}) would grow beyond 78 characters.
    """
    rest = value.lstrip(b" \t\r\n")
    if text.isascii():
        prefix = text.encode("ascii")
    else:
        # Whitespace between two encoded-words is dropped when decoding,
        # so the space before an encoded rest goes inside the prefix.
        spaced = _ENCODED_WORD.match(rest) is not None
        prefix = b" ".join(encodedWords(text + " " if spaced else text))
    startsBlank = value[:1] in (b" ", b"\t") or re.match(rb"\r?\n[ \t]", value) is not None
    if not value:
        newValue = b" " + prefix
    elif startsBlank:
        newValue = b" " + prefix + value
    else:
        newValue = b" " + prefix + b" " + value
    firstLine = fieldStart + newValue.split(b"\n", 1)[0].rstrip(b"\r")
    if len(firstLine) > _FOLD_AT and rest:
        # Fold after the prefix: the line end goes before the whitespace
        # that separates it from the rest (a value that starts with a fold
        # already has its first line short).
        if value[:1] in (b" ", b"\t"):
            newValue = b" " + prefix + fold + value
        elif not startsBlank:
            newValue = b" " + prefix + fold + b" " + value
    return newValue
