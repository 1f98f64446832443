"""
Turn a client's login values into the command lines that carry them
upstream, refusing any value that would not stay one value of one line.

A user name, password or authorization identity reaches the proxy in a
command line or base64-decoded from a SASL response, and leaves in a
C{USER}, C{PASS}, C{APOP} or C{AUTH PLAIN} line of the proxy's own making.
A CR or LF in a decoded value would end that line early and smuggle the
rest to the upstream as commands of its own (a C{DELE} the proxy never
sees, a second password try); a NUL would move the field boundaries of a
PLAIN response.  So every value is checked here, after the last decoding
step and before any line is built, by L{checkedValue}, and the only way to
make the lines of a login is through the functions of this module, which
return a L{LoginCommands}.

Bounds: a value may have at most L{MAX_VALUE} octets, so that it fits a
C{USER} or C{PASS} line within RFC 2449's 255 octets (CRLF included)
whichever way the proxy translates the login; every line built is checked
against that limit, and a PLAIN response against L{MAX_SASL_LINE}.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from popproxy._framing import MAX_COMMAND_LINE

#: The longest SASL response line, CRLF included, sent or accepted (RFC
#: 5034 lifts the 255 octet limit for them).
MAX_SASL_LINE = 8192

#: The longest user name, password or authorization identity: what fits in
#: a C{USER} or C{PASS} line of at most 255 octets with its CRLF.
MAX_VALUE = MAX_COMMAND_LINE - len(b"USER \r\n")

_FORBIDDEN = (b"\r", b"\n", b"\0")


class RefusedValue(ValueError):
    """
    A login value cannot go upstream; C{str()} says why, for the client.
    """


@dataclass(frozen=True, slots=True)
class LoginCommands:
    """
    The command lines (without CRLF) of one login, in order, each built
    from checked values.
    """

    lines: tuple[bytes, ...]


def checkedValue(value: bytes, what: str) -> bytes:
    """
    C{value} if it may go upstream as one value of one command line.

    @param what: how the client would call it ("user name", "password").
    @raise RefusedValue: it holds CR, LF or NUL, or is over L{MAX_VALUE}.
    """
    if any(octet in value for octet in _FORBIDDEN):
        raise RefusedValue(f"the {what} contains a control character (CR, LF or NUL)")
    if len(value) > MAX_VALUE:
        raise RefusedValue(f"the {what} is longer than {MAX_VALUE} octets")
    return value


def _line(*parts: bytes, limit: int = MAX_COMMAND_LINE) -> bytes:
    line = b" ".join(parts)
    if len(line) + 2 > limit:
        raise RefusedValue("the login does not fit in one command line")
    return line


def userLogin(name: bytes) -> LoginCommands:
    """
    C{USER name}.
    """
    return LoginCommands((_line(b"USER", checkedValue(name, "user name")),))


def passLogin(password: bytes) -> LoginCommands:
    """
    C{PASS password} (the password may hold spaces: RFC 1939).
    """
    return LoginCommands((_line(b"PASS", checkedValue(password, "password")),))


def userPassLogin(name: bytes, password: bytes) -> LoginCommands:
    """
    C{USER name} then C{PASS password}.
    """
    return LoginCommands(userLogin(name).lines + passLogin(password).lines)


def apopLogin(name: bytes, digest: bytes) -> LoginCommands:
    """
    C{APOP name digest}.
    """
    checkedValue(digest, "APOP digest")
    return LoginCommands((_line(b"APOP", checkedValue(name, "user name"), digest),))


def plainLogin(authzid: bytes, authcid: bytes, password: bytes) -> LoginCommands:
    """
    A SASL PLAIN login (RFC 4616): the response as an initial response if
    the line allows, else after the server's challenge.
    """
    checkedValue(authzid, "authorization identity")
    checkedValue(authcid, "user name")
    checkedValue(password, "password")
    token = base64.b64encode(authzid + b"\0" + authcid + b"\0" + password)
    if len(token) + len(b"AUTH PLAIN \r\n") <= MAX_COMMAND_LINE:
        return LoginCommands((b"AUTH PLAIN " + token,))
    return LoginCommands((b"AUTH PLAIN", _line(token, limit=MAX_SASL_LINE)))
