"""
Tests for popproxy._printable: untrusted text prints as printable text,
escapes read back unambiguously, and printable text is left alone.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from zope.interface import provider

from popproxy._printable import PrintableLogger, printable


def unescape(text: str) -> str:
    """
    The inverse of printable() for str input (a test oracle).
    """
    out = []
    position = 0
    while position < len(text):
        character = text[position]
        if character != "\\":
            out.append(character)
            position += 1
            continue
        kind = text[position + 1]
        if kind == "\\":
            out.append("\\")
            position += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}[kind]
        out.append(chr(int(text[position + 2 : position + 2 + width], 16)))
        position += 2 + width
    return "".join(out)


def test_terminalAndBidiControlsEscaped() -> None:
    """
    ESC, CR, LF, NUL, DEL, C1 controls, U+202E and zero-width characters
    are written as escapes; printable non-ASCII stays as it is.
    """
    assert printable("\x1b[31mred\rover\nnext\0\x7f\x9b") == (
        "\\x1b[31mred\\x0dover\\x0anext\\x00\\x7f\\x9b"
    )
    assert printable("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"
    assert printable("a\u200bb\u2028c\U000e0041") == "a\\u200bb\\u2028c\\U000e0041"
    assert printable("Jürgen 日本 ✓") == "Jürgen 日本 ✓"
    assert printable("C:\\x1b") == "C:\\\\x1b"


def test_bytesReadAsUtf8() -> None:
    """
    Bytes are read as UTF-8; octets that are not UTF-8 print as \\xNN.
    """
    assert printable(b"J\xc3\xbcrgen\xff\x1b") == "Jürgen\\xff\\x1b"


@given(st.text())
def test_alwaysPrintableAndReversible(text: str) -> None:
    """
    For any text the result is printable (no control, format or separator
    character survives) and reads back to the original.
    """
    result = printable(text)
    assert result.isprintable()
    assert unescape(result) == text


@given(st.text().filter(lambda t: t.isprintable() and "\\" not in t))
def test_printableTextUnchanged(text: str) -> None:
    """
    Text with nothing to escape comes back unchanged.
    """
    assert printable(text) == text


def test_loggerEscapesTextFields() -> None:
    """
    PrintableLogger escapes every text field of its events, and only the
    fields: the format string is the program's.
    """
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    log = PrintableLogger(namespace="test", observer=observe)
    log.emit(LogLevel.info, "{user} logged in\n({count})", user="\x1b]0;pwned\x07\r", count=3)
    assert formatEvent(events[0]) == "\\x1b]0;pwned\\x07\\x0d logged in\n(3)"
