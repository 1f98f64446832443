"""
What identifies a message to its recipient: the From, Subject and Date of
its top-level header block, decoded for display (unfolded, RFC 2047
encoded-words decoded, control characters dropped, bounded in length).

The quarantine stores them with each record, so the console can show the
recipient which message an item came from, and reads them again from a
record's stored header lines when it lacks them: both through
L{summarize}, which reads the header block as the MIME parser does (a line
ends at LF only, so a form feed, a bare CR or U+2028 in a Subject cannot
start a forged From).  Only the header block is read (at most
L{HEADER_LIMIT} octets), whatever the size of the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from popproxy._mimeheader import decodeValue, scanHeaderBlock

#: Octets of a message read to find its header fields.
HEADER_LIMIT = 64 * 1024
#: Characters kept of each value.
VALUE_LIMIT = 400
#: Encoded-words decoded in one value.
MAX_WORDS = 100


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """
    The decoded From, Subject and Date of a message (C{None}: no such field).
    """

    sender: str | None = None
    subject: str | None = None
    date: str | None = None


def displayText(text: str, limit: int = VALUE_LIMIT) -> str:
    """
    C{text} fit for one line of a page or a listing: control characters
    (CR, LF, NUL, tabs, bidi overrides included) become spaces, runs of
    spaces one, cut to C{limit} characters.
    """
    shown = "".join(" " if _isControl(character) else character for character in text)
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


def _isControl(character: str) -> bool:
    code = ord(character)
    return (
        code < 0x20
        or 0x7F <= code < 0xA0
        or 0x200E <= code <= 0x200F
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
    )


def summarize(message: bytes, limit: int = VALUE_LIMIT) -> MessageSummary:
    """
    The From, Subject and Date of C{message} (or of a header block alone),
    each from its first field of that name, made one line of at most
    C{limit} characters by L{displayText}.
    """
    head = message[:HEADER_LIMIT]
    # No cap on the fields: a cap would let a sender push From past it with
    # a thousand empty fields; the head is bounded, and the scan linear.
    block = scanHeaderBlock(head, 0, len(head))
    found: dict[str, str] = {}
    for field in block.fields:
        name = field.name.decode("ascii", "replace").strip().lower()
        if name in ("from", "subject", "date") and name not in found:
            raw = head[field.valueStart : field.valueEnd]
            found[name] = displayText(decodeValue(raw, MAX_WORDS), limit)
    return MessageSummary(found.get("from"), found.get("subject"), found.get("date"))
