"""
A session's login commands carried to the upstream: L{LoginExchange} routes
the login name, connects to its upstream, sends the planned lines (see
L{popproxy._loginplan}) and says how each command ended, as a frozen
L{LoginAnswer}.  A failed login's answer comes only after the failure
delay (L{FailedLogins}), saying whether the session should hang up.  With
a L{LoginThrottle}, every attempt waits its turn (or is refused) before its
password goes upstream, and its end is recorded there.  It is given the
router, the upstream slot and link, the failure counter and the throttle,
never the session.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from popproxy._failedlogins import FailedLogins
from popproxy._framing import StatusLine
from popproxy._loginlines import LoginCommands
from popproxy._loginplan import (
    LoginPlan,
    LoginRefusal,
    NeedCapabilities,
    PendingPass,
    passAsPlain,
    planApop,
    planPass,
    planSasl,
    planUser,
    saslIdentity,
)
from popproxy._loginsinflight import InFlight
from popproxy._loginthrottle import Admission, LoginThrottle
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._printable import PrintableLogger
from popproxy._routing import NoRoute, Route, Router
from popproxy._sasl import Credentials
from popproxy._upstream import describeFailure, failureCode
from popproxy._upstreamlink import UpstreamLink
from popproxy._upstreamslot import UpstreamSlot

if TYPE_CHECKING:
    from popproxy._sessionsettings import SessionSettings

#: The client's answer when its login name has no route.
NO_ROUTE = b"-ERR [AUTH] no mail server is configured for that user"

#: The client's answer to an APOP whose digest covers a greeting that is no
#: longer the upstream connection's.
GREETING_GONE = b"-ERR [SYS/TEMP] the mail server connection was reset; reconnect"

#: The client's answer when its address is blocked for failed logins.
BLOCKED = b"-ERR [SYS/TEMP] too many failed logins from your address; try again later"

#: The client's answer when earlier attempts from its address (or for its
#: account) already fill the longest wait.
TOO_MANY = b"-ERR [SYS/TEMP] too many login attempts; try again later"


@dataclass(frozen=True, slots=True)
class LoginAnswer:
    """
    How one login command ended.

    @ivar line: what the client is told (without CRLF).
    @ivar login: the login name it was for (empty if not that far).
    @ivar loggedIn: the upstream accepted the login.
    @ivar failed: it counts (and is delayed) as a failed login.
    @ivar upstream: where the login went, for the log.
    @ivar hangUp: there were too many failed logins: the session ends once
        C{line} is sent.
    """

    line: bytes
    login: str = ""
    loggedIn: bool = False
    failed: bool = False
    upstream: str = ""
    hangUp: bool = False

    @property
    def result(self) -> str | None:
        """
        How the login ended, as the metrics count it: C{ok}, C{failed} (a
        failed login), C{unavailable} (the upstream could not be used),
        C{refused} (the proxy would not try); C{None} while it goes on
        (USER accepted, PASS to follow).
        """
        if self.loggedIn:
            return "ok"
        if self.failed:
            return "failed"
        if self.line.startswith(b"+"):
            return None
        return "unavailable" if b"[SYS/" in self.line else "refused"


class LoginExchange:
    """
    Carries one session's USER/PASS, AUTH and APOP logins upstream.

    @ivar pending: the login waiting for its C{PASS}, if any.
    @ivar clientAddress: the client's address (its host), as the throttle
        counts it; set by the session once connected.
    """

    log = PrintableLogger()

    def __init__(
        self,
        router: Router,
        slot: UpstreamSlot,
        link: UpstreamLink,
        failures: FailedLogins,
        session: str,
        metrics: Metrics = NO_METRICS,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._router = router
        self._throttle = throttle
        self.clientAddress = ""
        self._metrics = metrics
        self._failures = failures
        self._slot = slot
        self._link = link
        self._session = session
        self.pending: PendingPass | None = None
        #: The place of the attempt awaiting its verdict, if any.
        self._inFlight: InFlight | None = None

    @classmethod
    def forSession(
        cls, settings: SessionSettings, slot: UpstreamSlot, link: UpstreamLink, session: str
    ) -> LoginExchange:
        """
        The login exchange of one session of a listener with C{settings}:
        its router, failure delay and limit, metrics and throttle.
        """
        failures = FailedLogins(
            settings.clock, settings.loginFailureDelay, settings.maxFailedLogins
        )
        return cls(
            settings.router,
            slot,
            link,
            failures,
            session,
            settings.metrics,
            settings.loginThrottle,
        )

    @property
    def failedLogins(self) -> int:
        """
        Failed logins in this session so far.
        """
        return self._failures.count

    async def paced(self, login: Awaitable[LoginAnswer], method: str) -> LoginAnswer:
        """
        The answer of C{login} (one of the login methods below, counted as
        C{method}: C{user}, C{apop} or C{auth}); a failed login's only
        after the failure delay, saying whether to hang up.  The attempt's
        place among those in flight is given back once its verdict is
        recorded, before that delay.
        """
        try:
            answer = await login
            await self._recordVerdict(answer, method)
        finally:
            self._leaveInFlight()
        if not answer.failed:
            return answer
        return replace(answer, hangUp=await self._failures.record())

    async def _recordVerdict(self, answer: LoginAnswer, method: str) -> None:
        """
        Count how C{answer} ended, and tell the throttle of a success or a
        failure.
        """
        result = answer.result
        if result is not None:
            self._metrics.loginEnded(method, result)
        if answer.loggedIn and self._throttle is not None:
            await self._throttle.succeeded(self.clientAddress, answer.login)
        if not answer.failed:
            return
        self.log.info(
            "session {session}: login failed for {user}", session=self._session, user=answer.login
        )
        if self._throttle is not None:
            await self._throttle.failed(self.clientAddress, answer.login)

    def _leaveInFlight(self) -> None:
        place, self._inFlight = self._inFlight, None
        if place is not None and self._throttle is not None and self._throttle.inFlight:
            self._throttle.inFlight.leave(place)

    async def invalidCommand(self, line: bytes) -> LoginAnswer:
        """
        An invalid command before login (C{line}: its refusal): it counts,
        and is delayed, as a failed login, so probing gains nothing.
        """
        self.log.info("session {session}: invalid command before login", session=self._session)
        return LoginAnswer(line, hangUp=await self._failures.record())

    async def user(self, login: str) -> LoginAnswer:
        """
        C{USER login}: start a USER/PASS login at the route's upstream.
        """
        self.pending = None
        route = self._route(login)
        if isinstance(route, LoginAnswer):
            return route
        user = planUser(route)
        if isinstance(user, LoginRefusal):
            return self._refused(login, user)
        if await self._isBlocked():
            return LoginAnswer(BLOCKED, login, hangUp=True)
        unreachable = await self._connectTo(route)
        if unreachable is not None:
            return unreachable
        status = await self._link.shortCommand(user.lines[0])
        if status.ok:
            self.pending = PendingPass(login, route)
            return LoginAnswer(status.line, login)
        if passAsPlain(await self._link.capabilities()):
            # The upstream refused USER and offers only SASL PLAIN: PASS
            # logs in with AUTH PLAIN instead (RFC 5034).
            self.pending = PendingPass(login, route, asPlain=True)
            return LoginAnswer(b"+OK send PASS (the mail server takes it as AUTH PLAIN)", login)
        return LoginAnswer(status.line, login)

    async def password(self, password: bytes) -> LoginAnswer:
        """
        C{PASS password}: finish the pending USER/PASS login.
        """
        pending, self.pending = self.pending, None
        if pending is None:
            return LoginAnswer(b"-ERR send USER first")
        return await self._follow(pending.login, pending.route, planPass(pending, password))

    async def sasl(self, credentials: Credentials) -> LoginAnswer:
        """
        A finished SASL exchange: log in upstream with SASL PLAIN if it
        offers it, else USER/PASS.  The authorization identity, if given,
        else the authentication identity, chooses the route.
        """
        identity = saslIdentity(credentials)
        route = self._route(identity)
        if isinstance(route, LoginAnswer):
            return route
        if await self._isBlocked():
            return LoginAnswer(BLOCKED, identity, hangUp=True)
        plan = planSasl(route, credentials, None)
        if isinstance(plan, NeedCapabilities):
            unreachable = await self._connectTo(route)
            if unreachable is not None:
                return unreachable
            plan = planSasl(route, credentials, await self._link.capabilities())
        return await self._follow(identity, route, plan)

    async def apop(self, login: str, digest: bytes, timestamp: bytes) -> LoginAnswer:
        """
        C{APOP login digest}, the digest made over C{timestamp}: relayed
        only over the upstream connection whose greeting showed it.
        """
        route = self._route(login)
        if isinstance(route, LoginAnswer):
            return route
        if not self._showedGreeting(route, timestamp):
            return LoginAnswer(GREETING_GONE)
        return await self._follow(login, route, planApop(route, digest))

    def _route(self, login: str) -> Route | LoginAnswer:
        try:
            return self._router.route(login)
        except NoRoute:
            return LoginAnswer(NO_ROUTE)

    def _showedGreeting(self, route: Route, timestamp: bytes) -> bool:
        connection = self._slot.connection
        greeting = connection.greeting if connection is not None else None
        return (
            self._slot.isUsable(route.upstream)
            and greeting is not None
            and timestamp in greeting.line
        )

    async def _connectTo(self, route: Route) -> LoginAnswer | None:
        """
        Connect to C{route}'s upstream; on failure, the answer saying why.
        """
        try:
            await self._slot.ensure(route.upstream)
        except Exception:
            failure = Failure()
            return LoginAnswer(f"-ERR [{failureCode(failure)}] {describeFailure(failure)}".encode())
        return None

    async def _follow(self, login: str, route: Route, plan: LoginPlan) -> LoginAnswer:
        """
        Send a planned login upstream, or refuse it.
        """
        if isinstance(plan, LoginRefusal):
            return self._refused(login, plan)
        if not isinstance(plan, LoginCommands):
            raise AssertionError(f"a login plan still needs capabilities: {plan!r}")
        return await self._logIn(login, route, plan.lines)

    async def _logIn(self, login: str, route: Route, lines: tuple[bytes, ...]) -> LoginAnswer:
        """
        Send login lines upstream in turn, each after the previous one was
        accepted (C{+OK} or a SASL continuation); the last answer, or the
        first refusal, decides.

        @param lines: of a L{LoginCommands} made by L{popproxy._loginlines},
            which refuses values that would not stay one value of one line.
        """
        refusal = await self._takeTurn(login)
        if refusal is not None:
            return refusal
        status = StatusLine(b"-ERR [AUTH] nothing to send")
        for line in lines:
            status = await self._link.shortCommand(line)
            if not (status.ok or status.continuation):
                break
        upstream = str(route.upstream)
        if status.ok:
            return LoginAnswer(status.line, login, loggedIn=True, upstream=upstream)
        if status.continuation:
            # The upstream wants more SASL steps than PLAIN has: give up.
            self._slot.drop()
            return LoginAnswer(b"-ERR [AUTH] the mail server's login failed", login, failed=True)
        return LoginAnswer(status.line, login, failed=True, upstream=upstream)

    async def _isBlocked(self) -> bool:
        """
        The client's address is blocked: its login is refused before
        anything is sent, or even connected, upstream.
        """
        return self._throttle is not None and await self._throttle.blocked(self.clientAddress)

    async def _takeTurn(self, login: str) -> LoginAnswer | None:
        """
        Wait until the throttle lets this attempt's password go upstream
        (a place among the address's attempts in flight first, then its
        turn); if it refuses the attempt, the answer (the session hangs up).
        """
        if self._throttle is None:
            return None
        if self._throttle.inFlight is not None:
            self._inFlight = await self._throttle.inFlight.enter(self.clientAddress)
            if self._inFlight is None:
                self._slot.drop()
                return LoginAnswer(TOO_MANY, login, hangUp=True)
        admission: Admission = await self._throttle.admit(self.clientAddress, login)
        if admission.refused:
            self._slot.drop()
            line = BLOCKED if admission.blockedUntil is not None else TOO_MANY
            return LoginAnswer(line, login, hangUp=True)
        if admission.wait > 0:
            await deferLater(self._throttle.clock, admission.wait)
        return None

    def _refused(self, login: str, refusal: LoginRefusal) -> LoginAnswer:
        """
        A login that cannot go upstream: nothing of it is sent; a value the
        proxy cannot send counts as a failed login.
        """
        if refusal.failedLogin:
            self.log.warn(
                "session {session}: login values refused for {user}: {reason}",
                session=self._session,
                user=login,
                reason=refusal.reason,
            )
        return LoginAnswer(refusal.line, login, failed=refusal.failedLogin)
