"""
The syntax of a client's command lines (RFC 1939): which commands each
session state allows, a line split into its command and arguments, and
numeric arguments parsed.  Pure functions; a refusal is the C{-ERR} line to
send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

#: Commands allowed in each state (RFC 1939); others get -ERR locally.
ALLOWED = {
    AUTHORIZATION: frozenset({"USER", "PASS", "QUIT", "CAPA", "STLS", "AUTH", "APOP"}),
    TRANSACTION: frozenset(
        {"STAT", "LIST", "UIDL", "RETR", "DELE", "NOOP", "RSET", "TOP", "QUIT", "CAPA"}
    ),
    UPDATE: frozenset(),
}
KNOWN = frozenset().union(*ALLOWED.values())

_NUMBER = re.compile(rb"[0-9]{1,9}\Z")


@dataclass(frozen=True, slots=True)
class Command:
    """
    A command line allowed in the session's state.

    @ivar name: the command, upper case (C{"RETR"}).
    @ivar arguments: the rest of the line after one space, as sent.
    """

    name: str
    arguments: bytes


def parseCommand(line: bytes, state: str) -> Command | bytes:
    """
    The command on C{line} if C{state} allows it, else the C{-ERR} line
    saying why not.
    """
    if b"\r" in line or b"\n" in line or b"\0" in line:
        return b"-ERR malformed command"
    keyword, _, arguments = line.partition(b" ")
    name = keyword.decode("ascii", "replace").upper()
    if name not in KNOWN or not keyword.isalpha():
        return b"-ERR unknown command"
    if name not in ALLOWED[state]:
        return f"-ERR {name} is not valid in the {state} state".encode("ascii")
    return Command(name, arguments)


def parseNumbers(arguments: bytes, minimum: int, maximum: int) -> list[int] | bytes:
    """
    Space-separated decimal arguments, from C{minimum} to C{maximum} of
    them, or the C{-ERR} line refusing them.
    """
    parts = arguments.split(b" ") if arguments else []
    if not minimum <= len(parts) <= maximum or not all(_NUMBER.match(p) for p in parts):
        return b"-ERR invalid arguments"
    return [int(part) for part in parts]


def parseMessageNumbers(arguments: bytes, minimum: int, maximum: int) -> list[int] | bytes:
    """
    Like L{parseNumbers}, where the first number is a message number (not
    zero).
    """
    numbers = parseNumbers(arguments, minimum, maximum)
    if isinstance(numbers, list) and numbers and numbers[0] == 0:
        return b"-ERR no such message"
    return numbers
