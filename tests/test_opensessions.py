"""
Tests for popproxy._opensessions: the main process's sessions and each
worker's answer, oldest first with the process named; a worker that does
not answer is named as missing, the others still listed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from popproxy._opensessions import OpenSessions
from popproxy._sessionrecord import SessionSnapshot


def snapshot(session: str, since: float, user: str | None = "u") -> SessionSnapshot:
    return SessionSnapshot(
        session, "proxy.listen[0]", "192.0.2.1:5000", user, "tcp:u:110", since, 3, 20, 40
    )


def result(deferred: Deferred[Any]) -> Any:
    found: list[Any] = []
    deferred.addBoth(found.append)
    assert found
    return found[0]


def test_everyProcessOldestFirst() -> None:
    """
    Main's two sessions and worker 1's one, merged by when they opened.
    """
    local = (snapshot("1", 10.0), snapshot("2", 30.0))
    workers: list[tuple[int, Deferred[tuple[SessionSnapshot, ...]]]] = [
        (1, succeed((snapshot("1", 20.0, None),)))
    ]
    now = result(OpenSessions(lambda: local, lambda: workers).now())
    assert [(o.process, o.snapshot.session) for o in now.sessions] == [
        ("main", "1"),
        ("worker 1", "1"),
        ("main", "2"),
    ]
    assert now.unanswered == ()


def test_silentWorkerIsNamed() -> None:
    """
    Worker 2 fails to answer: it is named; worker 1's sessions are there.
    """
    workers = [(1, succeed((snapshot("7", 1.0),))), (2, fail(TimeoutError()))]
    now = result(OpenSessions(tuple, lambda: workers).now())
    assert [o.process for o in now.sessions] == ["worker 1"]
    assert now.unanswered == ("worker 2",)
