"""
Tests for popproxy.console._adminsignin: an administrator's name and
password against the configured hashes, through the login throttle as
every login (a block refuses before any hash is computed; failures are
logged as the line fail2ban matches); unknown names cost a hash too.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._chain import runHere
from popproxy._loginthrottle import LoginThrottle, ThrottleSettings
from popproxy._memorycounters import MemoryCounters
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._signin import SignIn
from tests.consoleharness import adminHashes


def outcome(deferred: Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "not answered"
    return results[0]


class CountingThreads:
    """
    Runs work at once, counting how many hashes were asked for.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, work: Any) -> Deferred[Any]:
        self.calls += 1
        return runHere(work)


def test_rightAndWrong() -> None:
    """
    The right password signs in; a wrong one, an unknown name, and a
    right password for another name do not.
    """
    hashes = adminHashes({"root": "root-password", "ops": "ops-password"})
    check = AdminSignInCheck(hashes, Clock(), None, runHere, 0.0)
    assert check.enabled
    assert outcome(check.check("root", "root-password", "192.0.2.1")) is SignIn.OK
    assert outcome(check.check("root", "ops-password", "192.0.2.1")) is SignIn.FAILED
    assert outcome(check.check("nobody", "root-password", "192.0.2.1")) is SignIn.FAILED
    assert outcome(check.check("Root", "root-password", "192.0.2.1")) is SignIn.FAILED


def test_unknownNamesAreHashedToo() -> None:
    """
    A name that is no administrator's still costs one hash in the thread
    pool, as a known one does.
    """
    threads = CountingThreads()
    check = AdminSignInCheck(adminHashes({"root": "root-password"}), Clock(), None, threads, 0.0)
    outcome(check.check("nobody", "x", "192.0.2.1"))
    outcome(check.check("root", "x", "192.0.2.1"))
    assert threads.calls == 2


def test_noAdminsNoSignIn() -> None:
    """
    Without accounts every attempt fails.
    """
    check = AdminSignInCheck((), Clock(), None, runHere, 0.0)
    assert not check.enabled
    assert outcome(check.check("root", "", "192.0.2.1")) is SignIn.FAILED


def test_throttledAsEveryLogin() -> None:
    """
    Failures are logged as C{login failure: client=… account=…} and add up
    to a block; a blocked address is refused before any hash; a success
    from elsewhere is unaffected.
    """
    clock = Clock()
    settings = ThrottleSettings(delay=0.0, blockAfter=2, newAccountWeight=1)
    throttle = LoginThrottle(MemoryCounters(clock), clock, settings)
    threads = CountingThreads()
    check = AdminSignInCheck(adminHashes({"root": "root-password"}), clock, throttle, threads, 0.0)
    with capturedLogs() as events:
        assert outcome(check.check("root", "a", "198.51.100.1")) is SignIn.FAILED
        assert outcome(check.check("root", "b", "198.51.100.1")) is SignIn.FAILED
    lines = [formatEvent(event) for event in events]
    assert "login failure: client=198.51.100.1 account=root" in lines
    assert any(line.startswith("login block: client=198.51.100.1") for line in lines)
    before = threads.calls
    assert outcome(check.check("root", "root-password", "198.51.100.1")) is SignIn.BLOCKED
    assert threads.calls == before
    assert outcome(check.check("root", "root-password", "192.0.2.5")) is SignIn.OK
