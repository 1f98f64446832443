"""
Tests for popproxy._preloginpool: the places for upstream connections made
before login, on a task.Clock.  What it proves: at most C{limit} places are
taken, a place given back can be taken again, a limit of 0 gives none, and
a full pool warns at most once a minute with how many sessions went
without.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._preloginpool import PreloginPool


def test_atMostLimitPlaces() -> None:
    """
    Three places: three taken, the fourth refused; one given back is taken
    again.
    """
    pool = PreloginPool(3, Clock())
    assert [pool.take() for _ in range(4)] == [True, True, True, False]
    pool.give()
    assert pool.take() and pool.held == 3


def test_zeroGivesNone() -> None:
    """
    C{prelogin_upstream = 0}: no session connects before login.
    """
    assert not PreloginPool(0, Clock()).take()


def test_fullPoolWarnsOnceAMinute() -> None:
    """
    A flood against a full pool: one warning at once, then one a minute
    later counting the sessions greeted without a connection since.
    """
    clock = Clock()
    pool = PreloginPool(1, clock)
    pool.take()
    with capturedLogs() as events:
        for _ in range(100):
            pool.take()
            clock.advance(1)
    lines = [formatEvent(event) for event in events]
    assert len(lines) == 2
    assert "1 upstream connections held for sessions not logged in" in lines[0]
    assert "1 new sessions greeted without one (no APOP for them)" in lines[0]
    assert "60 new sessions greeted without one" in lines[1]


def test_reconfiguredLimitKeepsThePlacesTaken() -> None:
    """
    Lowering the limit below the places taken lets nobody in until enough
    are given back; raising it lets in only the difference.
    """
    pool = PreloginPool(3, Clock())
    assert all(pool.take() for _ in range(3))
    pool.reconfigure(2)
    assert not pool.take()
    pool.give()
    pool.give()
    assert pool.take() and not pool.take()
    pool.reconfigure(4)
    assert pool.take() and pool.take() and not pool.take()
