"""
The console's sign-in check: the password is tried in a POP3 login at the
upstream the login routes to (USER/PASS, or SASL PLAIN where offered),
never kept; attempts count in the POP3 logins' throttle, with the same
log line and the same block; an unreachable upstream is neither success
nor failure; values no login line could carry fail without a connection.
"""

from __future__ import annotations

import base64
from ipaddress import ip_address

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from popproxy._loginlines import MAX_SASL_LINE
from popproxy._loginthrottle import LoginThrottle, ThrottleSettings
from popproxy._memorycounters import MemoryCounters
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._testkit import settle
from popproxy.console._signin import SignIn, SignInCheck
from tests.consoleharness import ROUTER, ScriptedUpstream

ORIGIN = ClientOrigin(IPv4Address("TCP", "192.0.2.9", 5000), IPv4Address("TCP", "127.0.0.1", 8110))


def check(
    upstream: ScriptedUpstream,
    login: str,
    password: str,
    throttle: LoginThrottle | None = None,
    clock: Clock | None = None,
) -> SignIn:
    signIn = SignInCheck(ROUTER, upstream.connect, clock or Clock(), throttle, 0.0)
    return settle(signIn.check(login, password, ORIGIN))


def test_userPassLogin() -> None:
    """
    Without SASL PLAIN the upstream gets USER and PASS; the right password
    signs in, a wrong one fails; every connection is closed after.
    """
    upstream = ScriptedUpstream({"alice": "pw"})
    assert check(upstream, "alice", "pw") is SignIn.OK
    assert upstream.sent == [b"CAPA", b"USER alice", b"PASS pw"]
    assert check(upstream, "alice", "nope") is SignIn.FAILED
    assert all(connection.closed for connection in upstream.connections)
    assert upstream.origins[0] == ORIGIN


def test_saslPlainWhereOffered() -> None:
    """
    An upstream offering SASL PLAIN gets an AUTH PLAIN login.
    """
    upstream = ScriptedUpstream({}, capa=b"SASL PLAIN\r\n")
    check(upstream, "alice", "pw")
    expected = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw")
    assert upstream.sent == [b"CAPA", expected]


def counted(login: str, password: str) -> tuple[SignIn, int, list[str], ScriptedUpstream]:
    """
    One sign-in through a throttle: how it ended, the address's penalty
    after it, the log lines it wrote, and the upstream it would have used.
    """
    clock = Clock()
    counters = MemoryCounters(clock)
    throttle = LoginThrottle(counters, clock, ThrottleSettings(delay=0.001, maxDelay=0.001))
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        upstream = ScriptedUpstream({"alice": "pw"})
        attempt = SignInCheck(ROUTER, upstream.connect, clock, throttle, 0.0).check(
            login, password, ORIGIN
        )
        clock.advance(1)
        outcome = settle(attempt)
    finally:
        globalLogPublisher.removeObserver(observe)
    lines = [formatEvent(event) for event in events if event.get("log_namespace") != "twisted"]
    return outcome, settle(counters.count("penalty:192.0.2.9")), lines, upstream


@pytest.mark.parametrize(
    ("login", "password"),
    [
        ("alice", "pw\r\nDELE 1"),
        ("alice", "pw\nDELE 1"),
        ("alice", "pw\rDELE 1"),
        ("alice", "pw\0"),
        ("alice\r\nDELE 1", "pw"),
        ("alice\0admin", "pw"),
        ("alice", "x" * MAX_SASL_LINE),
    ],
    ids=[
        "password-crlf",
        "password-lf",
        "password-cr",
        "password-nul",
        "login-crlf",
        "login-nul",
        "password-too-long-for-a-sasl-line",
    ],
)
def test_valuesNoLoginLineCanCarryNeverConnect(login: str, password: str) -> None:
    """
    A login or password with CR, LF or NUL, or too long for any login
    line, fails as a wrong password does (the same outcome, the same
    penalty, the same fail2ban line) without the upstream being connected
    to at all; the log says why, the value escaped.
    """
    wrong = counted("alice", "wrong")
    outcome, penalty, lines, upstream = counted(login, password)
    assert outcome is wrong[0] is SignIn.FAILED
    assert penalty == wrong[1] > 0
    assert upstream.origins == [] and upstream.connections == [] and upstream.sent == []
    assert wrong[3].origins != []
    failures = [line for line in lines if line.startswith("login failure: client=192.0.2.9")]
    assert len(failures) == 1
    refused = [line for line in lines if "login values refused" in line]
    assert len(refused) == 1 and "\r" not in refused[0] and "\n" not in refused[0]
    assert "\0" not in refused[0]


def test_unreachableUpstream() -> None:
    """
    An upstream that cannot be reached is "unavailable", not a failure.
    """
    counters = MemoryCounters(Clock())
    throttle = LoginThrottle(counters, Clock(), ThrottleSettings())
    upstream = ScriptedUpstream({}, unreachable=True)
    assert check(upstream, "alice", "pw", throttle) is SignIn.UNAVAILABLE
    assert settle(counters.count("penalty:192.0.2.9")) == 0


def test_failuresCountInTheThrottleAndBlock() -> None:
    """
    Each failure logs the fail2ban line and counts for the address; past
    the threshold the address is blocked and nothing more goes upstream.
    """
    clock = Clock()
    throttle = LoginThrottle(
        MemoryCounters(clock),
        clock,
        ThrottleSettings(delay=0.001, maxDelay=0.001, blockAfter=3, newAccountWeight=1),
    )
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        upstream = ScriptedUpstream({"alice": "pw"})
        outcomes = []
        for _ in range(4):
            attempt = SignInCheck(ROUTER, upstream.connect, clock, throttle, 0.0).check(
                "alice", "bad", ORIGIN
            )
            clock.advance(1)
            outcomes.append(settle(attempt))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert outcomes == [SignIn.FAILED] * 3 + [SignIn.BLOCKED]
    assert len(upstream.connections) == 3
    formats = [event.get("log_format") for event in events]
    assert formats.count("login failure: client={client} account={account}") == 3
    assert "login block: client={client} seconds={seconds} account={account}" in formats
    assert ip_address("192.0.2.9")
