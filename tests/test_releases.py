"""
Tests for the release requests kept beside a directory quarantine: a
request is remembered once, an approval releases, pending lists what is
waiting, and the files are written whole and only under the directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from popproxy._releases import DirectoryReleases, IReleaseRequests


def test_requestThenApprove(tmp_path: Path) -> None:
    """
    A request is pending until approved; then the item is released,
    naming who asked and who approved, and is no longer pending.
    """
    times = iter([100.0, 200.0])
    releases = DirectoryReleases(tmp_path, clock=lambda: next(times))
    assert verifyObject(IReleaseRequests, releases)
    assert releases.status("p1") is None and not releases.isReleased("p1")
    asked = releases.request("p1", "alice")
    assert (asked.requestedBy, asked.requestedAt, asked.released) == ("alice", 100.0, False)
    assert [release.id for release in releases.pending()] == ["p1"]
    approved = releases.approve("p1", "admin")
    assert approved.requestedBy == "alice" and approved.approvedBy == "admin"
    assert approved.approvedAt == 200.0
    assert releases.isReleased("p1") and releases.pending() == []
    assert not list((tmp_path / "releases").glob(".*"))


def test_secondRequestChangesNothing(tmp_path: Path) -> None:
    """
    Asking again keeps the first request (its time too): clicking twice
    does not move an item to the end of the administrators' queue.
    """
    times = iter([1.0, 2.0])
    releases = DirectoryReleases(tmp_path, clock=lambda: next(times))
    releases.request("p1", "alice")
    assert releases.request("p1", "alice").requestedAt == 1.0


def test_pendingOldestFirst(tmp_path: Path) -> None:
    """
    The queue is in the order the requests came.
    """
    times = iter([3.0, 1.0, 2.0])
    releases = DirectoryReleases(tmp_path, clock=lambda: next(times))
    for identifier in ("c", "a", "b"):
        releases.request(identifier, "u")
    assert [release.id for release in releases.pending()] == ["a", "b", "c"]


@pytest.mark.parametrize("identifier", ["", "../x", "a/b", ".hidden"])
def test_idsThatAreNotFileNamesAreRefused(tmp_path: Path, identifier: str) -> None:
    """
    An id that would name a file outside C{releases/} is refused.
    """
    with pytest.raises(KeyError):
        DirectoryReleases(tmp_path).request(identifier, "u")


def test_rejectIsRecordedAndLeavesTheQueue(tmp_path: Path) -> None:
    """
    A rejected request records who refused it and when, leaves the queue,
    and is not a release; rejecting again changes nothing; an approval
    afterwards releases it (and forgets the refusal); a released item
    cannot be rejected.
    """
    now = [100.0]
    releases = DirectoryReleases(tmp_path, clock=lambda: now[0])
    releases.request("p1", "alice")
    now[0] = 200.0
    refused = releases.reject("p1", "root")
    assert (refused.rejectedBy, refused.rejectedAt, refused.requestedBy) == ("root", 200.0, "alice")
    assert refused.rejected and not refused.released
    assert releases.pending() == [] and not releases.isReleased("p1")
    assert DirectoryReleases(tmp_path).status("p1") == refused
    assert releases.reject("p1", "other") == refused
    approved = releases.approve("p1", "ops")
    assert approved.released and not approved.rejected and approved.approvedBy == "ops"
    assert releases.reject("p1", "root") == approved


def test_statusesOfAPage(tmp_path: Path) -> None:
    """
    The states of several items come in one call, by identifier; items
    nobody asked for are left out, and asking for none gives none.
    """
    releases = DirectoryReleases(tmp_path, clock=lambda: 5.0)
    releases.request("p1", "alice")
    releases.approve("p3", "admin")
    found = releases.statuses(["p1", "p2", "p3"])
    assert found == {"p1": releases.status("p1"), "p3": releases.status("p3")}
    assert found["p3"].released and not found["p1"].released
    assert releases.statuses([]) == {}
