"""
Tests for popproxy._sessionrecord: one session's identity and accounting.
The record is given a fake clock, the upstream's address and the bytes
sent as plain values the test changes, and a metrics object that notes
what it is told; what is checked is the opened and closed log lines, the
metrics, the filter context of a retrieval and the frozen snapshot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent

from popproxy._metrics import Metrics
from popproxy._sessionrecord import SessionRecord, describePeer


class FakeMetrics(Metrics):
    """
    Notes the sessions opened and closed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.told: list[tuple[object, ...]] = []

    def sessionOpened(self, listener: str) -> None:
        self.told.append(("opened", listener))

    def sessionClosed(self, listener: str, reason: str, bytesIn: int, bytesOut: int) -> None:
        self.told.append(("closed", listener, reason, bytesIn, bytesOut))


class Rig:
    """
    A record of listener "pop3" whose upstream and bytes sent the test sets.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.address: object | None = None
        self.sent = 0
        self.metrics = FakeMetrics()
        self.record = SessionRecord(
            clock=self.clock,
            upstream=lambda: self.address,
            bytesOut=lambda: self.sent,
            listener="pop3",
            metrics=self.metrics,
        )
        self.record.client = "192.0.2.7:50000"


def lines(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events]


def test_openedIsLoggedAndCounted() -> None:
    """
    Opening logs "session <id> opened by <client>", counts the session for
    its listener and notes when it opened.
    """
    rig = Rig()
    rig.clock.advance(5)
    with capturedLogs() as events:
        rig.record.opened()
    assert lines(events) == [f"session {rig.record.sessionId} opened by 192.0.2.7:50000"]
    assert rig.metrics.told == [("opened", "pop3")]
    assert rig.record.snapshot().since == 1_800_000_005


def test_closedLineBeforeLogin() -> None:
    """
    A session that ends before anybody logged in names the login under way
    (a USER waiting for its PASS) and no upstream; the metrics get its
    ending and byte counts.
    """
    rig = Rig()
    rig.record.bytesIn = 12
    rig.sent = 30
    rig.record.commands = 1
    rig.record.ending = "client quit"
    with capturedLogs() as events:
        rig.record.closed("bob")
    assert lines(events) == [
        f"session {rig.record.sessionId} closed: client quit; client=192.0.2.7:50000 user=bob "
        "upstream=- commands=1 bytesIn=12 bytesOut=30"
    ]
    assert rig.metrics.told == [("closed", "pop3", "client quit", 12, 30)]


def test_closedLineAfterLogin() -> None:
    """
    After login the closed line names the user and the upstream (the
    ending defaults to the client closing the connection).
    """
    rig = Rig()
    rig.record.user = "alice"
    rig.address = "127.0.0.1:1110"
    with capturedLogs() as events:
        rig.record.closed("ignored")
    (line,) = lines(events)
    assert ": client closed the connection; " in line
    assert " user=alice upstream=127.0.0.1:1110 " in line


def test_userNameFromTheClientIsEscaped() -> None:
    """
    A user name with control characters reaches the log escaped: no
    forged line, no terminal sequence.
    """
    rig = Rig()
    rig.record.user = "eve\r\nsession 1 closed\x1b[2J"
    with capturedLogs() as events:
        rig.record.closed()
    (line,) = lines(events)
    assert "\r" not in line and "\n" not in line and "\x1b" not in line
    assert "user=eve\\x0d\\x0asession 1 closed\\x1b[2J " in line


def test_filterContextCarriesTheIdentity() -> None:
    """
    A retrieval's filter context names the session, the client, the user
    and the upstream as they are when it starts.
    """
    rig = Rig()
    assert rig.record.filterContext("RETR", 3, None).upstream == ""
    rig.record.user = "alice"
    rig.address = "127.0.0.1:1110"
    context = rig.record.filterContext("TOP", 3, 10)
    assert (context.command, context.index, context.lines) == ("TOP", 3, 10)
    assert (context.user, context.client, context.upstream, context.session) == (
        "alice",
        "192.0.2.7:50000",
        "127.0.0.1:1110",
        rig.record.sessionId,
    )


def test_snapshotIsAFrozenValueOfThatMoment() -> None:
    """
    A snapshot holds the record's values when taken; later traffic does
    not change it, and it cannot be changed.
    """
    rig = Rig()
    rig.record.opened()
    rig.record.user = "alice"
    rig.address = "127.0.0.1:1110"
    rig.record.commands, rig.record.bytesIn, rig.sent = 3, 40, 500
    before = rig.record.snapshot()
    rig.record.commands, rig.record.bytesIn, rig.sent = 4, 48, 900
    assert (before.session, before.listener, before.client) == (
        rig.record.sessionId,
        "pop3",
        "192.0.2.7:50000",
    )
    assert (before.user, before.upstream, before.since) == ("alice", "127.0.0.1:1110", 1.8e9)
    assert (before.commands, before.bytesIn, before.bytesOut) == (3, 40, 500)
    assert rig.record.snapshot().bytesOut == 900
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.user = "mallory"  # type: ignore[misc]


def test_eachRecordHasItsOwnId() -> None:
    """
    Two sessions of one process never share an id (the logs tell them
    apart by it).
    """
    assert Rig().record.sessionId != Rig().record.sessionId


@pytest.mark.parametrize(
    ("peer", "shown"),
    [
        (IPv4Address("TCP", "192.0.2.7", 50000), "192.0.2.7:50000"),
        (IPv6Address("TCP", "2001:db8::7", 50000), "[2001:db8::7]:50000"),
        (UNIXAddress(b"/run/popproxy.sock"), str(UNIXAddress(b"/run/popproxy.sock"))),
    ],
)
def test_describePeer(peer: object, shown: str) -> None:
    """
    Client addresses read as the logs show them; an address without a
    host is shown as it is.
    """
    assert describePeer(peer) == shown
