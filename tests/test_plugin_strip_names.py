"""
File names as the strip filter judges them (plugins/strip/_names.py): the
name Windows would save, a name safe to show, and why a name is blocked.
"""

from __future__ import annotations

import pytest

from plugins.strip._names import canonicalName, displayName, nameReason
from plugins.strip._settings import StripPolicy

POLICY = StripPolicy()


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("Setup.EXE", "setup.exe"),
        ("setup.exe. ", "setup.exe"),
        ("dir/sub\\setup.exe", "setup.exe"),
        ("setup.exe::$DATA", "setup.exe"),
        ("setup.exe.::$data . ", "setup.exe"),
        ("set\u200bup.exe", "setup.exe"),
        ("ｓｅｔｕｐ．ｅｘｅ", "setup.exe"),
    ],
)
def test_canonicalNameIsWhatWindowsSaves(name: str, saved: str) -> None:
    """
    Path components, invisible characters, width and case, NTFS stream
    suffixes and the trailing dots and blanks Windows drops are all gone.
    """
    assert canonicalName(name) == saved


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("invoice.pdf.exe", "blocked extension .exe"),
        ("report.pdf", None),
        ("SETUP.Exe.", "blocked extension .exe"),
        ("notes.{20d04fe0-3aea-1069-a2d8-08002b30309d}", "hidden class-id extension"),
        ("invoice\u202efdp.txt", "right-to-left override in the name"),
        ("." * 10_000 + "pdf", None),
    ],
)
def test_nameReason(name: str, reason: str | None) -> None:
    """
    A blocked extension at the end of the saved name, a class-id suffix
    or a right-to-left override blocks a name; an ordinary one passes.
    """
    assert nameReason(name, POLICY) == reason


def test_multiDotExtensionsAreMatched() -> None:
    """
    An extension of several dotted parts (C{tar.gz}) is matched as a
    suffix, never a shorter part of it alone.
    """
    policy = StripPolicy(extensions=frozenset({"tar.gz"}))
    assert nameReason("backup.TAR.GZ", policy) == "blocked extension .tar.gz"
    assert nameReason("notes.gz", policy) is None


def test_displayNameIsSafeToShow() -> None:
    """
    Line breaks and format characters are written out, and a long name is
    cut to the limit with an ellipsis.
    """
    assert displayName("a\r\nb\u202ec.exe") == "a\\u000d\\u000ab\\u202ec.exe"
    shown = displayName("x" * 500, limit=20)
    assert shown == "x" * 17 + "..." and len(shown) == 20
