"""
The POP3 sessions open now in every process of this proxy, for the
console: the main process's own (its L{popproxy._sessionregistry}) and
each worker's, asked over the worker's socket pair
(L{popproxy._sharedcounters.CounterServer.askSessions}) when the list is
wanted, so nothing is sent while nobody looks.  A worker that does not
answer in time is named, not waited for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from popproxy._sessionrecord import SessionSnapshot

#: Asks every worker: by worker number, the answer to come.
AskWorkers = Callable[[], list[tuple[int, Deferred[tuple[SessionSnapshot, ...]]]]]


@dataclass(frozen=True, slots=True)
class OpenSession:
    """
    One open session and the process serving it (C{main}, C{worker N}).
    """

    process: str
    snapshot: SessionSnapshot


@dataclass(frozen=True, slots=True)
class SessionsNow:
    """
    The sessions open now, oldest first, and the processes that did not
    say (their sessions are missing).
    """

    sessions: tuple[OpenSession, ...]
    unanswered: tuple[str, ...] = ()


def noWorkers() -> list[tuple[int, Deferred[tuple[SessionSnapshot, ...]]]]:
    return []


class OpenSessions:
    """
    Gathers the open sessions of the main process and its workers.

    @param local: the main process's open sessions now.
    @param workers: asks the workers (none: a single process).
    """

    def __init__(
        self, local: Callable[[], tuple[SessionSnapshot, ...]], workers: AskWorkers = noWorkers
    ) -> None:
        self._local = local
        self._workers = workers

    def now(self) -> Deferred[SessionsNow]:
        return Deferred.fromCoroutine(self._now())

    async def _now(self) -> SessionsNow:
        asked = self._workers()
        found = [OpenSession("main", snapshot) for snapshot in self._local()]
        unanswered = []
        for number, answer in asked:
            try:
                snapshots = await answer
            except Exception:
                unanswered.append(f"worker {number}")
                continue
            found += [OpenSession(f"worker {number}", snapshot) for snapshot in snapshots]
        found.sort(key=lambda open: (open.snapshot.since, open.process, open.snapshot.session))
        return SessionsNow(tuple(found), tuple(unanswered))
