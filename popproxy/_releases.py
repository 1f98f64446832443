"""
Release requests: a user asks for a quarantined item the console's policy
does not let them download, an administrator approves, and then it is
theirs to download.

L{IReleaseRequests} is the contract (another quarantine backend keeps the
same state in its own store); L{DirectoryReleases} keeps it beside a
directory quarantine, one small JSON file per item in C{releases/}, each
written to a temporary name, flushed and renamed, so the proxy, its
workers and the command line can all read and write it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zope.interface import Interface, implementer


@dataclass(frozen=True, slots=True)
class Release:
    """
    The release state of one item.

    @ivar requestedBy: who asked (C{None}: an administrator approved unasked).
    @ivar approvedBy: the administrator who approved (C{None}: pending).
    @ivar rejectedBy: the administrator who refused it (C{None}: nobody).
    """

    id: str
    requestedBy: str | None = None
    requestedAt: float | None = None
    approvedBy: str | None = None
    approvedAt: float | None = None
    rejectedBy: str | None = None
    rejectedAt: float | None = None

    @property
    def released(self) -> bool:
        return self.approvedBy is not None

    @property
    def rejected(self) -> bool:
        return self.rejectedBy is not None and not self.released


class IReleaseRequests(Interface):
    """
    Where release requests and approvals are kept.
    """

    def request(identifier: str, user: str) -> Release:
        """
        Record that C{user} asks for item C{identifier} (again: nothing changes).
        """

    def approve(identifier: str, admin: str) -> Release:
        """
        Record that C{admin} released item C{identifier}.
        """

    def reject(identifier: str, admin: str) -> Release:
        """
        Record that C{admin} refused to release item C{identifier} (an
        item already released stays released).
        """

    def status(identifier: str) -> Release | None:
        """
        The item's release state (C{None}: never requested nor approved).
        """

    def statuses(identifiers: Sequence[str]) -> dict[str, Release]:
        """
        The release states of several items at once (a console page's), by
        identifier; an item never requested nor approved is left out.
        """

    def isReleased(identifier: str) -> bool:
        """
        Whether an administrator approved the item's release.
        """

    def pending() -> list[Release]:
        """
        The requests neither approved nor refused yet, oldest first.
        """


def _checkedId(identifier: str) -> str:
    """
    C{identifier} if it can name a file in one directory.

    @raise KeyError: it cannot (empty, a path, a hidden name).
    """
    if not identifier or identifier != Path(identifier).name or identifier.startswith("."):
        raise KeyError(identifier)
    return identifier


@implementer(IReleaseRequests)
class DirectoryReleases:
    """
    Release state in C{releases/} of a quarantine directory.

    @param clock: the time now, in POSIX seconds.
    """

    def __init__(self, quarantine: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = quarantine / "releases"
        self._clock = clock

    def _path(self, identifier: str) -> Path:
        return self.directory / f"{_checkedId(identifier)}.json"

    def status(self, identifier: str) -> Release | None:
        try:
            data = json.loads(self._path(identifier).read_text("utf-8"))
        except FileNotFoundError:
            return None
        return _release(data)

    def statuses(self, identifiers: Sequence[str]) -> dict[str, Release]:
        found = ((identifier, self.status(identifier)) for identifier in identifiers)
        return {identifier: release for identifier, release in found if release is not None}

    def isReleased(self, identifier: str) -> bool:
        found = self.status(identifier)
        return found is not None and found.released

    def request(self, identifier: str, user: str) -> Release:
        found = self.status(identifier)
        if found is not None:
            return found
        release = Release(identifier, requestedBy=user, requestedAt=self._clock())
        self._write(release)
        return release

    def approve(self, identifier: str, admin: str) -> Release:
        found = self.status(identifier) or Release(identifier)
        if found.released:
            return found
        release = Release(
            identifier,
            found.requestedBy,
            found.requestedAt,
            approvedBy=admin,
            approvedAt=self._clock(),
        )
        self._write(release)
        return release

    def reject(self, identifier: str, admin: str) -> Release:
        found = self.status(identifier) or Release(identifier)
        if found.released or found.rejected:
            return found
        release = replace(found, rejectedBy=admin, rejectedAt=self._clock())
        self._write(release)
        return release

    def pending(self) -> list[Release]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("*.json"):
            release = _release(json.loads(path.read_text("utf-8")))
            if not release.released and not release.rejected:
                found.append(release)
        return sorted(found, key=lambda release: (release.requestedAt or 0.0, release.id))

    def _write(self, release: Release) -> None:
        """
        Write C{release}'s file whole: a temporary file, flushed, renamed
        over the old one, and the directory flushed.
        """
        path = self._path(release.id)
        self.directory.mkdir(mode=0o700, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fields = {
            "id": release.id,
            "requestedBy": release.requestedBy,
            "requestedAt": release.requestedAt,
            "approvedBy": release.approvedBy,
            "approvedAt": release.approvedAt,
            "rejectedBy": release.rejectedBy,
            "rejectedAt": release.rejectedAt,
        }
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(fields, file, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _release(data: dict[str, Any]) -> Release:
    return Release(
        data["id"],
        data.get("requestedBy"),
        data.get("requestedAt"),
        data.get("approvedBy"),
        data.get("approvedAt"),
        data.get("rejectedBy"),
        data.get("rejectedAt"),
    )
