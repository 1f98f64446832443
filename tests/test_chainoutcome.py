"""
Tests for popproxy._outcome: the frozen ChainOutcome FilterChain.outcome
builds, one step per filter with its verdict or error, a temporary failure
said as such, the quarantine id of a replaced original and the over-limit
case; and ChainOutcome.delivered, the bytes (or TemporaryFailure) the proxy
gets through processMessage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from zope.interface import implementer

from popproxy._chain import QUARANTINE_HEADER, UNCHECKED_HEADER, ChainEntry, FilterChain
from popproxy._outcome import ChainOutcome, FilterFailed, FilterStep, OverLimit
from popproxy._retrieval import TemporaryFailure
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    Replace,
    Rewrite,
    TempFail,
)
from popproxy.message import Message, ParseLimits
from popproxy.testing import MemoryQuarantine

RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = FilterContext("RETR", 3, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")
NOTICE = Message.fromBytes(b"Subject: removed\r\n\r\nThe message was removed.\r\n")


@implementer(IMessageFilter)
class Answering:
    """
    A filter that answers with a given function of the message.
    """

    def __init__(self, name: str, answer: Callable[[Message], Any]) -> None:
        self.name = name
        self._answer = answer

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        return self._answer(message)


def outcomeOf(
    *entries: ChainEntry, raw: bytes = RAW, clock: Clock | None = None, **options: Any
) -> ChainOutcome:
    clock = clock or Clock()
    results: list[Any] = []
    chain = FilterChain(list(entries), clock, **options)
    ensureDeferred(chain.outcome(CONTEXT, raw)).addBoth(results.append)
    while not results and clock.getDelayedCalls():
        clock.advance(min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds())
    (outcome,) = results
    assert isinstance(outcome, ChainOutcome)
    return outcome


def entry(name: str, answer: Callable[[Message], Any], **options: Any) -> ChainEntry:
    return ChainEntry(name, Answering(name, answer), **options)


def boom(message: Message) -> Any:
    raise RuntimeError("scanner exploded")


def test_outcomeIsFrozen() -> None:
    """
    An outcome, its steps and its over-limit record cannot be changed.
    """
    outcome = outcomeOf(entry("pass", lambda m: Deliver()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.changed = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.steps[0].error = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        OverLimit("r", "deliver").quarantineId = "x"  # type: ignore[misc]


def test_deliverIsUnchangedAndTheSameBytes() -> None:
    """
    Deliver verdicts leave the outcome unchanged, its output the very
    object that arrived, with one step per filter carrying verdict and note.
    """
    outcome = outcomeOf(
        entry("first", lambda m: Deliver(note="looked")), entry("second", lambda m: Deliver())
    )
    assert not outcome.changed
    assert outcome.output is RAW
    assert outcome.tempFailure is None
    assert outcome.overLimit is None
    assert [(s.name, s.kind, s.note, s.error) for s in outcome.steps] == [
        ("first", "Deliver", "looked", None),
        ("second", "Deliver", "", None),
    ]
    assert outcome.delivered() is RAW


def test_rewriteIsChanged() -> None:
    """
    A Rewrite verdict makes the outcome changed, with the rewritten octets.
    """
    rewritten = Message.fromBytes(RAW).withHeaderAdded("X-Tag", "yes")
    outcome = outcomeOf(entry("tag", lambda m: Rewrite(rewritten, note="tagged")))
    assert outcome.changed
    assert outcome.output == rewritten.toBytes()
    assert [(s.kind, s.note) for s in outcome.steps] == [("Rewrite", "tagged")]


def test_replaceRecordsTheQuarantineId() -> None:
    """
    A Replace verdict keeps the original; its step records the quarantine
    id, which is also the header of the notice delivered.
    """
    quarantine = MemoryQuarantine()
    outcome = outcomeOf(entry("scan", lambda m: Replace(NOTICE, "virus")), quarantine=quarantine)
    (step,) = outcome.steps
    (kept,) = quarantine.stored
    assert step.kind == "Replace"
    assert step.quarantineId == kept.identifier
    assert outcome.changed
    assert outcome.output is not None
    assert Message.fromBytes(outcome.output).headers.get(QUARANTINE_HEADER) == kept.identifier


def test_replaceWithoutQuarantineIsATemporaryFailure() -> None:
    """
    A Replace verdict with no quarantine to keep the original is a
    temporary failure; the step records the verdict and no id.
    """
    outcome = outcomeOf(entry("scan", lambda m: Replace(NOTICE, "virus")))
    assert outcome.output is None
    assert outcome.tempFailure is not None and "no quarantine" in outcome.tempFailure
    assert [(s.kind, s.quarantineId) for s in outcome.steps] == [("Replace", None)]


def test_tempFailStopsTheChain() -> None:
    """
    A TempFail verdict ends the chain: the outcome is a temporary failure
    with its reason, and later filters have no step.
    """
    outcome = outcomeOf(
        entry("busy", lambda m: TempFail("scanner busy")), entry("later", lambda m: Deliver())
    )
    assert (outcome.changed, outcome.output, outcome.tempFailure) == (False, None, "scanner busy")
    assert [s.kind for s in outcome.steps] == ["TempFail"]
    with pytest.raises(TemporaryFailure, match="scanner busy"):
        outcome.delivered()


def test_errorUnderTempfail() -> None:
    """
    A filter that raises under on_error = "tempfail" gives an error step
    (the exception as logged) and a temporary failure whose cause is that
    error.
    """
    outcome = outcomeOf(entry("scan", boom), entry("later", lambda m: Deliver()))
    (step,) = outcome.steps
    assert (step.kind, step.verdict, step.onError) == ("error", None, "tempfail")
    assert step.error == "RuntimeError: scanner exploded"
    assert (step.timedOut, step.failure) == (False, "failed")
    assert outcome.tempFailure == f"filter scan failed (error id {step.errorId}), try again later"
    assert step.errorId is not None and len(step.errorId) == 10
    with pytest.raises(TemporaryFailure) as raised:
        outcome.delivered()
    assert isinstance(raised.value.__cause__, FilterFailed)
    assert str(raised.value.__cause__) == "RuntimeError: scanner exploded"


def test_errorUnderDeliver() -> None:
    """
    Under on_error = "deliver" the error step is recorded, the message is
    marked with the fixed phrase, and the chain goes on.
    """
    outcome = outcomeOf(entry("scan", boom, onError="deliver"), entry("later", lambda m: Deliver()))
    assert [(s.name, s.kind, s.onError) for s in outcome.steps] == [
        ("scan", "error", "deliver"),
        ("later", "Deliver", "tempfail"),
    ]
    assert outcome.changed
    errorId = outcome.steps[0].errorId
    assert errorId is not None
    assert outcome.output == (
        UNCHECKED_HEADER.encode() + b": scan failed; error id %s\r\n" % errorId.encode() + RAW
    )


def test_garbageAnswerIsAnError() -> None:
    """
    An answer that is no verdict is an error step naming what it was.
    """
    outcome = outcomeOf(entry("junk", lambda m: "yes"))
    (step,) = outcome.steps
    assert step.error == "returned str, not a verdict"
    assert outcome.tempFailure is not None


@pytest.mark.parametrize("onError", ["tempfail", "deliver"])
def test_timeoutIsMarkedTimedOut(onError: str) -> None:
    """
    A filter that gives no verdict within its timeout has a step marked
    timed out, under either policy.
    """
    outcome = outcomeOf(entry("slow", lambda m: Deferred(), timeout=5.0, onError=onError))
    (step,) = outcome.steps
    assert (step.kind, step.timedOut, step.failure) == ("error", True, "timed out")
    assert step.error == "no verdict within 5 s"
    if onError == "deliver":
        assert step.errorId is not None
        assert (
            outcome.output
            == (
                UNCHECKED_HEADER.encode()
                + b": slow timed out; error id %s\r\n" % step.errorId.encode()
            )
            + RAW
        )
    else:
        assert outcome.output is None


def manyParts(count: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(count))
    return (
        b"Subject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    )


def test_overLimitsDeliver() -> None:
    """
    A message over a parse limit under over_limits = "deliver" has no step
    (no filter saw it) and an over-limit record with no quarantine id.
    """
    raw = manyParts(3)
    outcome = outcomeOf(
        entry("strip", lambda m: Deliver()), raw=raw, limits=ParseLimits(maxParts=2)
    )
    assert outcome.steps == ()
    assert outcome.overLimit is not None
    assert outcome.overLimit.policy == "deliver"
    assert outcome.overLimit.quarantineId is None
    assert outcome.overLimit.reason.startswith("message exceeds parse limit")
    assert outcome.changed
    assert outcome.output is not None and outcome.output.endswith(raw)


def test_overLimitsQuarantine() -> None:
    """
    Under over_limits = "quarantine" the over-limit record carries the id
    the original was kept under, the one the notice names.
    """
    quarantine = MemoryQuarantine()
    outcome = outcomeOf(
        entry("strip", lambda m: Deliver()),
        raw=manyParts(3),
        limits=ParseLimits(maxParts=2),
        overLimits="quarantine",
        quarantine=quarantine,
    )
    (kept,) = quarantine.stored
    assert outcome.steps == ()
    assert outcome.overLimit is not None
    assert (outcome.overLimit.policy, outcome.overLimit.quarantineId) == (
        "quarantine",
        kept.identifier,
    )
    assert outcome.output is not None
    assert Message.fromBytes(outcome.output).headers.get(QUARANTINE_HEADER) == kept.identifier


def test_processMessageGivesTheDeliveredBytes() -> None:
    """
    processMessage, what the session calls, fires with the outcome's
    octets: the very object received when nothing changed.
    """
    chain = FilterChain([entry("pass", lambda m: Deliver())], Clock())
    results: list[Any] = []
    chain.processMessage(CONTEXT, RAW).addBoth(results.append)
    assert results == [RAW]
    assert results[0] is RAW


def test_deliveringAndFailingBuilders() -> None:
    """
    ChainOutcome.delivering keeps the original object when given no new
    output; ChainOutcome.failing has no output and says why.
    """
    step = FilterStep("f", Deliver())
    same = ChainOutcome.delivering(RAW, None, [step])
    assert (same.changed, same.output, same.steps) == (False, RAW, (step,))
    other = ChainOutcome.delivering(RAW, b"other")
    assert (other.changed, other.output) == (True, b"other")
    failed = ChainOutcome.failing("later")
    assert (failed.changed, failed.output, failed.tempFailure) == (False, None, "later")
    with pytest.raises(TemporaryFailure, match="later") as raised:
        failed.delivered()
    assert raised.value.__cause__ is None
