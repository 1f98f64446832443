"""
Tests for popproxy._scannerstatus: the value a scanning filter reports.
"""

from __future__ import annotations

import dataclasses

import pytest

from popproxy.interfaces import ScannerStatus


def test_notTriedYet() -> None:
    """
    A status made with only the daemon and its address says nothing was
    tried yet: reachability unknown, no time, no failure text.
    """
    status = ScannerStatus("clamd", "tcp:127.0.0.1:3310")
    assert (status.reachable, status.since, status.detail) == (None, None, "")


def test_frozen() -> None:
    """
    A status is a value: a change makes a new one, the old one stays.
    """
    status = ScannerStatus("spamd", "tcp:127.0.0.1:783")
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.reachable = True  # type: ignore[misc]
    down = dataclasses.replace(status, reachable=False, since=5.0, detail="refused")
    assert status.reachable is None and down.reachable is False
