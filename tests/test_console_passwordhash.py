"""
Tests for administrators' password hashes: a hash line checks the right
password and no other, two hashes of one password differ (random salt),
and lines that are not such hashes (a plain password, tampered fields,
parameters that would take the process's memory) are refused.
"""

from __future__ import annotations

import pytest

from popproxy.console._passwordhash import PasswordHash, hashPassword, parseHash

#: Small parameters: the tests check the format, not the cost.
FAST = {"n": 2**4, "r": 1, "p": 1}


def test_theRightPasswordMatches() -> None:
    """
    A hash line, parsed back, matches its password and not a near miss.
    """
    line = hashPassword("correct horse", **FAST).line()
    parsed = parseHash(line)
    assert parsed.matches("correct horse")
    assert not parsed.matches("correct hors")
    assert not parsed.matches("correct horse ")


def test_defaultsAreScryptsInteractiveParameters() -> None:
    """
    New hashes use N=2**14, r=8, p=1 and say so in their line.
    """
    line = hashPassword("pw-for-defaults").line()
    assert line.startswith("scrypt$16384$8$1$")
    assert parseHash(line).matches("pw-for-defaults")


def test_saltsDiffer() -> None:
    """
    One password hashed twice gives two different lines.
    """
    assert hashPassword("same", **FAST).line() != hashPassword("same", **FAST).line()


def test_unicodePasswords() -> None:
    """
    A password is hashed as UTF-8: a non-ASCII password matches itself.
    """
    assert parseHash(hashPassword("pässwörd✓", **FAST).line()).matches("pässwörd✓")


@pytest.mark.parametrize(
    "line",
    [
        "secret",
        "bcrypt$16$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16$8$1$AAAAAAAAAAA",
        "scrypt$x$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$15$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        f"scrypt${2**24}$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16$999$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16$8$1$AA$AAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16$8$1$AAAAAAAAAAA$AAAA",
        "scrypt$16$8$1$!!!$AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_otherLinesAreRefused(line: str) -> None:
    """
    Plain passwords, other schemes, missing or malformed fields, N not a
    power of two, parameters beyond the bounds, short salts or keys: all
    refused with a reason.
    """
    with pytest.raises(ValueError):
        parseHash(line)


def test_aLineRoundTrips() -> None:
    """
    Parsing a line and writing it again gives the same line.
    """
    made = hashPassword("round trip", **FAST)
    assert parseHash(made.line()) == made
    assert isinstance(made, PasswordHash)
