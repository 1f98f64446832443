"""
A session's failed logins: L{FailedLogins} counts them, holds back each
failure's answer for the configured delay (a guesser learns nothing sooner
than from a slow server) and says when the session has had enough tries.
Given the clock, never the session.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater


class FailedLogins:
    """
    Counts one session's failed logins.

    @ivar count: failed logins so far.
    """

    def __init__(self, clock: IReactorTime, delay: float, maximum: int) -> None:
        """
        @param delay: seconds to hold back the answer to a failed login.
        @param maximum: failed logins after which the session hangs up.
        """
        self._clock = clock
        self._delay = delay
        self._maximum = maximum
        self.count = 0

    def record(self) -> Deferred[bool]:
        """
        Count one failed login; fire, after the delay, with whether the
        session should hang up once it has answered.
        """
        self.count += 1
        exhausted = self.count >= self._maximum
        if self._delay > 0:
            return deferLater(self._clock, self._delay, lambda: exhausted)
        return succeed(exhausted)
