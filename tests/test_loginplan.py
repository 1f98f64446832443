"""
Tests for popproxy._loginplan: every login rule as a row of a table — from
the route, the client's values and the upstream's capabilities to the lines
sent upstream, or the refusal, and whether a refusal counts as a failed
login.
"""

from __future__ import annotations

import base64

import pytest

from popproxy._capabilities import UpstreamCapabilities
from popproxy._loginlines import LoginCommands
from popproxy._loginplan import (
    NOT_ON_BEHALF,
    LoginPlan,
    LoginRefusal,
    NeedCapabilities,
    PendingPass,
    passAsPlain,
    planApop,
    planPass,
    planSasl,
    planUser,
    saslIdentity,
)
from popproxy._routing import Route
from popproxy._sasl import Credentials
from popproxy._tls import UpstreamTarget

ROUTE = Route(UpstreamTarget("tcp:mail:110"), "ann")
#: A route whose upstream name differs from the client's (user@host).
RENAMED = Route(UpstreamTarget("tcp:mail:110"), "ann.smith")
DIGEST = b"c4c9334bac560ecc979e58001b3e22fb"
LONG = b"t" * 300  # a token: too long for PASS, fine for AUTH PLAIN

USERPASS = UpstreamCapabilities.fromLines((b"TOP", b"USER"))
SASL = UpstreamCapabilities.fromLines((b"SASL PLAIN LOGIN", b"USER"))
SASLONLY = UpstreamCapabilities.fromLines((b"SASL PLAIN",))
LOGINONLY = UpstreamCapabilities.fromLines((b"SASL LOGIN",))
NONE = UpstreamCapabilities()


def plain(authzid: bytes, authcid: bytes, password: bytes) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(authzid + b"\0" + authcid + b"\0" + password)


def commands(*lines: bytes) -> LoginCommands:
    return LoginCommands(lines)


def refused(reason: str) -> LoginRefusal:
    return LoginRefusal(reason, failedLogin=True)


CONTROL = refused("the password contains a control character (CR, LF or NUL)")

#: (route, credentials, capabilities, plan).
SASL_PLANS: list[tuple[Route, Credentials, UpstreamCapabilities | None, LoginPlan]] = [
    # Values checked before the upstream is asked anything.
    (ROUTE, Credentials(b"", b"ann", b"pw"), None, NeedCapabilities()),
    (ROUTE, Credentials(b"", b"ann", b"p\r\nDELE 1"), None, CONTROL),
    (ROUTE, Credentials(b"", b"ann", b"p\0w"), None, CONTROL),
    (
        ROUTE,
        Credentials(b"", b"a\nnn", b"pw"),
        None,
        NeedCapabilities(),  # the client's name is not sent: the route's is
    ),
    (
        ROUTE,
        Credentials(b"boss", b"a\rnn", b"pw"),
        None,
        refused("the user name contains a control character (CR, LF or NUL)"),
    ),
    (
        ROUTE,
        Credentials(b"", b"ann", b"p" * 9000),
        None,
        refused("the login does not fit in one SASL response line of 8192 octets"),
    ),
    # PLAIN when offered, with the route's name.
    (RENAMED, Credentials(b"", b"ann", b"pw"), SASL, commands(plain(b"", b"ann.smith", b"pw"))),
    (ROUTE, Credentials(b"", b"ann", b"pw"), SASLONLY, commands(plain(b"", b"ann", b"pw"))),
    (ROUTE, Credentials(b"ann", b"ann", b"pw"), SASL, commands(plain(b"", b"ann", b"pw"))),
    (
        ROUTE,
        Credentials(b"", b"ann", LONG),
        SASL,
        commands(b"AUTH PLAIN", plain(b"", b"ann", LONG)[11:]),
    ),
    # Acting for another user: PLAIN with the routed name as authzid, or nothing.
    (
        RENAMED,
        Credentials(b"boss", b"root", b"pw"),
        SASL,
        commands(plain(b"ann.smith", b"root", b"pw")),
    ),
    (ROUTE, Credentials(b"boss", b"root", b"pw"), USERPASS, NOT_ON_BEHALF),
    (ROUTE, Credentials(b"boss", b"root", b"pw"), NONE, NOT_ON_BEHALF),
    # USER/PASS otherwise, bounded per value.
    (RENAMED, Credentials(b"", b"ann", b"pw"), USERPASS, commands(b"USER ann.smith", b"PASS pw")),
    (ROUTE, Credentials(b"", b"ann", b"pw"), LOGINONLY, commands(b"USER ann", b"PASS pw")),
    (ROUTE, Credentials(b"", b"ann", b"a pass"), NONE, commands(b"USER ann", b"PASS a pass")),
    (
        ROUTE,
        Credentials(b"", b"ann", LONG),
        USERPASS,
        refused("the password is longer than 248 octets"),
    ),
]


@pytest.mark.parametrize(("route", "credentials", "capabilities", "plan"), SASL_PLANS)
def test_planSasl(
    route: Route,
    credentials: Credentials,
    capabilities: UpstreamCapabilities | None,
    plan: LoginPlan,
) -> None:
    """
    A SASL login goes as PLAIN where offered, else as USER/PASS unless the
    client acts for another user; values that cannot go are refused before
    the upstream is asked, or once its capabilities show the line that
    would carry them.
    """
    assert planSasl(route, credentials, capabilities) == plan


@pytest.mark.parametrize(
    ("credentials", "identity"),
    [
        (Credentials(b"", b"ann", b"pw"), "ann"),
        (Credentials(b"boss", b"ann", b"pw"), "boss"),
        (Credentials(b"", b"\xffann", b"pw"), "\udcffann"),
    ],
)
def test_saslIdentity(credentials: Credentials, identity: str) -> None:
    """
    The authorization identity, if given, else the user name, chooses the
    route; octets that are not UTF-8 survive.
    """
    assert saslIdentity(credentials) == identity


@pytest.mark.parametrize(
    ("route", "plan"),
    [
        (RENAMED, commands(b"USER ann.smith")),
        (
            Route(UpstreamTarget("tcp:x:1"), "a\r\nb"),
            refused("the user name contains a control character (CR, LF or NUL)"),
        ),
        (
            Route(UpstreamTarget("tcp:x:1"), "a" * 249),
            refused("the user name is longer than 248 octets"),
        ),
    ],
)
def test_planUser(route: Route, plan: LoginPlan) -> None:
    """
    USER carries the route's login name, or is refused as a failed login.
    """
    assert planUser(route) == plan


@pytest.mark.parametrize(
    ("route", "password", "asPlain", "plan"),
    [
        (ROUTE, b"a pass", False, commands(b"PASS a pass")),
        (RENAMED, b"pw", True, commands(plain(b"", b"ann.smith", b"pw"))),
        (ROUTE, LONG, False, refused("the password is longer than 248 octets")),
        (ROUTE, LONG, True, commands(b"AUTH PLAIN", plain(b"", b"ann", LONG)[11:])),
        (ROUTE, b"p\nw", False, CONTROL),
        (ROUTE, b"p\0w", True, CONTROL),
    ],
)
def test_planPass(route: Route, password: bytes, asPlain: bool, plan: LoginPlan) -> None:
    """
    PASS carries the password, or becomes SASL PLAIN for an upstream that
    refused USER; a value that cannot go is refused as a failed login.
    """
    assert planPass(PendingPass("ann", route, asPlain), password) == plan


@pytest.mark.parametrize(
    ("capabilities", "asPlain"),
    [(USERPASS, False), (SASL, False), (SASLONLY, True), (LOGINONLY, False), (NONE, False)],
)
def test_passAsPlain(capabilities: UpstreamCapabilities, asPlain: bool) -> None:
    """
    PASS goes as SASL PLAIN only to an upstream offering PLAIN and not USER.
    """
    assert passAsPlain(capabilities) == asPlain


@pytest.mark.parametrize(
    ("route", "digest", "plan"),
    [
        (RENAMED, DIGEST, commands(b"APOP ann.smith " + DIGEST)),
        (
            Route(UpstreamTarget("tcp:x:1"), "a\nb"),
            DIGEST,
            refused("the user name contains a control character (CR, LF or NUL)"),
        ),
    ],
)
def test_planApop(route: Route, digest: bytes, plan: LoginPlan) -> None:
    """
    APOP relays the client's digest for the route's login name.
    """
    assert planApop(route, digest) == plan


def test_refusalLines() -> None:
    """
    A refusal reads -ERR [AUTH] and its reason; only the upstream's lack of
    proxy authorization is not a failed login.
    """
    assert CONTROL.line == b"-ERR [AUTH] the password contains a control character (CR, LF or NUL)"
    assert (
        NOT_ON_BEHALF.line == b"-ERR [AUTH] the mail server cannot log in on behalf of another user"
    )
    assert CONTROL.failedLogin and not NOT_ON_BEHALF.failedLogin
