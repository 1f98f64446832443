"""
One session's part of the C{[limits]}: L{SessionGuard} asks the process's
L{Admission} whether the connection may become a session (and gives the
ticket back at the end), runs the session's login and command-line
deadlines and the time an upstream connection made before login is held
(L{SessionDeadlines}).  Given the session's settings and the callables
that end the session or release its upstream connection, never the
session.  Without C{[limits]} (the protocol tests' default) it enforces
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from popproxy._admission import ConnectionLimits, Refusal, Ticket
from popproxy._clientnetwork import clientNetwork
from popproxy._deadlines import SessionDeadlines
from popproxy._printable import PrintableLogger
from popproxy._refusallog import FIRST_FORMAT

if TYPE_CHECKING:
    from popproxy._sessionsettings import SessionSettings

#: Said to a client that did not log in within C{[limits] login_timeout}.
LOGIN_TOO_SLOW = b"-ERR [SYS/PERM] autologout: no login in time\r\n"

#: Said to a client whose command line took over C{[limits] command_deadline}.
LINE_TOO_SLOW = b"-ERR [SYS/PERM] autologout: command line not completed in time\r\n"


class SessionGuard:
    """
    The admission ticket and the C{[limits]} timers of one session.

    @ivar refused: the connection was refused at the door, or closed
        while waiting for the answer (it never became a session).
    """

    log = PrintableLogger()

    def __init__(
        self,
        settings: SessionSettings,
        *,
        end: Callable[[str, bytes], None],
        releaseUpstream: Callable[[], None],
    ) -> None:
        """
        @param end: ends the session with a reason for the log and the
            last words for the client.
        @param releaseUpstream: drops an upstream connection held before
            login, if the session is not using it.
        """
        self._settings = settings
        self._end = end
        self._ticket: Ticket | None = None
        self.refused = False
        self._closed = False
        self._deadlines: SessionDeadlines | None = None
        #: Holds a place in the process's L{PreloginPool}.
        self._pooled = False
        if settings.limits is not None:
            self._deadlines = SessionDeadlines(
                settings.clock,
                settings.limits,
                loginExpired=self._loginTooSlow,
                lineExpired=self._lineTooSlow,
                releaseUpstream=releaseUpstream,
            )

    @property
    def enforced(self) -> bool:
        """
        Whether C{[limits]} apply (invalid commands count as failures, CAPA
        before login may answer from the cache).
        """
        return self._deadlines is not None

    def connectToGreet(self) -> bool:
        """
        Whether to connect upstream before the greeting (for its APOP
        timestamp): not when C{[limits] upstream_hold} is 0, nor when the
        process already holds C{prelogin_upstream} such connections (else
        the session takes a place among them).
        """
        limits, pool = self._settings.limits, self._settings.preloginPool
        if limits is None:
            return True
        if limits.upstreamHold <= 0:
            return False
        self._pooled = pool is None or pool.take()
        return self._pooled

    def upstreamReleased(self) -> None:
        """
        The upstream connection made before login was released: its place
        is free.
        """
        self._givePlace()

    def _givePlace(self) -> None:
        pool = self._settings.preloginPool
        if self._pooled and pool is not None:
            pool.give()
        self._pooled = False

    def admit(self, host: str | None, client: str) -> Deferred[bytes | None]:
        """
        Ask the process's admission whether a connection from C{host} may
        become a session: fires with C{None} if so, else with the line to
        say before closing (logged and counted here).  The answer is
        synchronous unless the per-address counts are shared with other
        processes (L{popproxy._sharedadmission}), which answer within a
        fraction of a second.
        """
        admission = self._settings.admission
        if admission is None:
            return succeed(None)
        asked: Deferred[Ticket | Refusal] = maybeDeferred(admission.admit, host)
        return asked.addCallback(self._answered, host, client)

    def _answered(self, answer: Ticket | Refusal, host: str | None, client: str) -> bytes | None:
        if isinstance(answer, Ticket):
            if self._closed:
                # The client left while the shared counts were asked.
                self._release(answer)
                return None
            self._ticket = answer
            return None
        self.refused = True
        self._logRefusal(host, client, answer.reason)
        self._settings.metrics.connectionRefused(self._settings.listener, answer.reason)
        return answer.line

    def _logRefusal(self, host: str | None, client: str, reason: str) -> None:
        """
        Log a refusal: through the process's L{RefusalLog}, which counts
        them per client network, if there is one.
        """
        settings = self._settings
        if settings.refusalLog is None:
            self.log.info(FIRST_FORMAT, client=client, reason=reason)
            return
        limits = settings.limits or ConnectionLimits()
        network = clientNetwork(host or "", limits.ipv4Prefix, limits.ipv6Prefix)
        settings.refusalLog.refused(client, str(network) if network else str(host), reason)

    def opened(self) -> None:
        """
        The session has greeted (or is about to): its login time runs.
        """
        if self._deadlines is not None:
            self._deadlines.opened()

    def fed(self, completed: int, partial: bool) -> bool:
        """
        A read completed C{completed} command lines and left a partial one
        or not; return whether it shows the client is there (its idle timer
        restarts).  Under C{[limits]} only a whole line does, and a partial
        line has its own deadline.
        """
        if self._deadlines is None:
            return True
        self._deadlines.line.fed(completed, partial)
        return completed > 0

    def loginCommand(self) -> None:
        """
        A login command started: it needs the upstream connection, which is
        the login's from now on, no longer one held for the greeting.
        """
        self._givePlace()
        if self._deadlines is not None:
            self._deadlines.loginCommand()

    def loggedIn(self) -> None:
        self._givePlace()
        if self._deadlines is not None:
            self._deadlines.loggedIn()

    def upstreamIdle(self) -> None:
        """
        An upstream connection made before login has no command running:
        it is held for C{[limits] upstream_hold} seconds at most.
        """
        if self._deadlines is not None:
            self._deadlines.upstreamIdle()

    def closed(self) -> None:
        """
        The connection is gone: stop the timers and give the ticket back.
        """
        if self._deadlines is not None:
            self._deadlines.cancel()
        self._givePlace()
        if self._ticket is None and self._settings.admission is not None:
            # Closed before admission answered: not a session.
            self.refused = True
        self._closed = True
        if self._ticket is not None:
            self._release(self._ticket)
            self._ticket = None

    def _release(self, ticket: Ticket) -> None:
        admission = self._settings.admission
        if admission is not None:
            admission.release(ticket)

    def _loginTooSlow(self) -> None:
        self._end("login timeout", LOGIN_TOO_SLOW)

    def _lineTooSlow(self) -> None:
        self._end("command line timeout", LINE_TOO_SLOW)
