"""
The upstream connections a process holds for sessions that have not sent a
login command: L{PreloginPool} lets at most C{[limits] prelogin_upstream}
sessions at once connect upstream before their greeting (for its APOP
timestamp).  A session beyond that is greeted by the proxy alone and
connects upstream at its first login command, as with C{upstream_hold =
0}: a flood of idle connections, from however many addresses, holds at
most that many of the upstream's pre-login connections (a default Dovecot
runs about 100 pre-login processes).

A session gives its place back when the connection is released
(C{upstream_hold}), at its first login command (from then on the
connection is its login's), or when it ends.  When the pool is full the
log says so, at most once a minute, with how many sessions were greeted
without an upstream connection.  Given the clock, never a session.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["PreloginPool"]

#: Seconds between two warnings that the pool is full.
WARN_EVERY = 60.0


class PreloginPool:
    """
    Counts the places for upstream connections made before login.

    @ivar held: places taken.
    """

    log = Logger()

    def __init__(self, limit: int, clock: IReactorTime) -> None:
        """
        @param limit: places at once (0: no session connects before login).
        """
        self.limit = limit
        self.held = 0
        self._clock = clock
        self._warned: float | None = None
        self._without = 0

    def reconfigure(self, limit: int) -> None:
        """
        Apply a reloaded limit; the places taken stay taken (a lower limit
        lets no new session in until enough are given back).
        """
        self.limit = limit

    def take(self) -> bool:
        """
        Take a place if one is free: whether the session may connect
        upstream before its greeting.
        """
        if self.held < self.limit:
            self.held += 1
            return True
        self._without += 1
        now = self._clock.seconds()
        if self._warned is None or now - self._warned >= WARN_EVERY:
            self.log.warn(
                "{held} upstream connections held for sessions not logged in"
                " ([limits] prelogin_upstream): {sessions} new sessions greeted"
                " without one (no APOP for them)",
                held=self.held,
                sessions=self._without,
            )
            self._warned = now
            self._without = 0
        return False

    def give(self) -> None:
        """
        Give a place back.
        """
        self.held = max(0, self.held - 1)
