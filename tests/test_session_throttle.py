"""
Protocol tests of the login throttle across sessions (sessions on
StringTransports sharing one throttle and one task.Clock): the password of
the next attempt from an address that failed reaches the upstream only
after the delay, whichever session it comes on; a blocked address's
password never reaches it; an address that logs in well is not slowed;
parallel sessions' first passwords go at most C{in_flight} at a time.
"""

from __future__ import annotations

import base64

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._loginsinflight import LoginsInFlight
from popproxy._loginthrottle import LoginThrottle
from popproxy._memorycounters import MemoryCounters
from tests.sessionharness import Harness

ATTACKER = "192.0.2.66"
SASL_CAPA = b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nUSER\r\n.\r\n"


def throttled() -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(MemoryCounters(clock), clock), clock


def session(throttle: LoginThrottle, clock: Clock, peer: str = ATTACKER) -> Harness:
    h = Harness(loginThrottle=throttle, clock=clock, peerAddress=peer, requireTLS="never")
    h.received()
    return h


def failOnce(h: Harness, user: bytes = b"bob") -> None:
    """
    One wrong USER/PASS login that the upstream refuses at once.
    """
    h.send(b"USER " + user + b"\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"PASS wrong\r\n")
    h.clock.advance(20)
    h.upstream.reply(b"-ERR [AUTH] Authentication failed.\r\n")
    h.settle()
    assert h.received() == b"+OK\r\n-ERR [AUTH] Authentication failed.\r\n"


def test_nextSessionsPasswordWaitsForTheDelay() -> None:
    """
    A client that hangs up after a failure and reconnects at once gains
    nothing: on the new session, its next password reaches the upstream
    only a second after the failure.
    """
    throttle, clock = throttled()
    first = session(throttle, clock)
    failOnce(first)
    first.client.dropped(Failure(ConnectionDone("hung up")))
    second = session(throttle, clock)
    second.send(b"USER bob\r\n")
    second.upstream.reply(b"+OK\r\n")
    assert second.upstream.received() == b"USER bob\r\n"
    second.send(b"PASS guess2\r\n")
    clock.advance(0.99)
    assert second.upstream.received() == b""
    clock.advance(0.01)
    assert second.upstream.received() == b"PASS guess2\r\n"


def test_saslLoginWaitsToo() -> None:
    """
    AUTH PLAIN is held back the same way: its credentials reach the
    upstream only after the address's delay.
    """
    throttle, clock = throttled()
    failOnce(session(throttle, clock))
    h = session(throttle, clock)
    h.send(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0guess") + b"\r\n")
    h.upstream.reply(SASL_CAPA)
    h.upstream.received()
    clock.advance(0.5)
    assert h.upstream.received() == b""
    clock.advance(0.5)
    assert h.upstream.received().startswith(b"AUTH PLAIN")


def test_blockedAddressPasswordNeverReachesUpstream() -> None:
    """
    After a spray over six accounts, the address is blocked: its next
    login is refused with -ERR [SYS/TEMP] at once, the session ends, and
    no upstream connection is even made for it.
    """
    throttle, clock = throttled()
    for number in range(6):
        failOnce(session(throttle, clock), f"user{number}".encode())
    h = session(throttle, clock)
    connections = len(h.upstreams)
    h.send(b"USER user7\r\nPASS guess\r\n")
    assert len(h.upstreams) == connections
    assert h.received() == (
        b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"
    )
    with capturedLogs() as events:
        clock.advance(1)
    assert h.client.closedBy is not None
    assert any("closed: throttled after failed logins" in formatEvent(e) for e in events)


def test_passOnAConnectionOpenedBeforeTheBlock() -> None:
    """
    A session that sent USER before its address was blocked has its PASS
    refused: the password never reaches the upstream.
    """
    throttle, clock = throttled()
    for number in range(5):
        failOnce(session(throttle, clock), f"user{number}".encode())
    early = session(throttle, clock)
    early.send(b"USER user9\r\n")
    early.upstream.reply(b"+OK\r\n")
    failOnce(session(throttle, clock), b"user5")
    early.send(b"PASS guess\r\n")
    assert early.upstream.received() == b"USER user9\r\n"
    assert early.received() == (
        b"+OK\r\n-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"
    )


def test_otherAddressNotSlowed() -> None:
    """
    A failing address does not slow a client on another address: its
    password goes upstream at once.
    """
    throttle, clock = throttled()
    for number in range(6):
        failOnce(session(throttle, clock), f"user{number}".encode())
    h = session(throttle, clock, peer="198.51.100.7")
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"PASS secret\r\n")
    assert h.upstream.received() == b"USER alice\r\nPASS secret\r\n"
    h.upstream.reply(b"+OK logged in\r\n")
    assert h.received() == b"+OK\r\n+OK logged in\r\n"


def test_hangingUpDuringTheWaitSendsNothing() -> None:
    """
    A client that hangs up while its attempt waits its turn has its
    password dropped: it never reaches the upstream.
    """
    throttle, clock = throttled()
    failOnce(session(throttle, clock))
    h = session(throttle, clock)
    h.send(b"USER bob\r\nPASS guess\r\n")
    h.upstream.reply(b"+OK\r\n")
    assert h.upstream.received() == b"USER bob\r\n"
    h.client.dropped(Failure(ConnectionDone("hung up")))
    clock.advance(5)
    assert h.upstream.received() == b""


def sprayInParallel(
    throttle: LoginThrottle, clock: Clock, sessions: int
) -> tuple[int, list[bytes]]:
    """
    C{sessions} sessions from one address each send USER and a wrong PASS
    for an account of their own at the same moment; the upstream refuses
    each password 50 ms after it arrives.  Return how many passwords
    reached the upstream, and what each client was told.
    """
    spray = [session(throttle, clock) for _ in range(sessions)]
    for number, h in enumerate(spray):
        h.send(b"USER user%d\r\n" % number)
        h.upstream.reply(b"+OK\r\n")
        h.upstream.received()
    for h in spray:
        h.send(b"PASS wrong\r\n")
    passwords = 0
    for _ in range(1200):  # a minute, in 50 ms steps
        for h in spray:
            if b"PASS" in h.upstream.received():
                passwords += 1
                h.upstream.reply(b"-ERR [AUTH] Authentication failed.\r\n")
        clock.advance(0.05)
    return passwords, [h.received() for h in spray]


def test_parallelFirstPasswordsGoTwoAtATime() -> None:
    """
    Twenty sessions from one address send their first wrong passwords at
    once (none of them has failed yet).  With two in flight at a time, each
    verdict is on record before the next password beyond the two goes, so
    the throttle's delays and block apply: the upstream sees the six that
    block the address (six new accounts score 30) and at most one more
    that was in flight then; every other client is refused with
    -ERR [SYS/TEMP] and its password never goes upstream.
    """
    clock = Clock()
    inFlight = LoginsInFlight(clock, 2, maxWait=15.0)
    throttle = LoginThrottle(MemoryCounters(clock), clock, inFlight=inFlight)
    passwords, answers = sprayInParallel(throttle, clock, 20)
    assert 6 <= passwords <= 7
    failed = [a for a in answers if a.startswith(b"+OK\r\n-ERR [AUTH]")]
    refused = [a for a in answers if a.startswith(b"+OK\r\n-ERR [SYS/TEMP] too many")]
    assert len(failed) == passwords and len(refused) == 20 - passwords
    assert inFlight.inFlight(ATTACKER) == 0


def test_withoutTheCapEveryFirstPasswordGoes() -> None:
    """
    The same spray without a cap (how the throttle was before it): all
    twenty first passwords reach the upstream before any has failed.
    """
    clock = Clock()
    throttle = LoginThrottle(MemoryCounters(clock), clock)
    passwords, _ = sprayInParallel(throttle, clock, 20)
    assert passwords == 20
