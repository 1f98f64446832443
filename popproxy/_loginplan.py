"""
Decide how a client's login goes upstream: from the route, what the client
gave and what the upstream can do, the command lines to send or the reason
to refuse.  Pure functions; the lines come from L{popproxy._loginlines}.

A client logs in with C{USER}/C{PASS}, C{APOP} or SASL (C{AUTH PLAIN} or
C{AUTH LOGIN}, decoded by L{popproxy._sasl}); the upstream is asked in the
way it offers: SASL PLAIN when its CAPA lists it, else C{USER}/C{PASS}.  A
SASL login's PLAIN translation is made before the upstream hears anything
(CAPA included), so a value with CR, LF or NUL never makes the proxy talk;
the C{USER}/C{PASS} one, whose lines bound each value to 248 octets, only
once CAPA shows it is needed, so a long password (a token) still logs in
where the upstream offers PLAIN.
"""

from __future__ import annotations

from dataclasses import dataclass

from popproxy._capabilities import UpstreamCapabilities
from popproxy._loginlines import (
    LoginCommands,
    RefusedValue,
    apopLogin,
    passLogin,
    plainLogin,
    userLogin,
    userPassLogin,
)
from popproxy._routing import Route
from popproxy._sasl import Credentials


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """
    The login cannot go upstream; nothing of it is sent.

    @ivar reason: for the client, after C{-ERR [AUTH]}.
    @ivar failedLogin: whether it counts (and is delayed) as a failed login:
        a value the proxy cannot send does, an upstream that cannot serve
        the request does not.
    """

    reason: str
    failedLogin: bool = True

    @property
    def line(self) -> bytes:
        return b"-ERR [AUTH] " + self.reason.encode("ascii")


@dataclass(frozen=True, slots=True)
class NeedCapabilities:
    """
    The values can go upstream; which lines carry them depends on the
    upstream's capabilities: ask it (CAPA), then plan again with them.
    """


@dataclass(frozen=True, slots=True)
class PendingPass:
    """
    The upstream accepted C{USER} (or will take C{PASS} as SASL PLAIN): the
    client's C{PASS} finishes the login.

    @ivar login: the name the client sent.
    @ivar route: where it goes.
    @ivar asPlain: the upstream refused C{USER} and offers SASL PLAIN only
        (see L{passAsPlain}).
    """

    login: str
    route: Route
    asPlain: bool = False


LoginPlan = LoginCommands | LoginRefusal | NeedCapabilities

NOT_ON_BEHALF = LoginRefusal(
    "the mail server cannot log in on behalf of another user", failedLogin=False
)


def _refused(refused: RefusedValue) -> LoginRefusal:
    return LoginRefusal(str(refused))


def _upstreamName(route: Route) -> bytes:
    return route.login.encode("utf-8", "surrogateescape")


def saslIdentity(credentials: Credentials) -> str:
    """
    The login name that chooses the route of a SASL login: the
    authorization identity if given, else the user name.
    """
    return (credentials.authzid or credentials.authcid).decode("utf-8", "surrogateescape")


def planSasl(
    route: Route, credentials: Credentials, capabilities: UpstreamCapabilities | None
) -> LoginPlan:
    """
    Plan a SASL login: SASL PLAIN if the upstream offers it, else
    C{USER}/C{PASS}, which cannot carry an authorization identity other
    than the user.

    @param capabilities: the upstream's, or C{None} if not asked yet.
    """
    name = _upstreamName(route)
    onBehalf = bool(credentials.authzid) and credentials.authzid != credentials.authcid
    try:
        if onBehalf:
            plain = plainLogin(name, credentials.authcid, credentials.password)
        else:
            plain = plainLogin(b"", name, credentials.password)
    except RefusedValue as refused:
        return _refused(refused)
    if capabilities is None:
        return NeedCapabilities()
    if capabilities.offersPlain():
        return plain
    if onBehalf:
        return NOT_ON_BEHALF
    try:
        return userPassLogin(name, credentials.password)
    except RefusedValue as refused:
        return _refused(refused)


def planUser(route: Route) -> LoginCommands | LoginRefusal:
    """
    The C{USER} line that starts a C{USER}/C{PASS} login.
    """
    try:
        return userLogin(_upstreamName(route))
    except RefusedValue as refused:
        return _refused(refused)


def passAsPlain(capabilities: UpstreamCapabilities) -> bool:
    """
    Whether an upstream that refused C{USER} takes the coming C{PASS} as a
    SASL PLAIN login instead (RFC 5034): it offers SASL PLAIN and not USER.
    """
    return b"USER" not in capabilities and capabilities.offersPlain()


def planPass(pending: PendingPass, password: bytes) -> LoginCommands | LoginRefusal:
    """
    The lines that finish a C{USER}/C{PASS} login: C{PASS}, or a SASL PLAIN
    login when the upstream refused C{USER} (see L{passAsPlain}).
    """
    try:
        if pending.asPlain:
            return plainLogin(b"", _upstreamName(pending.route), password)
        return passLogin(password)
    except RefusedValue as refused:
        return _refused(refused)


def planApop(route: Route, digest: bytes) -> LoginCommands | LoginRefusal:
    """
    The C{APOP} line relaying the client's digest for the routed name.
    """
    try:
        return apopLogin(_upstreamName(route), digest)
    except RefusedValue as refused:
        return _refused(refused)
