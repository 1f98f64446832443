"""
Make untrusted text safe to print: to a log, a terminal, a listing.

A user name, an AUTH identity, an attachment's file name or a subject comes
from whoever connects or whoever sends mail.  Printed as it is, an ESC
sequence in it drives the terminal of whoever reads the log, a CR overwrites
the line it is on, a LF forges a log line and U+202E turns the rest of the
line around.  L{printable} writes every such character as a visible escape
and leaves all other text, printable non-ASCII included, as it is.
L{PrintableLogger} applies it to every text field of the events it emits.
"""

from __future__ import annotations

from twisted.logger import Logger, LogLevel


def _escape(character: str) -> str:
    code = ord(character)
    if character == "\\":
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not UTF-8, kept by the "surrogateescape" decoding.
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str | bytes) -> str:
    """
    C{text} with every character that is not printable written as an
    escape: C0 and C1 controls and DEL as C{\\xNN}, Unicode format and
    separator characters (bidi overrides such as U+202E, zero-width
    characters, line separators) as C{\\uNNNN}, bytes that are not UTF-8 as
    C{\\xNN}; a backslash becomes C{\\\\}, so the result reads back
    unambiguously.  What Python's C{str.isprintable} accepts stays as it is.

    Bytes are read as UTF-8.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        character if character.isprintable() and character != "\\" else _escape(character)
        for character in text
    )


class PrintableLogger(Logger):
    """
    A L{Logger} whose events carry every text field through L{printable}:
    a value from a client or a message can put nothing but printable text
    into a log line, whatever the observer does with the event.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        for key, value in kwargs.items():
            if isinstance(value, str | bytes) and not key.startswith("log_"):
                kwargs[key] = printable(value)
        super().emit(level, format, **kwargs)
