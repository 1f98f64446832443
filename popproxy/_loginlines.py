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

Bounds depend on the line that carries a value.  In a C{USER}, C{PASS} or
C{APOP} line a value may have at most L{MAX_VALUE} octets, what fits RFC
2449's 255 octets (CRLF included).  A SASL PLAIN login has no bound per
value: its response goes as an initial response when the C{AUTH PLAIN}
line fits in 255 octets, else alone on a line of at most L{MAX_SASL_LINE}
octets after the server's challenge, and is refused only when it does not
fit that (so long passwords, such as application tokens, log in with
PLAIN).  A caller that may send either translation builds the PLAIN one
first, which checks every value for CR, LF and NUL, and builds the
C{USER}/C{PASS} one, with its tighter bound, only once it is chosen.
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


def checkedValue(value: bytes, what: str, bound: int | None = MAX_VALUE) -> bytes:
    """
    C{value} if it may go upstream as one value of one command line.

    @param what: how the client would call it ("user name", "password").
    @param bound: the most octets it may have, or C{None} when only the
        line carrying it is bounded (a SASL response: see L{plainLogin}).
    @raise RefusedValue: it holds CR, LF or NUL, or is over C{bound}.
    """
    if any(octet in value for octet in _FORBIDDEN):
        raise RefusedValue(f"the {what} contains a control character (CR, LF or NUL)")
    if bound is not None and len(value) > bound:
        raise RefusedValue(f"the {what} is longer than {bound} octets")
    return value


def _line(*parts: bytes) -> bytes:
    line = b" ".join(parts)
    if len(line) + 2 > MAX_COMMAND_LINE:
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
    the C{AUTH PLAIN} line fits in 255 octets, else after the server's
    challenge, alone on a line of at most L{MAX_SASL_LINE} octets.  The
    values are bounded by that line only, not by L{MAX_VALUE}.
    """
    checkedValue(authzid, "authorization identity", bound=None)
    checkedValue(authcid, "user name", bound=None)
    checkedValue(password, "password", bound=None)
    token = base64.b64encode(authzid + b"\0" + authcid + b"\0" + password)
    if len(token) + len(b"AUTH PLAIN \r\n") <= MAX_COMMAND_LINE:
        return LoginCommands((b"AUTH PLAIN " + token,))
    if len(token) + len(b"\r\n") > MAX_SASL_LINE:
        raise RefusedValue(
            f"the login does not fit in one SASL response line of {MAX_SASL_LINE} octets"
        )
    return LoginCommands((b"AUTH PLAIN", token))
