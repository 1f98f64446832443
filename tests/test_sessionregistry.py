"""
Tests for popproxy._sessionregistry: the sessions a process has open now,
listed as frozen snapshots.  First over fake sessions that hand out a
fixed snapshot; then the process's registry as the graceful stop keeps it,
fed by real sessions over in-memory transports (tests.sessionharness).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.task import Clock

from popproxy._gracefulstop import GracefulStop
from popproxy._lifecycle import Lifecycle
from popproxy._sessionrecord import SessionSnapshot
from popproxy._sessionregistry import SessionRegistry
from tests.sessionharness import Harness


@dataclass(eq=False)
class FakeSession:
    """
    A session that shows as C{user}.
    """

    user: str

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(
            session="1",
            listener="pop3",
            client="192.0.2.7:50000",
            user=self.user,
            upstream=None,
            since=0.0,
            commands=0,
            bytesIn=0,
            bytesOut=0,
        )


def users(registry: SessionRegistry[FakeSession]) -> list[str | None]:
    return [snapshot.user for snapshot in registry.snapshot()]


def test_listsOpenSessionsOldestFirst() -> None:
    """
    The snapshot lists the sessions open now in the order they opened;
    one that ended is gone, and one never registered leaves nothing to
    remove.
    """
    registry: SessionRegistry[FakeSession] = SessionRegistry()
    alice, bob, carol = FakeSession("alice"), FakeSession("bob"), FakeSession("carol")
    assert registry.snapshot() == () and len(registry) == 0
    for session in (alice, bob, carol):
        registry.add(session)
    registry.discard(bob)
    registry.discard(FakeSession("never registered"))
    assert users(registry) == ["alice", "carol"]
    assert len(registry) == 2 and list(registry) == [alice, carol]


def test_sessionsMayLeaveWhileIterated() -> None:
    """
    A session that ends while the registry is walked (the stop cutting
    sessions, each leaving as it closes) does not break the walk.
    """
    registry: SessionRegistry[FakeSession] = SessionRegistry()
    sessions = [FakeSession(name) for name in ("a", "b", "c")]
    for session in sessions:
        registry.add(session)
    walked = []
    for session in registry:
        walked.append(session.user)
        registry.discard(session)
    assert walked == ["a", "b", "c"] and len(registry) == 0


def test_theProcessRegistryListsRealSessions() -> None:
    """
    The graceful stop's registry lists each open session of the process as
    it stands (who logged in, from where, to which upstream, since when,
    how much; the upstream as the closed line names it), and a session
    that quit leaves it.
    """
    clock = Clock()
    clock.advance(1_800_000_000)
    stop = GracefulStop(clock, 30.0, Lifecycle())
    alice, anonymous = Harness(clock=clock, stop=stop), Harness(clock=clock, stop=stop)
    alice.login()
    alice.send(b"NOOP\r\n")
    alice.upstream.reply(b"+OK\r\n")
    listed = stop.sessions.snapshot()
    assert [s.user for s in listed] == ["alice", None]
    first = listed[0]
    assert (first.listener, first.client, first.upstream) == (
        "test",
        "127.0.0.1:40000",
        "tcp:upstream:110 (starttls)",
    )
    assert (first.since, first.commands) == (1_800_000_000, 3)
    assert first.bytesIn == len(b"USER alice\r\nPASS secret\r\nNOOP\r\n")
    assert first.bytesOut == len(b"+OK popproxy ready\r\n+OK\r\n+OK logged in\r\n+OK\r\n")
    anonymous.send(b"QUIT\r\n")
    anonymous.settle()
    assert [s.user for s in stop.sessions.snapshot()] == ["alice"]
