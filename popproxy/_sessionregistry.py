"""
The sessions one process has open now: L{SessionRegistry} is told when each
session opens and when it ends, hands them out in the order they opened,
and reads out each one's frozen L{SessionSnapshot} (who, from where, to
which upstream, since when, how much), what an administrator's list of the
sessions open now shows.

The process's L{popproxy._gracefulstop.GracefulStop} keeps its sessions
here (C{GracefulStop.sessions}), so a process has one set of open sessions,
the one it stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from popproxy._sessionrecord import SessionSnapshot

__all__ = ["Listed", "SessionRegistry"]


class Listed(Protocol):
    """
    What the registry asks of a session.
    """

    def snapshot(self) -> SessionSnapshot:
        """
        The session as it stands now.
        """
        ...


SessionT = TypeVar("SessionT", bound=Listed)


class SessionRegistry(Generic[SessionT]):
    """
    The open sessions of one process, oldest first.
    """

    def __init__(self) -> None:
        # A dict keeps the order the sessions opened in.
        self._open: dict[SessionT, None] = {}

    def add(self, session: SessionT) -> None:
        """
        C{session} has opened.
        """
        self._open[session] = None

    def discard(self, session: SessionT) -> None:
        """
        C{session} has ended (nothing happens if it was not registered).
        """
        self._open.pop(session, None)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[SessionT]:
        # A copy: a session may end, and leave, while the caller iterates.
        return iter(list(self._open))

    def snapshot(self) -> tuple[SessionSnapshot, ...]:
        """
        Every open session as it stands now, oldest first.
        """
        return tuple(session.snapshot() for session in self._open)
