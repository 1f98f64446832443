"""
Tests for popproxy._sharedadmission: the per-address limits asked of a
shared ledger (here one the test answers by hand), the total kept per
process; a ledger that fails or does not answer within the wait lets the
process decide on its own counts, with one warning per outage, and the
session is held in the ledger; while the store is known down the ledger is
not asked; a late "yes" for a connection refused meanwhile is taken back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._addresscounts import ADDRESS, RATE, AddressLimits
from popproxy._admission import (
    TOO_FAST,
    TOO_MANY_FROM_ADDRESS,
    TOO_MANY_SESSIONS,
    Admission,
    ConnectionLimits,
    Refusal,
    Ticket,
)
from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import StoreOutage
from popproxy._sharedadmission import SharedAdmission

LIMITS = ConnectionLimits(trusted=("127.0.0.0/8",), perAddress=2, maxSessions=3)


class HandLedger:
    """
    A ledger whose answers the test gives: each C{enter} waits in
    C{asked}; C{hold} and C{leave} are noted.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, AddressLimits, Deferred[str | None]]] = []
        self.held: list[tuple[str, str]] = []
        self.left: list[tuple[str, str]] = []
        self.failWith: str | None = None

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        if self.failWith is not None:
            return fail(CounterStoreUnavailable(self.failWith))
        answer: Deferred[str | None] = Deferred()
        self.asked.append((key, lease, limits, answer))
        return answer

    def hold(self, key: str, lease: str) -> None:
        self.held.append((key, lease))

    def leave(self, key: str, lease: str) -> None:
        self.left.append((key, lease))

    def answerLast(self, reason: str | None) -> None:
        self.asked[-1][3].callback(reason)


def shared(ledger: HandLedger, clock: Clock, outage: StoreOutage | None = None) -> SharedAdmission:
    local = Admission(LIMITS, clock.seconds, descriptors=1 << 20)
    return SharedAdmission(local, ledger, clock, wait=0.2, outage=outage)


def resultOf(answer: Deferred[Any]) -> Any:
    results: list[Any] = []
    answer.addBoth(results.append)
    assert len(results) == 1, "no answer yet"
    return results[0]


def test_ledgerDecidesPerAddress() -> None:
    """
    The ledger is asked with the network and the per-address limits; its
    yes admits (the ticket names the lease), its reasons refuse with the
    matching line and leave nothing counted here.
    """
    clock, ledger = Clock(), HandLedger()
    gate = shared(ledger, clock)
    waiting = gate.admit("192.0.2.7")
    key, lease, limits, _ = ledger.asked[-1]
    assert key == "192.0.2.7/32" and limits == AddressLimits(2, 60, 60.0)
    ledger.answerLast(None)
    ticket = resultOf(waiting)
    assert isinstance(ticket, Ticket) and ticket.lease == lease
    for reason, refusal in ((ADDRESS, TOO_MANY_FROM_ADDRESS), (RATE, TOO_FAST)):
        waiting = gate.admit("192.0.2.7")
        ledger.answerLast(reason)
        assert resultOf(waiting) is refusal
    assert gate.local.open == 1 and gate.local.sessionsFrom("192.0.2.7") == 1
    gate.release(ticket)
    assert ledger.left == [(key, lease)] and gate.local.open == 0
    assert clock.getDelayedCalls() == []


def test_totalAndTrustedStayLocal() -> None:
    """
    A trusted address is admitted without asking the ledger; past the
    process's own total, every connection is refused without asking.
    """
    clock, ledger = Clock(), HandLedger()
    gate = shared(ledger, clock)
    tickets = [resultOf(gate.admit("127.0.0.1")) for _ in range(3)]
    assert all(isinstance(t, Ticket) and t.lease is None for t in tickets)
    assert resultOf(gate.admit("192.0.2.7")) is TOO_MANY_SESSIONS
    assert ledger.asked == []


def test_ledgerDownDecidesLocallyWithOneWarning() -> None:
    """
    A ledger that fails: the connection is admitted on this process's
    counts (its per-address limit still holds), its lease held in the
    ledger; one warning, and the ledger is not asked again until the store
    answers (then asked again, and the log says so).
    """
    clock, ledger = Clock(), HandLedger()
    outage = StoreOutage("redis://192.0.2.5:6379/0")
    gate = shared(ledger, clock, outage)
    ledger.failWith = "Redis unreachable: Connection was refused"
    with capturedLogs() as events:
        first = resultOf(gate.admit("192.0.2.7"))
        ledger.failWith = None
        second = resultOf(gate.admit("192.0.2.7"))
        assert resultOf(gate.admit("192.0.2.7")) is TOO_MANY_FROM_ADDRESS
        assert ledger.asked == [] and outage.down
        assert ledger.held == [("192.0.2.7/32", first.lease), ("192.0.2.7/32", second.lease)]
        outage.answered()
        gate.release(first)
        gate.admit("192.0.2.7")
        assert len(ledger.asked) == 1
    lines = [formatEvent(e) for e in events]
    assert [line for line in lines if "unavailable" in line] == [
        "counter store redis://192.0.2.5:6379/0 unavailable (Redis unreachable: Connection was"
        " refused): each instance counts on its own until it answers again"
    ]
    assert any("answers again" in line for line in lines)


def test_noAnswerWithinWaitDecidesLocally() -> None:
    """
    A ledger that does not answer within the wait: the connection is
    decided on this process's counts at the wait's end, not later.
    """
    clock, ledger = Clock(), HandLedger()
    outage = StoreOutage("redis://192.0.2.5:6379/0")
    gate = shared(ledger, clock, outage)
    waiting = gate.admit("192.0.2.7")
    clock.advance(0.19)
    assert not waiting.called
    clock.advance(0.01)
    ticket = resultOf(waiting)
    assert isinstance(ticket, Ticket) and outage.down
    assert ledger.held == [("192.0.2.7/32", ticket.lease)]
    ledger.answerLast(None)
    assert ledger.left == []


def test_lateYesForRefusedConnectionIsTakenBack() -> None:
    """
    A connection refused on local counts after the wait, then admitted by
    the ledger's late answer, is left in the ledger at once (it would
    otherwise count there until its lease ran out).
    """
    clock, ledger = Clock(), HandLedger()
    gate = shared(ledger, clock)
    for _ in range(2):
        waiting = gate.admit("192.0.2.7")
        ledger.answerLast(None)
        assert isinstance(resultOf(waiting), Ticket)
    late = gate.admit("192.0.2.7")
    clock.advance(0.2)
    assert resultOf(late) is TOO_MANY_FROM_ADDRESS
    key, lease, _, answer = ledger.asked[-1]
    answer.callback(None)
    assert ledger.left == [(key, lease)]


def test_processFullMeanwhileLeavesTheLedger() -> None:
    """
    The ledger admitted, but the process filled up while it was asked:
    refused as too many sessions, and the ledger's count is given back.
    """
    clock, ledger = Clock(), HandLedger()
    gate = shared(ledger, clock)
    gate.local.reconfigure(replace(LIMITS, maxSessions=1))
    waiting = gate.admit("192.0.2.7")
    assert isinstance(resultOf(gate.admit("127.0.0.1")), Ticket)
    ledger.answerLast(None)
    refusal = resultOf(waiting)
    assert isinstance(refusal, Refusal) and refusal is TOO_MANY_SESSIONS
    assert ledger.left == [(ledger.asked[-1][0], ledger.asked[-1][1])]
