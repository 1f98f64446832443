"""
What the scans of one message found (plugins/scan/_findings.py): which unchecked streams
stop clamd being asked again, and which temporary failure the policies ask for.
"""

from __future__ import annotations

from plugins.scan._findings import Findings, Unchecked
from plugins.scan._settings import ScanSettings


def test_onlyUnreachableOrTimedOutClamdIsDown() -> None:
    """
    An error or an oversized stream leaves clamd usable for the next part;
    unreachable or out of time does not.
    """
    assert not Findings(unchecked=[Unchecked("error", "x"), Unchecked("oversize", "y")]).clamdDown
    assert Findings(unchecked=[Unchecked("timeout", "t")]).clamdDown
    assert Findings(unchecked=[Unchecked("unreachable", "u")]).clamdDown


def test_oversizeFollowsItsOwnPolicy() -> None:
    """
    An oversized stream follows on_oversize, every other unchecked stream on_failure; the
    refusal names the first stream whose policy is tempfail.
    """
    oversize = Findings(unchecked=[Unchecked("oversize", "too big")])
    assert oversize.refusal(ScanSettings(onOversize="deliver", onFailure="tempfail")) is None
    refusal = oversize.refusal(ScanSettings(onOversize="tempfail"))
    assert refusal is not None
    assert refusal.reason == "the message is too large for the virus scanner, try again later"
    assert refusal.note == "unchecked: too big"
    error = Findings(unchecked=[Unchecked("oversize", "big"), Unchecked("error", "broke")])
    refusal = error.refusal(ScanSettings(onOversize="deliver", onFailure="tempfail"))
    assert refusal is not None and refusal.note == "unchecked: broke"


def test_nothingUncheckedIsNoRefusal() -> None:
    """
    Findings with every stream scanned never ask for a temporary failure.
    """
    assert Findings().refusal(ScanSettings()) is None
    assert not Findings().clamdDown
