"""
The console's item policy: a user sees exactly their own items; what the
configured filters removed downloads at once, the rest after a release.
"""

from __future__ import annotations

from popproxy._quarantine import Record
from popproxy.console._access import ItemAccess, Offer


def record(user: str = "alice", plugin: str = "strip") -> Record:
    return Record("p1", 0.0, "r", plugin, user, None, "u", 1, "0" * 64, "", {})


def test_visibleOnlyToItsUser() -> None:
    """
    Only the exact login sees an item: not another case, not an empty
    user, not a missing record.
    """
    access = ItemAccess(["strip"])
    assert access.visible(record(), "alice")
    assert not access.visible(record(), "Alice") and not access.visible(record(), "bob")
    assert not access.visible(record(user=""), "") and not access.visible(None, "alice")


def test_offers() -> None:
    """
    By default a strip removal downloads; a scan removal is requested,
    then pending, then downloads once released; an empty policy asks
    for every item.
    """
    access = ItemAccess(["strip"])
    assert access.offer(record(), False, False) is Offer.DOWNLOAD
    scanned = record(plugin="scan")
    assert access.offer(scanned, False, False) is Offer.REQUEST_RELEASE
    assert access.offer(scanned, False, True) is Offer.RELEASE_PENDING
    assert access.offer(scanned, True, True) is Offer.DOWNLOAD
    assert ItemAccess([]).offer(record(), False, False) is Offer.REQUEST_RELEASE
