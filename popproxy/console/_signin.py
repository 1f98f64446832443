"""
The console's sign-in check: a mail login and password are right when the
upstream the login routes to (the proxy's own router) accepts them in a
POP3 login.  Nothing is stored; the connection is closed as soon as the
upstream has answered (without QUIT: nothing was done in the mailbox).

Every attempt goes through the proxy's L{LoginThrottle} exactly as a POP3
login does: a blocked address is refused before anything is sent, an
attempt waits its turn, and each end is recorded in the same counters
(so a failure logs the same C{login failure:} line that fail2ban matches,
and sign-ins and POP3 logins add up to the same block).

What can be decided without the upstream is decided before it is asked: a
login or password that no POP3 login line could carry (a CR, LF or NUL, a
login too long for one SASL response line: L{planSasl}) fails as a wrong
password does, counted and delayed the same, and opens no connection.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import partial

from twisted.internet.defer import Deferred, race
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from popproxy._loginlines import LoginCommands
from popproxy._loginplan import LoginRefusal, planSasl
from popproxy._loginthrottle import LoginThrottle
from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._routing import NoRoute, Route, Router
from popproxy._sasl import Credentials
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection, describeFailure
from popproxy._upstreamlink import UpstreamLink

#: Connects to an upstream, greeted (the proxy's own connector).
Connect = Callable[[UpstreamTarget, ClientOrigin | None], Deferred[UpstreamConnection]]

log = PrintableLogger(namespace="popproxy.console")


class SignIn(enum.Enum):
    """
    How a sign-in attempt ended.
    """

    #: The upstream accepted the login and password.
    OK = "ok"
    #: Wrong login or password (or no upstream serves the login).
    FAILED = "failed"
    #: The address is blocked, or has too many attempts waiting.
    BLOCKED = "blocked"
    #: The upstream could not be asked.
    UNAVAILABLE = "unavailable"


class SignInCheck:
    """
    Checks mail logins against their upstream.

    @param failureDelay: seconds a failed attempt waits before it is
        answered when there is no throttle (as a POP3 session's does).
    """

    def __init__(
        self,
        router: Router,
        connect: Connect,
        clock: IReactorTime,
        throttle: LoginThrottle | None,
        failureDelay: float = 1.0,
    ) -> None:
        self._router = router
        self._connect = connect
        self._clock = clock
        self._throttle = throttle
        self._failureDelay = failureDelay

    def check(self, login: str, password: str, origin: ClientOrigin) -> Deferred[SignIn]:
        """
        Whether C{login} and C{password}, from the browser at C{origin},
        are a mail login its upstream accepts.
        """
        return Deferred.fromCoroutine(self._check(login, password, origin))

    async def _check(self, login: str, password: str, origin: ClientOrigin) -> SignIn:
        address = origin.source.host if origin.source is not None else ""
        throttle = self._throttle
        if throttle is not None and await throttle.blocked(address):
            return SignIn.BLOCKED
        try:
            route = self._router.route(login)
        except NoRoute:
            route = None
        if throttle is not None:
            admission = await throttle.admit(address, login)
            if admission.refused:
                return SignIn.BLOCKED
            if admission.wait > 0:
                await deferLater(self._clock, admission.wait)
        accepted = False if route is None else await self._logIn(route, password, origin, login)
        return await self._ended(accepted, address, login)

    async def _ended(self, accepted: bool | None, address: str, login: str) -> SignIn:
        """
        Record how the attempt ended (an upstream that could not be asked
        counts as neither success nor failure).
        """
        if accepted is None:
            return SignIn.UNAVAILABLE
        if accepted:
            log.info("console sign-in: {user} from {client}", user=login, client=address)
            if self._throttle is not None:
                await self._throttle.succeeded(address, login)
            return SignIn.OK
        log.info("console sign-in failed for {user} from {client}", user=login, client=address)
        if self._throttle is not None:
            await self._throttle.failed(address, login)
        elif self._failureDelay > 0:
            await deferLater(self._clock, self._failureDelay)
        return SignIn.FAILED

    async def _logIn(
        self, route: Route, password: str, origin: ClientOrigin, login: str
    ) -> bool | None:
        """
        Log in at C{route}'s upstream the way it offers (SASL PLAIN, else
        USER/PASS); C{False} without connecting if no login line could
        carry the values; C{None} if it could not be asked (unreachable, or
        the connection ended before it answered).
        """
        credentials = Credentials(
            b"", route.login.encode("utf-8", "surrogateescape"), password.encode("utf-8")
        )
        refusal = planSasl(route, credentials, None)
        if isinstance(refusal, LoginRefusal):
            log.warn(
                "console sign-in for {user}: login values refused: {reason}",
                user=login,
                reason=refusal.reason,
            )
            return False
        try:
            connection = await self._connect(route.upstream, origin)
        except Exception:
            self._unavailable(login, route, Failure())
            return None
        lost: Deferred[bool | None] = Deferred()
        connection.onLost = partial(_ended, lost)
        exchange: Deferred[bool | None] = Deferred.fromCoroutine(
            self._exchange(connection, route, credentials)
        )
        try:
            accepted: bool | None = (await race([exchange, lost]))[1]
        except Exception:
            self._unavailable(login, route, Failure())
            return None
        finally:
            connection.close()
        if accepted is None:
            log.warn(
                "console sign-in for {user}: {upstream} closed the connection",
                user=login,
                upstream=route.upstream.endpoint,
            )
        return accepted

    @staticmethod
    def _unavailable(login: str, route: Route, failure: Failure) -> None:
        log.warn(
            "console sign-in for {user}: cannot use {upstream}: {reason}",
            user=login,
            upstream=route.upstream.endpoint,
            reason=describeFailure(failure),
        )

    @staticmethod
    async def _exchange(
        connection: UpstreamConnection, route: Route, credentials: Credentials
    ) -> bool:
        """
        Send the login lines in turn (chosen by the upstream's CAPA: the
        values were checked before connecting); whether the last one was
        accepted.
        """
        link = UpstreamLink(connection.sendCommand)
        plan = planSasl(route, credentials, await link.capabilities())
        if not isinstance(plan, LoginCommands):
            return False
        for line in plan.lines:
            status = await link.shortCommand(line)
            if not (status.ok or status.continuation):
                return False
        return bool(status.ok)


def _ended(lost: Deferred[bool | None], reason: Failure) -> None:
    """
    The upstream connection ended before the exchange did: it is unanswered.
    """
    if not lost.called:
        lost.callback(None)
