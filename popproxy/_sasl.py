"""
The server side of a client's SASL exchange (RFC 5034 AUTH with PLAIN or
LOGIN), without I/O: fed the client's responses, it says what to answer.

An L{SaslServer} starts from the arguments of an C{AUTH} command and is then
fed each response line the client sends after a challenge.  Every step
returns one of three values: a L{Challenge} (send its line, feed the next
response), a L{SaslRefusal} (send its line, the exchange is over) or the
decoded L{Credentials} (the exchange is over; log in with them).  It decodes
base64 and splits PLAIN responses only: whether a value may go upstream is
decided later, by L{popproxy._loginlines}, after this last decoding step.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

#: SASL mechanisms offered to clients (RFC 5034).
MECHANISMS = (b"PLAIN", b"LOGIN")


@dataclass(frozen=True, slots=True)
class Challenge:
    """
    Send C{line} (a C{+} continuation) and wait for the client's response.
    """

    line: bytes


@dataclass(frozen=True, slots=True)
class SaslRefusal:
    """
    Send C{line} (an C{-ERR}): the exchange is over, nothing was decided.
    """

    line: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """
    What a finished exchange decoded: the authorization identity (empty when
    the client acts as itself), the user name and the password.
    """

    authzid: bytes
    authcid: bytes
    password: bytes

    def __repr__(self) -> str:
        # A password never reaches a log through a repr.
        return f"Credentials(authzid={self.authzid!r}, authcid={self.authcid!r})"


SaslStep = Challenge | SaslRefusal | Credentials

CANCELLED = SaslRefusal(b"-ERR authentication cancelled")
TOO_LONG = SaslRefusal(b"-ERR [AUTH] authentication response too long")
INVALID_BASE64 = SaslRefusal(b"-ERR [AUTH] invalid base64 in the authentication response")
MALFORMED_PLAIN = SaslRefusal(b"-ERR [AUTH] malformed PLAIN response")
EMPTY_NAME = SaslRefusal(b"-ERR [AUTH] empty user name")
UNSUPPORTED = SaslRefusal(b"-ERR unsupported authentication mechanism")

_USERNAME = b"VXNlcm5hbWU6"  # "Username:"
_PASSWORD = b"UGFzc3dvcmQ6"  # "Password:"


def decodeResponse(response: bytes) -> bytes | None:
    """
    A base64 SASL response (C{=} is the empty one), or C{None} if it is not
    valid base64.
    """
    if response == b"=":
        return b""
    try:
        return base64.b64decode(response, validate=True)
    except (binascii.Error, ValueError):
        return None


def plainCredentials(decoded: bytes) -> Credentials | SaslRefusal:
    """
    The fields of a decoded PLAIN response (RFC 4616), the user name not
    empty.
    """
    fields = decoded.split(b"\0")
    if len(fields) != 3 or not fields[1]:
        return MALFORMED_PLAIN
    return Credentials(fields[0], fields[1], fields[2])


class SaslServer:
    """
    One client's SASL exchanges, one at a time.

    @ivar waiting: a challenge was sent and the next client line is its
        response (not a command).
    """

    def __init__(self) -> None:
        # The step the next response goes to, unbound: the server holds no
        # reference to itself, so a closed session frees it at once.
        self._next: Callable[[SaslServer, bytes], SaslStep] | None = None
        self._name = b""

    @property
    def waiting(self) -> bool:
        return self._next is not None

    def start(self, arguments: bytes) -> SaslStep:
        """
        Begin an exchange from the arguments of C{AUTH mechanism [initial]}.
        """
        mechanism, _, initial = arguments.partition(b" ")
        mechanism = mechanism.upper()
        if mechanism == b"PLAIN":
            return self._plain(initial) if initial else self._challenge(b"", SaslServer._plain)
        if mechanism == b"LOGIN":
            if initial:
                return self._loginName(initial)
            return self._challenge(_USERNAME, SaslServer._loginName)
        return UNSUPPORTED

    def feed(self, response: bytes) -> SaslStep:
        """
        The client's response to the last challenge; C{*} cancels.
        """
        step, self._next = self._next, None
        if step is None:
            raise RuntimeError("no challenge is waiting for a response")
        if response == b"*":
            return CANCELLED
        return step(self, response)

    def tooLong(self) -> SaslRefusal:
        """
        The client's response did not fit in a SASL line: the exchange ends.
        """
        self._next = None
        return TOO_LONG

    def reset(self) -> None:
        """
        Forget an exchange in progress.
        """
        self._next = None
        self._name = b""

    def _challenge(
        self, challenge: bytes, then: Callable[[SaslServer, bytes], SaslStep]
    ) -> Challenge:
        self._next = then
        return Challenge(b"+ " + challenge)

    def _plain(self, response: bytes) -> SaslStep:
        decoded = decodeResponse(response)
        if decoded is None:
            return INVALID_BASE64
        return plainCredentials(decoded)

    def _loginName(self, response: bytes) -> SaslStep:
        name = decodeResponse(response)
        if name is None:
            return INVALID_BASE64
        if not name:
            return EMPTY_NAME
        self._name = name
        return self._challenge(_PASSWORD, SaslServer._loginPassword)

    def _loginPassword(self, response: bytes) -> SaslStep:
        name, self._name = self._name, b""
        password = decodeResponse(response)
        if password is None:
            return INVALID_BASE64
        return Credentials(b"", name, password)
