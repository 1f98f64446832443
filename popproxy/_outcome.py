"""
What the filter chain did with one message: a frozen L{ChainOutcome}.

The chain (L{popproxy._chain.FilterChain.outcome}) builds it as it applies
each verdict; the proxy takes the octets to deliver from it
(L{ChainOutcome.delivered}), the test kit and the offline runner read its
steps.  Nobody compares bytes to guess what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from popproxy._retrieval import TemporaryFailure
from popproxy._verdicts import Verdict


class FilterFailed(Exception):
    """
    A filter raised, timed out or answered something that is not a verdict.

    @ivar timedOut: it gave no verdict within its timeout.
    @ivar errorId: the id the chain gave this failure (in its log line and
        in what the recipient sees), once it has one.
    """

    def __init__(self, reason: str, timedOut: bool = False) -> None:
        super().__init__(reason)
        self.timedOut = timedOut
        self.errorId = ""


@dataclass(frozen=True)
class FilterStep:
    """
    What one filter of the chain answered, and what the chain made of it.

    @ivar name: the entry's name (as in the logs).
    @ivar verdict: its verdict, or C{None} if it failed.
    @ivar error: why it failed (raised, timed out, answered garbage), as
        logged; the chain then applied C{onError}.
    @ivar onError: the entry's policy, C{"tempfail"} or C{"deliver"}.
    @ivar timedOut: it failed by giving no verdict within its timeout.
    @ivar quarantineId: where the original a L{Replace} verdict replaced
        was kept, if it was.
    @ivar seconds: how long the filter took to answer (or to fail); not
        compared (the same answer is the same step, however long it took).
    @ivar errorId: the id of its failure, as logged and as shown to the
        recipient, if it failed.
    """

    name: str
    verdict: Verdict | None
    error: str | None = None
    onError: str = "tempfail"
    timedOut: bool = False
    quarantineId: str | None = None
    seconds: float = field(default=0.0, compare=False)
    errorId: str | None = None

    @property
    def kind(self) -> str:
        """
        C{"Deliver"}, C{"Rewrite"}, C{"Replace"}, C{"TempFail"} or
        C{"error"}.
        """
        return "error" if self.verdict is None else type(self.verdict).__name__

    @property
    def note(self) -> str:
        return "" if self.verdict is None else self.verdict.note

    @property
    def failure(self) -> str | None:
        """
        The fixed phrase the unchecked header gives a failed filter
        (C{"timed out"} or C{"failed"}: what went wrong inside is for the
        log, not for the recipient's mail), or C{None} if it answered.
        """
        if self.verdict is not None:
            return None
        return "timed out" if self.timedOut else "failed"


@dataclass(frozen=True)
class OverLimit:
    """
    The message went over a parse limit, so no filter saw it.

    @ivar reason: which limit, and by how much.
    @ivar policy: the C{over_limits} policy applied, C{"deliver"} or
        C{"quarantine"}.
    @ivar quarantineId: where the original was kept (policy
        C{"quarantine"}), if it was.
    """

    reason: str
    policy: str
    quarantineId: str | None = None


@dataclass(frozen=True)
class ChainOutcome:
    """
    What the chain made of one message.

    @ivar changed: the client gets other octets than those that arrived.
    @ivar output: the octets to deliver (the very object that arrived when
        not C{changed}), or C{None} after a temporary failure.
    @ivar tempFailure: the text after C{-ERR [SYS/TEMP]}, if it failed.
    @ivar steps: each filter that ran, in order (none after a temporary
        failure, none for a message over the parse limits).
    @ivar overLimit: set when the message went over a parse limit.
    """

    changed: bool
    output: bytes | None = field(repr=False)
    tempFailure: str | None = None
    steps: tuple[FilterStep, ...] = ()
    overLimit: OverLimit | None = None

    @classmethod
    def delivering(
        cls, raw: bytes, output: bytes | None, steps: Sequence[FilterStep] = ()
    ) -> ChainOutcome:
        """
        The message is delivered: as it arrived (C{output} is C{None}) or
        as C{output}.
        """
        if output is None:
            return cls(False, raw, None, tuple(steps))
        return cls(True, output, None, tuple(steps))

    @classmethod
    def failing(cls, reason: str, steps: Sequence[FilterStep] = ()) -> ChainOutcome:
        """
        The message cannot be delivered now, for C{reason}.
        """
        return cls(False, None, reason, tuple(steps))

    def delivered(self) -> bytes:
        """
        The octets to deliver.

        @raise TemporaryFailure: the outcome is a temporary failure.
        """
        if self.output is None:
            failure = TemporaryFailure(self.tempFailure or "try again later")
            last = self.steps[-1] if self.steps else None
            if last is not None and last.error is not None:
                raise failure from FilterFailed(last.error, last.timedOut)
            raise failure
        return self.output
