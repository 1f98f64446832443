"""
The C{[limits]} timers of one session, apart from its idle timeout.

L{LineDeadline} gives a client a fixed time from the first byte of a
command line to its CRLF, so bytes trickling in (slowloris) do not keep a
session alive.  L{SessionDeadlines} adds the time a client has to log in
and the time an upstream connection made before login is kept while no
login command comes.  Both are given the clock and the callables to run
when a time is up, never the session.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from popproxy._admission import ConnectionLimits


class LineDeadline:
    """
    Runs C{expired} when a command line has been incomplete for C{seconds}.
    """

    def __init__(self, clock: IReactorTime, seconds: float, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._seconds = seconds
        self._expired = expired
        self._call: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        """
        Whether a partial line is being timed.
        """
        return self._call is not None

    def fed(self, completed: int, partial: bool) -> None:
        """
        A read completed C{completed} lines and left a partial line or not:
        a new partial line starts its own deadline, a line that goes on
        keeps the one it had.
        """
        if not partial:
            self.cancel()
        elif self._call is None:
            self._call = self._clock.callLater(self._seconds, self._fire)
        elif completed:
            # The timer is moved, not replaced: no new timer per read.
            self._call.reset(self._seconds)

    def cancel(self) -> None:
        """
        Stop timing (no partial line, or the session is ending).
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _fire(self) -> None:
        self._call = None
        self._expired()


class SessionDeadlines:
    """
    The login deadline, the command-line deadline and the hold on an
    upstream connection made before login, of one session.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limits: ConnectionLimits,
        loginExpired: Callable[[], None],
        lineExpired: Callable[[], None],
        releaseUpstream: Callable[[], None],
    ) -> None:
        """
        @param loginExpired: run when the client has not logged in in time.
        @param lineExpired: run when a command line was not completed in time.
        @param releaseUpstream: run when an upstream connection made before
            login has had no login command for C{limits.upstreamHold}.
        """
        self._clock = clock
        self._limits = limits
        self._loginExpired = loginExpired
        self._releaseUpstream = releaseUpstream
        self.line = LineDeadline(clock, limits.commandDeadline, lineExpired)
        self._login: IDelayedCall | None = None
        self._hold: IDelayedCall | None = None

    def opened(self) -> None:
        """
        The session has started: the login deadline runs.
        """
        self._login = self._clock.callLater(self._limits.loginTimeout, self._loginExpired)

    def loggedIn(self) -> None:
        """
        The client logged in: no login deadline, no hold.
        """
        _cancel(self._login)
        self._login = None
        self.loginCommand()

    def upstreamIdle(self) -> None:
        """
        An upstream connection is open before login and no command is
        running: release it unless a login command comes in time.
        """
        if self._hold is None or not self._hold.active():
            self._hold = self._clock.callLater(self._limits.upstreamHold, self._releaseUpstream)

    def loginCommand(self) -> None:
        """
        A login command started: it needs the upstream connection.
        """
        _cancel(self._hold)
        self._hold = None

    def cancel(self) -> None:
        """
        The session is ending.
        """
        self.loggedIn()
        self.line.cancel()


def _cancel(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()
