"""
Tests for L{popproxy._deadlines}: the command-line deadline and the
session's [limits] timers, on a hand-driven clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from popproxy._admission import ConnectionLimits
from popproxy._deadlines import LineDeadline, SessionDeadlines


def test_partialLineExpires() -> None:
    """
    A line left partial expires C{seconds} after its first byte, however
    many more bytes of it arrive.
    """
    clock, fired = Clock(), []
    deadline = LineDeadline(clock, 5, lambda: fired.append(clock.seconds()))
    for _ in range(5):
        deadline.fed(0, True)
        clock.advance(1)
    assert fired == [5]
    assert not deadline.running


def test_completedLineStartsAnew() -> None:
    """
    A read that completes a line and leaves the start of another gives
    the new line its own full time; a read that leaves nothing stops it.
    """
    clock, fired = Clock(), []
    deadline = LineDeadline(clock, 5, lambda: fired.append(clock.seconds()))
    deadline.fed(0, True)
    clock.advance(4)
    deadline.fed(1, True)
    clock.advance(4)
    assert fired == []
    deadline.fed(1, False)
    clock.advance(100)
    assert fired == []


def test_pipelinedLinesKeepOneTimer() -> None:
    """
    Many reads that each complete lines and leave another partial one (a
    pipelining client) keep one timer, moved each time, not one per read.
    """
    clock, fired = Clock(), []
    deadline = LineDeadline(clock, 5, lambda: fired.append(clock.seconds()))
    deadline.fed(0, True)
    timer = list(clock.getDelayedCalls())
    for _ in range(100):
        clock.advance(0.5)
        deadline.fed(3, True)
    assert clock.getDelayedCalls() == timer
    clock.advance(5)
    assert fired == [55]


def test_sessionDeadlines() -> None:
    """
    The login deadline fires unless the client logs in; the hold on the
    upstream fires once per idle period and a login command cancels it.
    """
    clock = Clock()
    events: list[tuple[str, float]] = []
    deadlines = SessionDeadlines(
        clock,
        ConnectionLimits(loginTimeout=60, upstreamHold=10),
        loginExpired=lambda: events.append(("login", clock.seconds())),
        lineExpired=lambda: events.append(("line", clock.seconds())),
        releaseUpstream=lambda: events.append(("release", clock.seconds())),
    )
    deadlines.opened()
    deadlines.upstreamIdle()
    clock.advance(5)
    deadlines.upstreamIdle()
    clock.advance(5)
    deadlines.upstreamIdle()
    deadlines.loginCommand()
    clock.advance(50)
    assert events == [("release", 10), ("login", 60)]
    other = SessionDeadlines(
        clock,
        ConnectionLimits(loginTimeout=60),
        loginExpired=lambda: events.append(("other login", clock.seconds())),
        lineExpired=lambda: None,
        releaseUpstream=lambda: None,
    )
    other.opened()
    other.loggedIn()
    clock.advance(100)
    assert ("other login", 120) not in events and len(events) == 2
