"""
The AUTHORIZATION state's login commands of one session: L{Authorization}
checks C{USER}, C{PASS}, C{APOP} and C{AUTH} (and the SASL responses that
follow a challenge), refuses at once what may not be tried (a login before
the TLS the policy requires, APOP without a greeting timestamp, missing
arguments), and hands the rest to the login exchange as one exchange for the
session to run; when an exchange ends, it says how the session goes on
(TRANSACTION, or hang up).  The APOP timestamp of the greeting is its own.
It is given the login exchange and narrow callables (write to the client,
set the longest line the client may send, whether logins are allowed yet,
note a login command, enter TRANSACTION), never the session.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from popproxy._framing import MAX_COMMAND_LINE, CommandLine
from popproxy._loginexchange import LoginAnswer
from popproxy._loginlines import MAX_SASL_LINE
from popproxy._loginplan import PendingPass
from popproxy._printable import PrintableLogger
from popproxy._sasl import MECHANISMS, Challenge, Credentials, SaslServer, SaslStep

__all__ = ["Authorization", "LoginRun", "Logins"]

_TIMESTAMP = re.compile(rb"<[!-;=?-~]+>")
_DIGEST = re.compile(rb"[0-9a-fA-F]{32}\Z")

#: One login command's exchange with the upstream, not started yet: the
#: session runs it and hands its answer to L{Authorization.answered}.
LoginRun = Coroutine[Any, Any, LoginAnswer]


class Logins(Protocol):
    """
    What L{Authorization} asks of a L{popproxy._loginexchange.LoginExchange}.
    """

    pending: PendingPass | None

    @property
    def failedLogins(self) -> int: ...

    async def paced(self, login: Awaitable[LoginAnswer], method: str) -> LoginAnswer: ...

    async def invalidCommand(self, line: bytes) -> LoginAnswer: ...

    async def user(self, login: str) -> LoginAnswer: ...

    async def password(self, password: bytes) -> LoginAnswer: ...

    async def sasl(self, credentials: Credentials) -> LoginAnswer: ...

    async def apop(self, login: str, digest: bytes, timestamp: bytes) -> LoginAnswer: ...


class Authorization:
    """
    One session's login commands.  Each command method (C{do_USER},
    C{do_PASS}, C{do_APOP}, C{do_AUTH}, named as the session dispatches
    them) answers the client itself and returns C{None}, or returns the
    L{LoginRun} to run.
    """

    #: User names come from the client: every text field is escaped.
    log = PrintableLogger()

    def __init__(
        self,
        logins: Logins,
        *,
        session: str,
        write: Callable[[bytes], None],
        lineLimit: Callable[[int], None],
        loginsAllowed: Callable[[], bool],
        attempted: Callable[[], None],
        loggedIn: Callable[[str], None],
        countInvalid: bool = False,
    ) -> None:
        """
        @param session: the session's id, for the log.
        @param write: sends bytes to the client.
        @param lineLimit: sets the longest line the client may send next (a
            SASL response may be longer than a command).
        @param loginsAllowed: whether a login may be tried now (the TLS the
            policy requires is up, or none is required).
        @param attempted: notes that a login command started (it stops the
            pre-login upstream hold).
        @param loggedIn: enters TRANSACTION for the login name it is given.
        @param countInvalid: an invalid command counts, and is delayed, as
            a failed login (under C{[limits]}).
        """
        self._logins = logins
        self._session = session
        self._write = write
        self._lineLimit = lineLimit
        self._loginsAllowed = loginsAllowed
        self._attempted = attempted
        self._loggedIn = loggedIn
        self._countInvalid = countInvalid
        self._sasl = SaslServer()
        self._timestamp: bytes | None = None

    @property
    def saslWaiting(self) -> bool:
        """
        An AUTH challenge was sent: the next line is its response.
        """
        return self._sasl.waiting

    @property
    def midLogin(self) -> bool:
        """
        A USER waits for its PASS, or an AUTH challenge for its response.
        """
        return self._logins.pending is not None or self._sasl.waiting

    def greeting(self, upstreamGreeting: bytes | None) -> bytes:
        """
        The proxy's greeting line, with the APOP timestamp of the upstream's
        greeting if it showed one (APOP then relays the client's digest).
        """
        line = b"+OK popproxy ready"
        found = _TIMESTAMP.search(upstreamGreeting) if upstreamGreeting is not None else None
        if found is not None:
            self._timestamp = found.group()
            line += b" " + self._timestamp
        return line

    def forget(self) -> None:
        """
        Forget a login begun before STLS (RFC 2595 section 4).
        """
        self._logins.pending = None
        self._sasl.reset()

    def do_USER(self, arguments: bytes) -> LoginRun | None:
        if self._refusedWithoutTLS():
            return None
        if not arguments or arguments.startswith(b" "):
            self._reply(b"-ERR USER needs a name")
            return None
        login = arguments.decode("utf-8", "surrogateescape")
        return self._paced(self._logins.user(login), "user")

    def do_PASS(self, arguments: bytes) -> LoginRun | None:
        # RFC 1939: the whole rest of the line is the password, spaces too.
        if self._refusedWithoutTLS():
            return None
        return self._paced(self._logins.password(arguments), "user")

    def do_APOP(self, arguments: bytes) -> LoginRun | None:
        if self._refusedWithoutTLS():
            return None
        if self._timestamp is None:
            self._reply(b"-ERR APOP is not available here: use USER/PASS or AUTH")
            return None
        name, _, digest = arguments.rpartition(b" ")
        if not name or not _DIGEST.match(digest):
            self._reply(b"-ERR APOP needs a name and an MD5 digest")
            return None
        login = name.decode("utf-8", "surrogateescape")
        return self._paced(self._logins.apop(login, digest, self._timestamp), "apop")

    def do_AUTH(self, arguments: bytes) -> LoginRun | None:
        if not arguments:
            self._write(b"+OK\r\n" + b"".join(m + b"\r\n" for m in MECHANISMS) + b".\r\n")
            return None
        if self._refusedWithoutTLS():
            return None
        self._attempted()
        return self._saslStep(self._sasl.start(arguments))

    def saslResponse(self, command: CommandLine) -> LoginRun | None:
        """
        The client's line after an AUTH challenge: its response (or C{*},
        cancel), never a command.
        """
        self._lineLimit(MAX_COMMAND_LINE)
        step = self._sasl.tooLong() if command.tooLong else self._sasl.feed(command.line)
        return self._saslStep(step)

    def refuse(self, line: bytes) -> LoginRun | None:
        """
        Refuse an invalid command (C{line}: the refusal); if invalid commands
        count, as a failed login, after the failure delay.
        """
        if not self._countInvalid:
            self._reply(line)
            return None
        return self._logins.invalidCommand(line)

    def answered(self, answer: LoginAnswer) -> str | None:
        """
        Act on how a login exchange ended: enter TRANSACTION if it logged
        in, tell the client; return why the session hangs up, if it does.
        """
        if answer.loggedIn:
            self._loggedIn(answer.login)
            self.log.info(
                "session {session}: {user} logged in at {upstream}",
                session=self._session,
                user=answer.login,
                upstream=answer.upstream,
            )
        self._reply(answer.line)
        if not answer.hangUp:
            return None
        # Hang up on a guesser once the reason has been relayed (the
        # throttle may refuse before this session failed at all).
        failed = self._logins.failedLogins
        return f"{failed} failed logins" if failed else "throttled after failed logins"

    def _reply(self, line: bytes) -> None:
        self._write(line + b"\r\n")

    def _refusedWithoutTLS(self) -> bool:
        """
        Refuse a login command before TLS when the policy requires TLS.
        """
        if self._loginsAllowed():
            return False
        self._reply(b"-ERR [AUTH] TLS is required first: use STLS")
        return True

    def _paced(self, exchange: LoginRun, method: str) -> LoginRun:
        self._attempted()
        return self._logins.paced(exchange, method)

    def _saslStep(self, step: SaslStep) -> LoginRun | None:
        """
        Answer as the SASL exchange says: a challenge (its response may be
        a longer line), a refusal, or log in with the credentials.
        """
        if isinstance(step, Credentials):
            return self._paced(self._logins.sasl(step), "auth")
        if isinstance(step, Challenge):
            self._lineLimit(MAX_SASL_LINE)
        self._reply(step.line)
        return None
