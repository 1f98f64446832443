"""
Tests for popproxy._refusallog: the log of connections refused at the
door, on a task.Clock.  What it proves: a network's first refusal is
logged at once in the fixed format, the next ones within the interval
make one line with their count, a flood that goes on makes one line per
interval, a quiet network's next refusal is logged at once again, reasons
and networks are counted apart, and a flood from more networks than it
counts one by one is counted together in a bounded number of lines.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._refusallog import RefusalLog


def lines(log: RefusalLog, clock: Clock, refusals: list[tuple[str, str]], then: float) -> list[str]:
    """
    The log lines of C{refusals} (network, reason), each from port 40000
    of the network's address, then of C{then} seconds passing.
    """
    with capturedLogs() as events:
        for network, reason in refusals:
            log.refused(f"{network.split('/')[0]}:40000", network, reason)
        clock.advance(then)
    return [formatEvent(event) for event in events]


def test_firstRefusalAtOnceThenOneCountedLine() -> None:
    """
    1,000 refusals from one address within a minute: the first logged at
    once as before, then one line for the other 999 when the minute ends.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0)
    logged = lines(log, clock, [("192.0.2.7/32", "rate")] * 1000, 60)
    assert logged == [
        "connection from 192.0.2.7:40000 refused: rate",
        "refused 999 more connections from 192.0.2.7/32 in the last 60s: rate",
    ]


def test_floodThatGoesOnMakesOneLinePerInterval() -> None:
    """
    A flood over three minutes: one line at once, then one a minute.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0)
    logged: list[str] = []
    for _ in range(3):
        logged += lines(log, clock, [("192.0.2.7/32", "rate")] * 500, 60)
    assert len(logged) == 4
    assert logged[1:] == [
        "refused 499 more connections from 192.0.2.7/32 in the last 60s: rate",
        "refused 500 more connections from 192.0.2.7/32 in the last 60s: rate",
        "refused 500 more connections from 192.0.2.7/32 in the last 60s: rate",
    ]


def test_quietNetworkIsLoggedAtOnceAgain() -> None:
    """
    A single refusal makes no counted line; after a quiet interval, the
    network's next refusal is logged at once again.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0)
    assert len(lines(log, clock, [("192.0.2.7/32", "address")], 60)) == 1
    assert log.networksCounted == 0
    assert lines(log, clock, [("192.0.2.7/32", "address")], 0) == [
        "connection from 192.0.2.7:40000 refused: address"
    ]


def test_networksAndReasonsCountedApart() -> None:
    """
    Two networks and two reasons: each pair has its own first line and
    its own count.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0)
    refusals = [("192.0.2.7/32", "rate"), ("192.0.2.8/32", "rate"), ("192.0.2.7/32", "address")]
    logged = lines(log, clock, refusals * 3, 60)
    assert sorted(logged[3:]) == [
        "refused 2 more connections from 192.0.2.7/32 in the last 60s: address",
        "refused 2 more connections from 192.0.2.7/32 in the last 60s: rate",
        "refused 2 more connections from 192.0.2.8/32 in the last 60s: rate",
    ]


def test_manyNetworksAreCountedTogether() -> None:
    """
    A flood from 1,000 networks, with 10 counted one by one: 10 first
    lines at once, then one line counting the 990 others.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0, maxNetworks=10)
    refusals = [(f"2001:db8:{n:x}::/64", "rate") for n in range(1000)]
    logged = lines(log, clock, refusals, 60)
    assert len(logged) == 11
    assert logged[-1] == "refused 990 more connections from other networks in the last 60s: rate"


def test_reconfiguredIntervalKeepsWhatIsCounted() -> None:
    """
    A reload that changes the interval mid-flood neither logs the flood's
    network as new nor loses its count: the running interval ends as it
    began, and the next one has the new length.
    """
    clock = Clock()
    log = RefusalLog(clock, 60.0)
    logged = lines(log, clock, [("192.0.2.7/32", "rate")] * 10, 30)
    log.reconfigure(120.0)
    logged += lines(log, clock, [("192.0.2.7/32", "rate")] * 10, 30)
    logged += lines(log, clock, [("192.0.2.7/32", "rate")] * 5, 120)
    assert logged == [
        "connection from 192.0.2.7:40000 refused: rate",
        "refused 19 more connections from 192.0.2.7/32 in the last 60s: rate",
        "refused 5 more connections from 192.0.2.7/32 in the last 120s: rate",
    ]
