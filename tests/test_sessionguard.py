"""
Tests for popproxy._sessionguard: one session's admission ticket,
[limits] timers and place among the upstream connections held before
login, driven by a task.Clock.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from popproxy._admission import Admission, ConnectionLimits
from popproxy._config import Config
from popproxy._preloginpool import PreloginPool
from popproxy._routing import Router
from popproxy._sessionguard import LINE_TOO_SLOW, LOGIN_TOO_SLOW, SessionGuard
from popproxy._sessionsettings import SessionSettings
from popproxy._sharedadmission import ProcessAdmission, SharedAdmission
from tests.test_sharedadmission import HandLedger


def settingsFor(
    clock: Clock, limits: ConnectionLimits | None, admission: ProcessAdmission | None
) -> SessionSettings:
    config = Config(upstream="tcp:127.0.0.1:110")
    return SessionSettings(
        router=Router(config.routing),
        connect=lambda target, origin: Deferred(),
        clock=clock,
        limits=limits,
        admission=admission,
    )


def answerOf(answer: Deferred[bytes | None]) -> bytes | None:
    """
    The answer of an admission that needs nobody else (it fires at once).
    """
    results: list[bytes | None] = []
    answer.addCallback(results.append)
    assert len(results) == 1, "the admission did not answer at once"
    return results[0]


class Ended:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, why: str, lastWords: bytes) -> None:
        self.calls.append((why, lastWords))


def test_withoutLimitsNothingIsEnforced() -> None:
    """
    Without [limits] every read counts as the client being there, nothing
    is timed, the upstream is connected for the greeting and nothing is
    refused.
    """
    clock = Clock()
    ended = Ended()
    guard = SessionGuard(settingsFor(clock, None, None), end=ended, releaseUpstream=lambda: None)
    assert answerOf(guard.admit("192.0.2.1", "192.0.2.1:5")) is None
    guard.opened()
    assert guard.fed(0, True) and not guard.enforced and guard.connectToGreet()
    clock.advance(10_000)
    assert ended.calls == [] and clock.getDelayedCalls() == []


def test_loginAndLineDeadlines() -> None:
    """
    Under [limits], bytes that complete no line do not count as activity;
    a partial line past its deadline, or no login in time, ends the
    session with its own last words.
    """
    limits = ConnectionLimits(loginTimeout=60, commandDeadline=5, upstreamHold=0)
    clock = Clock()
    ended = Ended()
    guard = SessionGuard(settingsFor(clock, limits, None), end=ended, releaseUpstream=lambda: None)
    guard.opened()
    assert not guard.connectToGreet() and guard.enforced
    assert guard.fed(0, True) is False
    clock.advance(5)
    assert ended.calls == [("command line timeout", LINE_TOO_SLOW)]
    assert guard.fed(1, False) is True
    clock.advance(55)
    assert ended.calls[-1] == ("login timeout", LOGIN_TOO_SLOW)


def test_refusedAtTheDoorAndTicketGivenBack() -> None:
    """
    Over the per-address limit the connection gets the refusal line and is
    marked refused; a session that closes gives its place back, so the
    next connection from that address is admitted.
    """
    clock = Clock()
    limits = ConnectionLimits(perAddress=1, trusted=())
    admission = Admission(limits, clock.seconds, 10_000)
    settings = settingsFor(clock, limits, admission)
    first = SessionGuard(settings, end=Ended(), releaseUpstream=lambda: None)
    assert answerOf(first.admit("192.0.2.1", "192.0.2.1:5")) is None
    second = SessionGuard(settings, end=Ended(), releaseUpstream=lambda: None)
    line = answerOf(second.admit("192.0.2.1", "192.0.2.1:6"))
    assert line is not None and line.startswith(b"-ERR [SYS/TEMP]") and second.refused
    first.closed()
    third = SessionGuard(replace(settings), end=Ended(), releaseUpstream=lambda: None)
    assert answerOf(third.admit("192.0.2.1", "192.0.2.1:7")) is None


def test_closedWhileAdmissionIsAskedIsNoSession() -> None:
    """
    A client that leaves while the shared counts are asked is no session
    (the session logs and counts nothing for it) and its place, once
    granted, is given back at once.
    """
    clock = Clock()
    limits = ConnectionLimits(perAddress=1, trusted=())
    local = Admission(limits, clock.seconds, 10_000)
    ledger = HandLedger()
    settings = settingsFor(clock, limits, SharedAdmission(local, ledger, clock))
    guard = SessionGuard(settings, end=Ended(), releaseUpstream=lambda: None)
    waiting = guard.admit("192.0.2.1", "192.0.2.1:5")
    guard.closed()
    assert guard.refused
    ledger.answerLast(None)
    assert answerOf(waiting) is None
    assert local.open == 0 and local.sessionsFrom("192.0.2.1") == 0
    assert [lease for _, lease in ledger.left] == [ledger.asked[0][1]]


def pooledGuards(clock: Clock, pool: PreloginPool, count: int) -> list[SessionGuard]:
    limits = ConnectionLimits(upstreamHold=10)
    settings = replace(settingsFor(clock, limits, None), preloginPool=pool)
    return [SessionGuard(settings, end=Ended(), releaseUpstream=lambda: None) for _ in range(count)]


def test_greetingConnectionsBoundedPerProcess() -> None:
    """
    With two places for pre-login upstream connections, two sessions
    connect upstream for their greeting and a third is greeted without
    one; a place comes back when a session's connection is released, at
    its first login command, or when it ends, and a new session takes it.
    """
    clock = Clock()
    pool = PreloginPool(2, clock)
    first, second, third, fourth, fifth = pooledGuards(clock, pool, 5)
    assert first.connectToGreet() and second.connectToGreet()
    assert not third.connectToGreet() and pool.held == 2
    first.upstreamReleased()
    first.closed()
    assert pool.held == 1 and fourth.connectToGreet()
    second.loginCommand()
    second.loggedIn()
    second.closed()
    assert pool.held == 1 and fifth.connectToGreet()
    fourth.closed()
    fifth.closed()
    third.closed()
    assert pool.held == 0
