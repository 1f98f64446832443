"""
Test support for popproxy and for plugin authors: build MIME messages for
unit tests, and run filters and configured chains without sockets.

This module needs nothing beyond popproxy itself; the hypothesis strategies
live in L{popproxy.strategies} (which needs hypothesis, installed with
C{pip install 'popproxy[test]'}).

    from popproxy.testing import attachmentPart, buildMessage, loadPlugin, runFilter

    raw = buildMessage(attachmentPart(b"MZ...", "setup.exe"))
    result = runFilter(loadPlugin("plugins/my_filter.py"), raw)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from popproxy._mimecodec import encodeBase64Lines
from popproxy._mimewrite import encodeField, textPart

if TYPE_CHECKING:
    from popproxy.strategies import mimeMessages as mimeMessages

__all__ = ["attachmentPart", "buildMessage", "textPart"]


# Building messages.

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("From", "Alice <alice@example.com>"),
    ("To", "Bob <bob@example.net>"),
    ("Subject", "test message"),
    ("Date", "Mon, 10 Mar 2025 09:00:00 +0000"),
    ("Message-ID", "<test@example.com>"),
)


def attachmentPart(
    data: bytes,
    filename: str,
    *,
    contentType: str = "application/octet-stream",
    lineEnding: bytes = b"\r\n",
) -> bytes:
    """
    A complete base64 attachment part named C{filename} (RFC 2231 encoded
    if it is not ASCII).
    """
    if filename.isascii():
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
        disposition = f'attachment; filename="{quoted}"'
    else:
        disposition = f"attachment; filename*=utf-8''{quote(filename, safe='')}"
    return (
        encodeField("Content-Type", contentType, lineEnding)
        + b"Content-Transfer-Encoding: base64"
        + lineEnding
        + encodeField("Content-Disposition", disposition, lineEnding)
        + lineEnding
        + encodeBase64Lines(data, lineEnding)
    )


def buildMessage(
    *parts: bytes,
    headers: Sequence[tuple[str, str]] = DEFAULT_HEADERS,
    text: str = "Hello.\n",
    subtype: str = "mixed",
    boundary: str = "=_popproxy_test_boundary",
    preamble: bytes = b"",
    epilogue: bytes = b"",
    lineEnding: bytes = b"\r\n",
) -> bytes:
    """
    A complete message with C{headers}: a single text part with C{text}
    without C{parts}; otherwise a C{multipart/subtype} of the given complete
    parts (from L{textPart}, L{attachmentPart} or written by hand, in the
    same line ending).  Wrap the result in L{popproxy.message.Message}.
    """
    head = b"".join(encodeField(name, value, lineEnding) for name, value in headers)
    head += b"MIME-Version: 1.0" + lineEnding
    if not parts:
        return head + textPart(text, lineEnding=lineEnding)
    delimiter = b"--" + boundary.encode("ascii")
    body = [preamble + lineEnding if preamble else b""]
    for part in parts:
        body.append(delimiter + lineEnding + part + lineEnding)
    body.append(delimiter + b"--" + lineEnding + epilogue)
    contentType = f'multipart/{subtype}; boundary="{boundary}"'
    return head + encodeField("Content-Type", contentType, lineEnding) + lineEnding + b"".join(body)


# Running filters and configured chains without sockets (popproxy._testkit).

from popproxy._testkit import (  # noqa: E402
    ChainResult,
    FilterOutcome,
    FilterResult,
    InlineReactor,
    MemoryQuarantine,
    PluginError,
    QuarantinedMessage,
    VerdictPending,
    loadPlugin,
    makeContext,
    runChain,
    runFilter,
    runInline,
)

__all__ += [
    "ChainResult",
    "FilterOutcome",
    "FilterResult",
    "InlineReactor",
    "MemoryQuarantine",
    "PluginError",
    "QuarantinedMessage",
    "VerdictPending",
    "loadPlugin",
    "makeContext",
    "runChain",
    "runFilter",
    "runInline",
]


def __getattr__(name: str) -> object:
    """
    C{mimeMessages}, which moved to L{popproxy.strategies}, imported from
    there on first use: old C{from popproxy.testing import mimeMessages}
    keeps working where hypothesis is installed, and this module imports
    without it.
    """
    if name == "mimeMessages":
        from popproxy.strategies import mimeMessages

        return mimeMessages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
