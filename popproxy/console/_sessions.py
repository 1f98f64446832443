"""
The console's sign-in sessions, kept server-side in the process's memory:
a session id is 256 random bits (L{secrets}), the only thing the browser
holds (in a cookie); the user, the form token and the times stay here.
A session ends when unused for C{timeout} seconds, C{lifetime} seconds
after sign-in whatever its use, or at sign-out.  With more than
C{maxSessions} open, the least recently used ones end first.  A reload
sets a new C{timeout} and ends the sessions of administrators it removed
(L{popproxy.console._current}).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, replace

from twisted.internet.interfaces import IReactorTime


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """
    One signed-in browser.

    @ivar id: what its cookie holds.
    @ivar user: the mail login it signed in with.
    @ivar csrf: the token every form of this session must send back.
    @ivar address: the browser's address at sign-in.
    @ivar admin: whether C{user} is an administrator's name (signed in on
        the administrators' form), not a mail login.
    """

    id: str
    user: str
    csrf: str
    address: str
    created: float
    lastSeen: float
    admin: bool = False


def newToken() -> str:
    """
    An unguessable token (256 bits, URL-safe base64).
    """
    return secrets.token_urlsafe(32)


class SessionStore:
    """
    The open sessions of this process.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float = 1800.0,
        lifetime: float = 12 * 3600.0,
        maxSessions: int = 10000,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._lifetime = lifetime
        self._maxSessions = maxSessions
        #: By id, least recently used first.
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def open(self, user: str, address: str, admin: bool = False) -> ConsoleSession:
        """
        A new session for C{user}, signed in from C{address} (as an
        administrator: C{admin}).
        """
        now = self._clock.seconds()
        self.expire()
        session = ConsoleSession(newToken(), user, newToken(), address, now, now, admin)
        self._sessions[session.id] = session
        while len(self._sessions) > self._maxSessions:
            self._sessions.popitem(last=False)
        return session

    def find(self, identifier: str | None) -> ConsoleSession | None:
        """
        The open session of C{identifier}, now marked used; C{None} if
        there is none (unknown, ended, or expired: then it ends now).
        """
        if not identifier:
            return None
        session = self._sessions.get(identifier)
        if session is None:
            return None
        now = self._clock.seconds()
        if now - session.lastSeen > self._timeout or now - session.created > self._lifetime:
            del self._sessions[identifier]
            return None
        session = replace(session, lastSeen=now)
        self._sessions[identifier] = session
        self._sessions.move_to_end(identifier)
        return session

    def close(self, identifier: str) -> None:
        """
        End the session C{identifier} (sign-out); nothing if there is none.
        """
        self._sessions.pop(identifier, None)

    def setTimeout(self, timeout: float) -> None:
        """
        From now on, a session unused for C{timeout} seconds ends (open
        ones too: they are measured against it at their next request).
        """
        self._timeout = timeout

    def endAdministrators(self, names: Collection[str]) -> int:
        """
        End every administrator's session signed in as one of C{names}
        (users' sessions of the same login stay); how many ended.
        """
        ended = [
            identifier
            for identifier, session in self._sessions.items()
            if session.admin and session.user in names
        ]
        for identifier in ended:
            del self._sessions[identifier]
        return len(ended)

    def expire(self) -> int:
        """
        End every expired session; how many ended.
        """
        now = self._clock.seconds()
        ended = [
            identifier
            for identifier, session in self._sessions.items()
            if now - session.lastSeen > self._timeout or now - session.created > self._lifetime
        ]
        for identifier in ended:
            del self._sessions[identifier]
        return len(ended)

    def __len__(self) -> int:
        return len(self._sessions)
