"""
Tests for popproxy._scannerreachability: a daemon's status kept from each
attempt, its changes logged once, per-message warnings rate-limited (with a
Clock, no sockets).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, LogLevel, capturedLogs, formatEvent

from popproxy.interfaces import ScannerReachability, ScannerStatus

ADDRESS = "tcp:127.0.0.1:3310"


def made(at: float = 1000.0) -> tuple[ScannerReachability, Clock]:
    clock = Clock()
    clock.advance(at)
    return ScannerReachability("clamd", ADDRESS, clock), clock


def lines(events: Sequence[LogEvent]) -> list[tuple[str, str]]:
    return [(e["log_level"].name, formatEvent(e)) for e in events]


def test_nothingKnownBeforeAnyAttempt() -> None:
    """
    Before any attempt the status says nothing was tried, and nothing is logged.
    """
    with capturedLogs() as events:
        reachability, _ = made()
    assert reachability.status == ScannerStatus("clamd", ADDRESS)
    assert events == []


def test_firstAnswerIsLoggedOnceAsInfo() -> None:
    """
    The first attempt that reaches the daemon says so once (info), with its
    address; later successes say nothing and keep the time it became reachable.
    """
    reachability, clock = made()
    with capturedLogs() as events:
        reachability.reached()
        clock.advance(5)
        reachability.reached()
        reachability.reached()
    assert lines(events) == [("info", f"clamd at {ADDRESS} is reachable")]
    assert reachability.status == ScannerStatus("clamd", ADDRESS, True, 1000.0, "")


def test_firstFailureIsLoggedOnceAsWarning() -> None:
    """
    The first attempt that cannot reach the daemon warns once with the
    reason; later failures only update the reason in the status.
    """
    reachability, clock = made()
    with capturedLogs() as events:
        reachability.missed("connection refused")
        clock.advance(3)
        reachability.missed("no answer within 20 s")
    assert lines(events) == [("warn", f"clamd at {ADDRESS} cannot be reached: connection refused")]
    assert reachability.status == ScannerStatus(
        "clamd", ADDRESS, False, 1000.0, "no answer within 20 s"
    )


def test_eachChangeOfStateIsLoggedOnce() -> None:
    """
    Reachable, then down, then back: one line per change (a warning when it
    goes, info when it is back), each change stamped with the clock's time.
    """
    reachability, clock = made()
    with capturedLogs() as events:
        reachability.reached()
        clock.advance(10)
        reachability.missed("refused")
        reachability.missed("refused")
        clock.advance(10)
        reachability.reached()
        reachability.reached()
    assert lines(events) == [
        ("info", f"clamd at {ADDRESS} is reachable"),
        ("warn", f"clamd at {ADDRESS} is no longer reachable: refused"),
        ("info", f"clamd at {ADDRESS} is reachable again"),
    ]
    assert reachability.status == ScannerStatus("clamd", ADDRESS, True, 1020.0, "")


def test_warningsAtMostOncePerIntervalWithACount() -> None:
    """
    Of warnings about one daemon, one per 60 s gets through; the next one
    that does says how many were held back and since when.
    """
    reachability, clock = made()
    log = Logger(namespace="popproxy.filter.scan")
    with capturedLogs() as events:
        logged = [reachability.warn(log, "RETR {index} not scanned", index=i) for i in range(5)]
        clock.advance(59)
        logged.append(reachability.warn(log, "RETR {index} not scanned", index=5))
        clock.advance(1)
        logged.append(reachability.warn(log, "RETR {index} not scanned", index=6))
        clock.advance(60)
        logged.append(reachability.warn(log, "RETR {index} not scanned", index=7))
    assert logged == [True, False, False, False, False, False, True, True]
    assert lines(events) == [
        ("warn", "RETR 0 not scanned"),
        ("warn", "RETR 6 not scanned (5 more like it not logged since 60 s ago)"),
        ("warn", "RETR 7 not scanned"),
    ]
    assert events[0]["log_namespace"] == "popproxy.filter.scan"


def test_comingBackSaysHowManyWarningsWereHeldBack() -> None:
    """
    When the daemon is back, the line saying so counts the warnings held
    back since the last one logged, and the count starts again.
    """
    reachability, clock = made()
    log = Logger()
    with capturedLogs() as events:
        reachability.missed("refused")
        for _ in range(4):
            reachability.warn(log, "not scanned")
        reachability.reached()
        clock.advance(61)
        reachability.warn(log, "not scanned")
    assert [text for _, text in lines(events)] == [
        f"clamd at {ADDRESS} cannot be reached: refused",
        "not scanned",
        f"clamd at {ADDRESS} is reachable again (3 warnings about it were not logged meanwhile)",
        "not scanned",
    ]


def test_untrustedReasonsAreEscapedInTheLog() -> None:
    """
    A reason that comes from the network (a daemon's answer) cannot forge a
    log line: control characters are escaped in the logged text.
    """
    reachability, _ = made()
    with capturedLogs() as events:
        reachability.missed("bad\nforged line")
    [event] = events
    assert event["log_level"] == LogLevel.warn
    assert "\n" not in formatEvent(event)
