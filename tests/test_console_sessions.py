"""
The console's server-side sessions: unguessable ids, idle and absolute
expiry on the injected clock, sign-out, and a bounded number.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from popproxy.console._sessions import SessionStore


def test_idsAreRandomAndLong() -> None:
    """
    Each session gets its own 256-bit id and form token.
    """
    store = SessionStore(Clock())
    sessions = [store.open("alice", "192.0.2.1") for _ in range(50)]
    assert len({s.id for s in sessions}) == 50 and len({s.csrf for s in sessions}) == 50
    assert all(len(s.id) >= 43 and s.id != s.csrf for s in sessions)


def test_idleSessionsExpire() -> None:
    """
    A session used within the timeout lives on; one left idle longer ends.
    """
    clock = Clock()
    store = SessionStore(clock, timeout=60)
    session = store.open("alice", "192.0.2.1")
    clock.advance(50)
    assert store.find(session.id) is not None
    clock.advance(50)
    assert store.find(session.id) is not None
    clock.advance(61)
    assert store.find(session.id) is None and len(store) == 0


def test_lifetimeEndsEvenBusySessions() -> None:
    """
    However busy, a session ends its lifetime after sign-in.
    """
    clock = Clock()
    store = SessionStore(clock, timeout=60, lifetime=100)
    session = store.open("alice", "192.0.2.1")
    for _ in range(3):
        clock.advance(40)
        found = store.find(session.id)
    assert found is None


def test_closeAndUnknown() -> None:
    """
    Sign-out ends the session; unknown or empty ids find nothing.
    """
    store = SessionStore(Clock())
    session = store.open("alice", "192.0.2.1")
    store.close(session.id)
    assert store.find(session.id) is None and store.find("") is None and store.find(None) is None


def test_boundedLeastRecentlyUsedFirst() -> None:
    """
    Past the maximum, the least recently used session ends first.
    """
    store = SessionStore(Clock(), maxSessions=2)
    first, second = store.open("a", "x"), store.open("b", "x")
    store.find(first.id)
    third = store.open("c", "x")
    assert store.find(second.id) is None
    assert store.find(first.id) is not None and store.find(third.id) is not None


def test_endAdministratorsEndsOnlyTheirAdministratorSessions() -> None:
    """
    Ending administrator "root" ends both of root's administrator sessions
    and none other: not ops's, and not a user's whose mail login is also
    "root" (signed in on the users' form).
    """
    store = SessionStore(Clock())
    first, second = store.open("root", "a", admin=True), store.open("root", "b", admin=True)
    ops = store.open("ops", "c", admin=True)
    user = store.open("root", "d")
    assert store.endAdministrators(["root", "gone"]) == 2
    assert store.find(first.id) is None and store.find(second.id) is None
    assert store.find(ops.id) is not None and store.find(user.id) is not None


def test_newTimeoutAppliesToOpenSessions() -> None:
    """
    A session opened under a 600-second timeout ends after 61 idle
    seconds once the timeout is 60.
    """
    clock = Clock()
    store = SessionStore(clock, timeout=600)
    session = store.open("alice", "a")
    store.setTimeout(60)
    clock.advance(61)
    assert store.find(session.id) is None
