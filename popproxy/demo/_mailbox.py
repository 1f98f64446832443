"""A read-only POP3 maildrop (``IMailbox``) over a directory of ``*.eml`` files."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path
from typing import IO, overload

from twisted.mail.pop3 import IMailbox
from zope.interface import implementer

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_READABLE_UIDL = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,69}")


def _eicar() -> bytes:
    """
    The EICAR antivirus test string, assembled at run time so the sources
    do not hold it verbatim (scanners on developers' machines flag it).
    """
    pieces = [b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR", b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"]
    return pieces[0] + pieces[1] + pieces[2]


def expandPlaceholders(raw: bytes) -> bytes:
    """
    Replace C{@@EICAR-BASE64@@} in a sample file with the base64-encoded
    EICAR test string.
    """
    if b"@@EICAR-BASE64@@" not in raw:
        return raw
    return raw.replace(b"@@EICAR-BASE64@@", base64.b64encode(_eicar()))


def normalizeLineEndings(raw: bytes) -> bytes:
    """
    Return C{raw} with every line break (CRLF, bare CR, bare LF) written as LF
    and a line break at the end.

    This is the form C{twisted.mail.pop3.POP3} wants from C{getMessage}: it
    turns each LF into CRLF on the wire, so a CRLF file would go out as
    CR CR LF. Mapping bare CRs to line breaks too (as Dovecot does) means the
    served message is always made of proper CRLF lines.
    """
    text = _LINE_BREAK.sub(b"\n", raw)
    if not text.endswith(b"\n"):
        text += b"\n"
    return text


def wireSize(text: bytes) -> int:
    """
    Return the number of octets C{text} (LF line endings) takes on the wire
    as a CRLF message, before dot-stuffing: what LIST reports and RETR sends.
    """
    return len(text) + text.count(b"\n")


def uidlForName(name: str) -> bytes:
    """
    Return the stable unique-id of the message stored in the file C{name}.

    Simple names (letters, digits, C{.}, C{_}, C{-}) give their stem, which
    makes traffic easy to read; any other name gives a hash of the name. The
    hash form contains C{=}, which the simple form never does, so the two
    cannot collide. Both fit RFC 1939 (1-70 characters in 0x21-0x7E).
    """
    stem = name.removesuffix(".eml").encode("utf-8", "surrogateescape")
    if _READABLE_UIDL.fullmatch(stem):
        return stem
    return b"sha256=" + hashlib.sha256(stem).hexdigest()[:40].encode("ascii")


@implementer(IMailbox)
class EmlDirectoryMailbox:
    """
    The messages of one POP3 session: the C{*.eml} files of a directory,
    sorted by file name, listed when the session logs in.

    The directory is never written to. DELE only hides a message for the
    rest of the session, RSET shows it again, and QUIT (C{sync}) removes
    nothing, so bundled sample files survive every session. A message is
    read once and kept for the session, so the size LIST reports is always
    the size of the bytes RETR sends.
    """

    # Interface attributes, read only when the factory advertises EXPIRE or
    # LOGIN-DELAY per user, which the demo server does not.
    loginDelay: int = 0
    messageExpiration: int | None = None

    def __init__(self, directory: Path) -> None:
        self._paths = sorted(
            (path for path in directory.glob("*.eml") if path.is_file()),
            key=lambda path: path.name,
        )
        self._texts: dict[int, bytes] = {}
        self._deleted: set[int] = set()

    def _checkIndex(self, i: int) -> None:
        # Negative numbers would otherwise index from the end of the list.
        if not 0 <= i < len(self._paths):
            raise ValueError("no such message")

    def _text(self, i: int) -> bytes:
        text = self._texts.get(i)
        if text is None:
            raw = expandPlaceholders(self._paths[i].read_bytes())
            text = self._texts[i] = normalizeLineEndings(raw)
        return text

    def _size(self, i: int) -> int:
        return 0 if i in self._deleted else wireSize(self._text(i))

    @overload
    def listMessages(self) -> list[int]: ...

    @overload
    def listMessages(self, i: int) -> int: ...

    def listMessages(self, i: int | None = None) -> int | list[int]:
        """
        Return the wire size of message C{i}, or of every message; a deleted
        message has size 0, as C{IMailbox} requires.
        """
        if i is None:
            return [self._size(n) for n in range(len(self._paths))]
        self._checkIndex(i)
        return self._size(i)

    def getMessage(self, i: int) -> IO[bytes]:
        """
        Return message C{i} as a file with LF line endings (see
        L{normalizeLineEndings}).
        """
        self._checkIndex(i)
        if i in self._deleted:
            raise ValueError("message deleted")
        return io.BytesIO(self._text(i))

    def getUidl(self, i: int) -> bytes:
        """
        Return the unique-id of message C{i}, derived from its file name.
        """
        self._checkIndex(i)
        return uidlForName(self._paths[i].name)

    def deleteMessage(self, i: int) -> None:
        """
        Hide message C{i} for the rest of this session.
        """
        self._checkIndex(i)
        if i in self._deleted:
            raise ValueError("message already deleted")
        self._deleted.add(i)

    def undeleteMessages(self) -> None:
        """
        Show every message hidden by L{deleteMessage} again.
        """
        self._deleted.clear()

    def sync(self) -> None:
        """
        Do nothing: the directory is read-only, so a deletion never outlives
        the session.
        """
