"""
Tests for popproxy._commandsyntax: which command lines each session state
takes, and the numeric arguments a command may have; every refusal is the
C{-ERR} line the client gets.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._commandsyntax import (
    AUTHORIZATION,
    TRANSACTION,
    UPDATE,
    Command,
    parseCommand,
    parseMessageNumbers,
    parseNumbers,
)

#: (line, state, what parseCommand gives).
COMMANDS = [
    (b"USER alice", AUTHORIZATION, Command("USER", b"alice")),
    (b"user alice", AUTHORIZATION, Command("USER", b"alice")),
    (b"PASS correct horse  battery ", AUTHORIZATION, Command("PASS", b"correct horse  battery ")),
    (b"CAPA", AUTHORIZATION, Command("CAPA", b"")),
    (b"AUTH PLAIN", AUTHORIZATION, Command("AUTH", b"PLAIN")),
    (b"APOP alice c4c9334bac560ecc", AUTHORIZATION, Command("APOP", b"alice c4c9334bac560ecc")),
    (b"STLS", AUTHORIZATION, Command("STLS", b"")),
    (b"QUIT", AUTHORIZATION, Command("QUIT", b"")),
    (b"RETR 1", TRANSACTION, Command("RETR", b"1")),
    (b"Top 1 10", TRANSACTION, Command("TOP", b"1 10")),
    (b"UIDL", TRANSACTION, Command("UIDL", b"")),
    (b"QUIT", TRANSACTION, Command("QUIT", b"")),
    (b"CAPA", TRANSACTION, Command("CAPA", b"")),
    # Not allowed in the state: the client is told which state it is in.
    (b"RETR 1", AUTHORIZATION, b"-ERR RETR is not valid in the AUTHORIZATION state"),
    (b"stat", AUTHORIZATION, b"-ERR STAT is not valid in the AUTHORIZATION state"),
    (b"USER bob", TRANSACTION, b"-ERR USER is not valid in the TRANSACTION state"),
    (b"STLS", TRANSACTION, b"-ERR STLS is not valid in the TRANSACTION state"),
    (b"QUIT", UPDATE, b"-ERR QUIT is not valid in the UPDATE state"),
    # Unknown, or not a plain keyword.
    (b"XTND XMIT", TRANSACTION, b"-ERR unknown command"),
    (b"", AUTHORIZATION, b"-ERR unknown command"),
    (b" USER alice", AUTHORIZATION, b"-ERR unknown command"),
    (b"USER\talice", AUTHORIZATION, b"-ERR unknown command"),
    (b"RETR1", TRANSACTION, b"-ERR unknown command"),
    (b"US3R alice", AUTHORIZATION, b"-ERR unknown command"),
    (b"\xc3\xbcSER alice", AUTHORIZATION, b"-ERR unknown command"),
    # CR, LF or NUL anywhere: never split into two commands or passed on.
    (b"USER alice\rDELE 1", AUTHORIZATION, b"-ERR malformed command"),
    (b"USER alice\nDELE 1", AUTHORIZATION, b"-ERR malformed command"),
    (b"USER al\0ice", AUTHORIZATION, b"-ERR malformed command"),
    (b"\0", TRANSACTION, b"-ERR malformed command"),
    (b"XYZZY\r", TRANSACTION, b"-ERR malformed command"),
]


@pytest.mark.parametrize(("line", "state", "expected"), COMMANDS)
def test_parseCommand(line: bytes, state: str, expected: Command | bytes) -> None:
    """
    An allowed command comes back with its upper-case name and its
    arguments exactly as sent; anything else is the -ERR line saying why.
    """
    assert parseCommand(line, state) == expected


#: (arguments, minimum, maximum, what parseNumbers gives).
NUMBERS = [
    (b"", 0, 1, []),
    (b"1", 0, 1, [1]),
    (b"7", 1, 1, [7]),
    (b"1 10", 2, 2, [1, 10]),
    (b"007", 1, 1, [7]),
    (b"999999999", 1, 1, [999_999_999]),
    (b"0", 1, 1, [0]),
    (b"", 1, 1, b"-ERR invalid arguments"),
    (b"1 2", 1, 1, b"-ERR invalid arguments"),
    (b"1", 2, 2, b"-ERR invalid arguments"),
    (b"1234567890", 1, 1, b"-ERR invalid arguments"),  # ten digits
    (b"-1", 1, 1, b"-ERR invalid arguments"),
    (b"+1", 1, 1, b"-ERR invalid arguments"),
    (b"1.0", 1, 1, b"-ERR invalid arguments"),
    (b"0x1", 1, 1, b"-ERR invalid arguments"),
    (b"\xd9\xa1", 1, 1, b"-ERR invalid arguments"),  # an Arabic-Indic one
    (b"1  10", 2, 2, b"-ERR invalid arguments"),  # two spaces
    (b" 1", 1, 1, b"-ERR invalid arguments"),
    (b"1 ", 1, 1, b"-ERR invalid arguments"),
    (b" ", 0, 1, b"-ERR invalid arguments"),
]


@pytest.mark.parametrize(("arguments", "minimum", "maximum", "expected"), NUMBERS)
def test_parseNumbers(arguments: bytes, minimum: int, maximum: int, expected: object) -> None:
    """
    From minimum to maximum decimal numbers of at most nine digits,
    separated by single spaces, are taken; anything else is refused.
    """
    assert parseNumbers(arguments, minimum, maximum) == expected


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (b"1", [1]),
        (b"3 0", [3, 0]),  # TOP 3 0: zero lines of the body is fine
        (b"0", b"-ERR no such message"),
        (b"000", b"-ERR no such message"),
        (b"0 5", b"-ERR no such message"),
        (b"", b"-ERR invalid arguments"),
        (b"1234567890", b"-ERR invalid arguments"),
        (b"x", b"-ERR invalid arguments"),
    ],
)
def test_parseMessageNumbers(arguments: bytes, expected: object) -> None:
    """
    Message number zero names no message; a second number may be zero;
    malformed arguments are refused as they are by parseNumbers.
    """
    assert parseMessageNumbers(arguments, 1, 2) == expected


def test_parseMessageNumbersOptional() -> None:
    """
    Where the message number is optional (LIST, UIDL), none at all is
    accepted, and zero is still no message.
    """
    assert parseMessageNumbers(b"", 0, 1) == []
    assert parseMessageNumbers(b"0", 0, 1) == b"-ERR no such message"


@given(
    arguments=st.binary(max_size=40)
    | st.lists(st.from_regex(rb"\A[0-9 +-]{0,12}\Z"), max_size=4).map(b" ".join),
    minimum=st.integers(0, 3),
    extra=st.integers(0, 3),
)
def test_parseNumbersNeverRaises(arguments: bytes, minimum: int, extra: int) -> None:
    """
    Whatever a client sends, parseNumbers answers: a list of as many
    non-negative numbers as allowed, each below a billion, or one -ERR line.
    """
    maximum = minimum + extra
    result = parseNumbers(arguments, minimum, maximum)
    if isinstance(result, bytes):
        assert result == b"-ERR invalid arguments"
        return
    assert minimum <= len(result) <= maximum
    assert all(type(n) is int and 0 <= n < 10**9 for n in result)
    assert b" ".join(b"%d" % n for n in result) == b" ".join(
        part.lstrip(b"0") or b"0" for part in arguments.split(b" ") if arguments
    )
