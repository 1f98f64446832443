"""
What the scans of one message found: the infected parts, an infected
whole, the streams left unchecked and why, and the temporary failure the
policies ask for when a stream could not be scanned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from popproxy.interfaces import TempFail
from popproxy.message import Part

from ._settings import ScanSettings

#: What the client of a temporary failure is told, by kind of unchecked stream.
TEMPFAIL_REASONS = {
    "unreachable": "the virus scanner is unreachable, try again later",
    "timeout": "the virus scanner did not answer in time, try again later",
    "error": "the virus scanner failed, try again later",
    "oversize": "the message is too large for the virus scanner, try again later",
}


@dataclass(frozen=True)
class Unchecked:
    """
    A stream that was not scanned, and why.

    @ivar kind: C{"unreachable"}, C{"timeout"}, C{"error"} (the
        C{on_failure} policy) or C{"oversize"} (the C{on_oversize} policy).
    @ivar reason: a few words for the header and the logs.
    """

    kind: str
    reason: str

    def policy(self, settings: ScanSettings) -> str:
        return settings.onOversize if self.kind == "oversize" else settings.onFailure


@dataclass
class Findings:
    """
    What the scans of one message found so far (one per filterMessage call,
    never shared between messages).
    """

    infected: list[tuple[Part, tuple[str, ...]]] = field(default_factory=list)
    wholeInfected: tuple[str, ...] = ()
    unchecked: list[Unchecked] = field(default_factory=list)

    @property
    def clamdDown(self) -> bool:
        """
        clamd cannot be asked again for this message (unreachable, or the
        time is up).
        """
        return any(item.kind in ("unreachable", "timeout") for item in self.unchecked)

    def refusal(self, settings: ScanSettings) -> TempFail | None:
        """
        The temporary failure the policies ask for, if any.
        """
        for item in self.unchecked:
            if item.policy(settings) == "tempfail":
                return TempFail(TEMPFAIL_REASONS[item.kind], note=f"unchecked: {item.reason}")
        return None
