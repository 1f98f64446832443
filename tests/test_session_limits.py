"""
Protocol tests for the C{[limits]} of a session (L{popproxy._admission},
L{popproxy._deadlines}): what a refused client receives and that nothing
went upstream for it, the login and command-line deadlines, invalid
commands before login counted as failed logins, and the upstream connection
made for the greeting released when no login comes.
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from popproxy._admission import Admission, ConnectionLimits
from popproxy._metrics import Metrics
from popproxy._preloginpool import PreloginPool
from tests.sessionharness import Harness

LIMITS = ConnectionLimits(trusted=())
TIMESTAMP_GREETING = b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n"
CAPA = b"+OK\r\nTOP\r\nUIDL\r\n.\r\n"


def gate(limits: ConnectionLimits, clock: Clock) -> Admission:
    return Admission(limits, clock.seconds, descriptors=1 << 20)


def test_overAddressLimitRefusedWithoutUpstream() -> None:
    """
    With two sessions open from an address and a limit of two, a third
    connection gets one C{-ERR [SYS/TEMP]} line and is closed; no upstream
    connection is made for it; the refusal is counted by reason.  Once a
    session ends, the address is admitted again.
    """
    registry = CollectorRegistry()
    metrics = Metrics()
    metrics.begin(registry, None)
    clock = Clock()
    admission = gate(replace(LIMITS, perAddress=2), clock)
    sessions = [
        Harness(limits=LIMITS, admission=admission, clock=clock, metrics=metrics) for _ in range(2)
    ]
    refused = Harness(limits=LIMITS, admission=admission, clock=clock, metrics=metrics)
    assert refused.received() == (
        b"-ERR [SYS/TEMP] too many sessions from your address, try again later\r\n"
    )
    assert refused.upstreams == []
    refused.settle()
    assert refused.client.closedBy is not None
    assert [len(h.upstreams) for h in sessions] == [1, 1]
    assert (
        registry.get_sample_value(
            "popproxy_connections_refused_total", {"listener": "test", "reason": "address"}
        )
        == 1
    )
    # A refused connection is no session: it did not open or end one.
    assert registry.get_sample_value("popproxy_sessions_open", {"listener": "test"}) == 2
    sessions[0].send(b"QUIT\r\n")
    sessions[0].settle()
    again = Harness(limits=LIMITS, admission=admission, clock=clock)
    assert again.received() == b"+OK popproxy ready\r\n"


def test_slowlorisClosedAtCommandDeadline() -> None:
    """
    A client sending one byte of a command every second does not keep its
    session: it is closed C{command_deadline} seconds after the line began,
    although the idle timeout is much longer.
    """
    h = Harness(limits=replace(LIMITS, commandDeadline=10), idleTimeout=30)
    h.received()
    for byte in b"USER alice":
        h.send(bytes([byte]))
        h.clock.advance(1)
        if h.client.closedBy is not None:
            break
    assert h.received() == (b"-ERR [SYS/PERM] autologout: command line not completed in time\r\n")
    assert h.client.closedBy is not None
    assert h.clock.seconds() == 10
    assert h.upstream.received() == b""


def test_bytesDoNotResetIdleTimer() -> None:
    """
    Partial lines do not count as activity: a client that sends a whole
    command, then a byte now and then without finishing a line, is idle.
    """
    limits = replace(LIMITS, commandDeadline=100, loginTimeout=1000)
    h = Harness(limits=limits, idleTimeout=30)
    h.received()
    h.send(b"CAPA\r\n")
    h.upstream.reply(CAPA)
    h.received()
    for _ in range(29):
        h.clock.advance(1)
        h.send(b"N")
    h.clock.advance(1)
    assert h.received() == b"-ERR [SYS/PERM] autologout: idle for too long\r\n"


def test_wholeLinesWithinDeadline() -> None:
    """
    Lines that each complete in time are served, however many bytes they
    came in.
    """
    h = Harness(limits=replace(LIMITS, commandDeadline=5, upstreamHold=1000))
    h.received()
    for _ in range(3):
        for piece in (b"CA", b"PA", b"\r\n"):
            h.send(piece)
            h.clock.advance(2)
        h.upstream.reply(CAPA)
        assert h.received().startswith(b"+OK")
    assert h.client.closedBy is None


def test_loginTimeout() -> None:
    """
    A client that has not logged in within C{login_timeout} is closed,
    even if it keeps sending valid commands (CAPA, answered from the list
    the upstream gave the first time).
    """
    h = Harness(limits=replace(LIMITS, loginTimeout=60, upstreamHold=0))
    h.received()
    h.send(b"CAPA\r\n")
    h.upstream.reply(CAPA)
    h.received()
    for _ in range(5):
        h.clock.advance(11)
        h.send(b"CAPA\r\n")
        assert h.received().startswith(b"+OK")
    assert len(h.upstreams) == 1
    h.clock.advance(5)
    assert h.received() == b"-ERR [SYS/PERM] autologout: no login in time\r\n"
    h.settle()
    assert h.client.closedBy is not None


def test_noLoginTimeoutAfterLogin() -> None:
    """
    After login only the idle timeout applies.
    """
    h = Harness(limits=replace(LIMITS, loginTimeout=60), idleTimeout=600)
    h.login()
    h.clock.advance(100)
    h.send(b"NOOP\r\n")
    assert h.upstream.received() == b"NOOP\r\n"
    assert h.client.closedBy is None


def test_invalidCommandsCountAsFailedLogins() -> None:
    """
    Before login, invalid commands count (and are delayed) like failed
    logins: the third ends the session; nothing was sent upstream.
    """
    h = Harness(limits=LIMITS, loginFailureDelay=1.0)
    h.received()
    h.send(b"XYZZY\r\n")
    assert h.received() == b""
    h.clock.advance(1)
    assert h.received().startswith(b"-ERR")
    h.send(b"RETR 1\r\n")
    h.clock.advance(1)
    assert h.received().startswith(b"-ERR")
    h.send(b"HELO x\r\n")
    h.clock.advance(1)
    assert h.received().startswith(b"-ERR")
    h.settle()
    assert h.client.closedBy is not None
    assert h.upstream.received() == b""


def test_invalidCommandsAfterLoginAreNotCounted() -> None:
    """
    After login an invalid command is only refused.
    """
    h = Harness(limits=LIMITS)
    h.login()
    for _ in range(5):
        h.send(b"XYZZY\r\n")
    assert h.received().count(b"-ERR") == 5
    assert h.client.closedBy is None


def test_upstreamReleasedWithoutLogin() -> None:
    """
    The upstream connection made for the greeting is closed after
    C{upstream_hold} seconds without a login command; CAPA is then answered
    from the list seen before (no new connection); USER connects again.
    """
    h = Harness(limits=replace(LIMITS, upstreamHold=10))
    h.received()
    h.send(b"CAPA\r\n")
    h.upstream.reply(CAPA)
    before = h.received()
    h.clock.advance(10)
    assert h.upstream.transport.aborted
    h.send(b"CAPA\r\n")
    assert h.received() == before
    assert len(h.upstreams) == 1
    h.send(b"USER alice\r\n")
    assert len(h.upstreams) == 2
    assert h.upstream.received() == b"USER alice\r\n"


def test_loginCommandKeepsUpstream() -> None:
    """
    A login command within the hold keeps the connection it needs.
    """
    h = Harness(limits=replace(LIMITS, upstreamHold=10))
    h.received()
    h.clock.advance(5)
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.clock.advance(30)
    h.send(b"PASS secret\r\n")
    assert h.upstream.received() == b"USER alice\r\nPASS secret\r\n"
    assert len(h.upstreams) == 1


def test_apopOnlyWhileGreetingConnectionIsUp() -> None:
    """
    APOP works with the timestamp of the connection made for the
    greeting; once that is released, APOP is told to reconnect.
    """
    h = Harness(greet=False, limits=replace(LIMITS, upstreamHold=10))
    h.upstream.reply(TIMESTAMP_GREETING)
    assert h.received() == b"+OK popproxy ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    h.clock.advance(10)
    h.send(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert h.received() == (b"-ERR [SYS/TEMP] the mail server connection was reset; reconnect\r\n")
    assert len(h.upstreams) == 1


def test_noUpstreamBeforeLogin() -> None:
    """
    With C{upstream_hold = 0} nothing is opened upstream before a login
    command, and the greeting has no APOP timestamp.
    """
    h = Harness(limits=replace(LIMITS, upstreamHold=0))
    assert h.received() == b"+OK popproxy ready\r\n"
    assert h.upstreams == []
    h.send(b"USER alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"


def test_sessionsBeyondThePreloginPoolGreetAlone() -> None:
    """
    With one place for a pre-login upstream connection, the first session
    connects upstream and relays its APOP timestamp; the second, while the
    first holds the place, is greeted by the proxy alone (no timestamp, no
    upstream connection) and connects at USER; once the first session's
    connection is released, a third session connects for its greeting.
    """
    clock = Clock()
    pool = PreloginPool(1, clock)
    limits = replace(LIMITS, upstreamHold=10)
    first = Harness(greet=False, limits=limits, clock=clock, preloginPool=pool)
    first.upstream.reply(TIMESTAMP_GREETING)
    assert first.received() == b"+OK popproxy ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    second = Harness(limits=limits, clock=clock, preloginPool=pool)
    assert second.received() == b"+OK popproxy ready\r\n"
    assert second.upstreams == []
    second.send(b"USER alice\r\n")
    assert second.upstream.received() == b"USER alice\r\n"
    clock.advance(10)
    assert first.upstream.transport.aborted and pool.held == 0
    third = Harness(limits=limits, clock=clock, preloginPool=pool)
    assert len(third.upstreams) == 1 and pool.held == 1
