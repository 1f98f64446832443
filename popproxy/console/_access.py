"""
Who may see and download which quarantined item, as plain decisions on a
record: a user sees only the items quarantined from their own mail (the
record's user is exactly their login), and downloads one when the filter
that removed it is in C{[console] user_download} or an administrator
released it; otherwise they may only ask for its release.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from popproxy._quarantine import Record


class Offer(enum.Enum):
    """
    What the console offers a user for one of their items.
    """

    DOWNLOAD = "download"
    REQUEST_RELEASE = "request"
    RELEASE_PENDING = "pending"
    RELEASE_REFUSED = "refused"


class ItemAccess:
    """
    The policy of one console.

    @param userDownload: the filters (by their name in the chain) whose
        removals a user may download without asking.
    """

    def __init__(self, userDownload: Iterable[str]) -> None:
        self._userDownload = frozenset(userDownload)

    @property
    def userDownload(self) -> frozenset[str]:
        """
        The filters whose removals users download without asking.
        """
        return self._userDownload

    def visible(self, record: Record | None, user: str) -> bool:
        """
        Whether the user signed in as C{user} may see C{record} at all.
        """
        return record is not None and bool(user) and record.user == user

    def offer(
        self, record: Record, released: bool, requested: bool, refused: bool = False
    ) -> Offer:
        """
        What its user may do with C{record}: download it (the policy lets
        them, or it was released), ask for it, wait for an answer, or
        nothing more once an administrator refused it.
        """
        if released or record.plugin in self._userDownload:
            return Offer.DOWNLOAD
        if refused:
            return Offer.RELEASE_REFUSED
        return Offer.RELEASE_PENDING if requested else Offer.REQUEST_RELEASE
