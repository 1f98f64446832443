"""
File names as the strip filter judges them: the name a mail client would
save (L{canonicalName}), the name made safe to show (L{displayName}), and
why a name is blocked (L{nameReason}: a blocked extension at any dotted
suffix, a hidden class-id extension, a right-to-left override).
"""

from __future__ import annotations

import re
import unicodedata

from ._settings import StripPolicy

#: Characters that reorder what follows them on screen: "invoice\u202efdp.exe"
#: shows as "invoiceexe.pdf".
_BIDI_OVERRIDES = frozenset("\u202a\u202b\u202d\u202e\u2066\u2067\u2068")
_PATH_SEPARATOR = re.compile(r"[/\\]")
#: What Windows drops from the end of a file name, and the NTFS stream
#: suffix it ignores.
_DROPPED_AT_END = frozenset(". \t\r\n\x00\u00a0\u3000")
_NTFS_STREAM = "::$data"
_CLSID_SUFFIX = re.compile(r"\.\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}\Z")


def displayName(name: str, limit: int = 120) -> str:
    """
    C{name} made safe to show in a notice, a note or a log line: control
    and format characters (line breaks, right-to-left overrides) are
    written as C{\\uXXXX}, and long names are shortened.
    """
    shown = "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
        for char in name
    )
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def canonicalName(name: str) -> str:
    """
    The name as Windows would save it, for comparing extensions: the last
    path component, without invisible format characters, NFKC-normalized,
    case-folded, without an NTFS C{::$DATA} stream suffix and without the
    trailing dots and spaces Windows drops (C{"setup.exe. "} is
    C{"setup.exe"}).
    """
    base = _PATH_SEPARATOR.split(name)[-1]
    visible = "".join(char for char in base if unicodedata.category(char) != "Cf")
    folded = unicodedata.normalize("NFKC", visible).casefold()
    # Move an end index back instead of slicing on every step: a name of
    # many ". ::$data" repetitions would otherwise be copied once per step.
    end = len(folded)
    while True:
        while end and folded[end - 1] in _DROPPED_AT_END:
            end -= 1
        if not folded.endswith(_NTFS_STREAM, 0, end):
            return folded[:end]
        end -= len(_NTFS_STREAM)


def nameReason(name: str, policy: StripPolicy) -> str | None:
    """
    Why a file called C{name} must be removed, or None.  Every dotted
    suffix is compared with the blocked extensions, so C{invoice.pdf.exe}
    is an C{.exe} and an entry like C{tar.gz} works.
    """
    canonical = canonicalName(name)
    # Only a suffix as long as the longest blocked extension can match:
    # look at the dots in that tail, shortest suffix first, never at the
    # rest of a name of thousands of dots.
    longest = max(map(len, policy.extensions), default=0)
    floor = max(len(canonical) - longest - 1, 0)
    dot = len(canonical)
    while (dot := canonical.rfind(".", floor, dot)) != -1:
        extension = canonical[dot + 1 :]
        if extension in policy.extensions:
            return f"blocked extension .{extension}"
    if _CLSID_SUFFIX.search(canonical):
        return "hidden class-id extension"
    if any(char in _BIDI_OVERRIDES for char in name):
        return "right-to-left override in the name"
    return None
