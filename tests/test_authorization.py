"""
Tests for popproxy._authorization: the login commands of one session,
checked and handed on as exchanges to run.  The login exchange is a fake
that notes what it was asked and answers at once; what is checked is what
the client is told, which login reaches the exchange (and as which method
it is counted), the longest line the client may send, and how a finished
exchange moves the session on.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent

from popproxy._authorization import Authorization, LoginRun
from popproxy._config import Config
from popproxy._framing import MAX_COMMAND_LINE, CommandLine
from popproxy._loginexchange import LoginAnswer
from popproxy._loginlines import MAX_SASL_LINE
from popproxy._loginplan import PendingPass
from popproxy._routing import Router
from popproxy._sasl import Credentials

UPSTREAM_GREETING = b"+OK ready <1896.697170952@upstream>"
DIGEST = b"c4c9334bac560ecc979e58001b3e22fb"


class FakeLogins:
    """
    A login exchange that notes each login and the method it is counted
    as, and answers C{+OK}.
    """

    def __init__(self) -> None:
        self.answer = LoginAnswer(b"+OK")
        self.asked: list[tuple[object, ...]] = []
        self.methods: list[str] = []
        self.pending: PendingPass | None = None
        self.failedLogins = 0

    async def paced(self, login: Awaitable[LoginAnswer], method: str) -> LoginAnswer:
        self.methods.append(method)
        return await login

    async def invalidCommand(self, line: bytes) -> LoginAnswer:
        self.asked.append(("invalid", line))
        return LoginAnswer(line)

    async def user(self, login: str) -> LoginAnswer:
        self.asked.append(("user", login))
        return self.answer

    async def password(self, password: bytes) -> LoginAnswer:
        self.asked.append(("pass", password))
        return self.answer

    async def sasl(self, credentials: Credentials) -> LoginAnswer:
        self.asked.append(("sasl", credentials.authzid, credentials.authcid, credentials.password))
        return self.answer

    async def apop(self, login: str, digest: bytes, timestamp: bytes) -> LoginAnswer:
        self.asked.append(("apop", login, digest, timestamp))
        return self.answer


class Rig:
    """
    An Authorization over FakeLogins, with what it wrote and set noted.
    """

    def __init__(self, tlsMissing: bool = False, countInvalid: bool = False) -> None:
        self.logins = FakeLogins()
        self.written = b""
        self.lineLimits: list[int] = []
        self.attempts = 0
        self.entered: list[str] = []
        self.tlsMissing = tlsMissing
        self.authorization = Authorization(
            self.logins,
            session="1f",
            write=self._write,
            lineLimit=self.lineLimits.append,
            loginsAllowed=lambda: not self.tlsMissing,
            attempted=self._attempted,
            loggedIn=self.entered.append,
            countInvalid=countInvalid,
        )

    def _write(self, data: bytes) -> None:
        self.written += data

    def _attempted(self) -> None:
        self.attempts += 1

    def take(self) -> bytes:
        written, self.written = self.written, b""
        return written


def run(exchange: LoginRun | None) -> LoginAnswer:
    """
    Run a login exchange that answers at once, and return its answer.
    """
    assert exchange is not None
    answers: list[LoginAnswer] = []
    Deferred.fromCoroutine(exchange).addCallback(answers.append)
    assert len(answers) == 1
    return answers[0]


def test_userGoesToTheExchangeAsOneLoginAttempt() -> None:
    """
    USER name starts an exchange for that name (a non-UTF-8 name kept as
    the client's bytes), counted as a C{user} login; nothing is written
    until it is answered.
    """
    rig = Rig()
    answer = run(rig.authorization.do_USER(b"al\xffice"))
    assert answer == LoginAnswer(b"+OK")
    assert rig.logins.asked == [("user", "al\udcffice")]
    assert rig.logins.methods == ["user"] and rig.attempts == 1
    assert rig.take() == b""


def test_passTakesTheWholeRestOfTheLine() -> None:
    """
    PASS hands on the rest of the line, spaces included.
    """
    rig = Rig()
    run(rig.authorization.do_PASS(b" secret with spaces "))
    assert rig.logins.asked == [("pass", b" secret with spaces ")]
    assert rig.logins.methods == ["user"]


def test_userWithoutANameIsRefusedAtOnce() -> None:
    """
    USER with no name (or one starting with a space) is answered here and
    never reaches the exchange.
    """
    rig = Rig()
    for arguments in (b"", b" alice"):
        assert rig.authorization.do_USER(arguments) is None
        assert rig.take() == b"-ERR USER needs a name\r\n"
    assert rig.logins.asked == [] and rig.attempts == 0


def test_everyLoginCommandWaitsForRequiredTLS() -> None:
    """
    While the policy requires TLS first, USER, PASS, APOP and AUTH are
    refused with the same line and nothing is tried; AUTH with no
    argument still lists the mechanisms.
    """
    rig = Rig(tlsMissing=True)
    rig.authorization.greeting(UPSTREAM_GREETING)
    commands = (
        rig.authorization.do_USER,
        rig.authorization.do_PASS,
        rig.authorization.do_APOP,
        rig.authorization.do_AUTH,
    )
    for command in commands:
        assert command(b"alice " + DIGEST) is None
        assert rig.take() == b"-ERR [AUTH] TLS is required first: use STLS\r\n"
    assert rig.logins.asked == [] and rig.attempts == 0
    assert rig.authorization.do_AUTH(b"") is None
    assert rig.take() == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"


def test_greetingShowsTheUpstreamTimestampAndAPOPUsesIt() -> None:
    """
    The greeting carries the upstream's APOP timestamp; APOP then hands on
    name, digest and that timestamp, counted as an C{apop} login.
    """
    rig = Rig()
    line = rig.authorization.greeting(UPSTREAM_GREETING)
    assert line == b"+OK popproxy ready <1896.697170952@upstream>"
    run(rig.authorization.do_APOP(b"my name " + DIGEST))
    assert rig.logins.asked == [("apop", "my name", DIGEST, b"<1896.697170952@upstream>")]
    assert rig.logins.methods == ["apop"]


def test_apopWithoutTimestampOrDigestIsRefused() -> None:
    """
    Without a timestamp in the greeting APOP is not offered; with one, a
    command without a name or a 32-digit hex digest is refused.
    """
    rig = Rig()
    assert rig.authorization.greeting(b"+OK no timestamp here") == b"+OK popproxy ready"
    assert rig.authorization.greeting(None) == b"+OK popproxy ready"
    assert rig.authorization.do_APOP(b"alice " + DIGEST) is None
    assert rig.take() == b"-ERR APOP is not available here: use USER/PASS or AUTH\r\n"
    rig.authorization.greeting(UPSTREAM_GREETING)
    for arguments in (DIGEST, b"alice " + DIGEST[:-1], b"alice " + DIGEST[:-1] + b"g"):
        assert rig.authorization.do_APOP(arguments) is None
        assert rig.take() == b"-ERR APOP needs a name and an MD5 digest\r\n"
    assert rig.logins.asked == []


def test_authLoginChallengesWithLongerLinesThenLogsIn() -> None:
    """
    AUTH LOGIN sends its challenges and lets the client send SASL-length
    lines meanwhile; the last response puts the command limit back and
    hands the decoded credentials on as an C{auth} login.
    """
    rig = Rig()
    authorization = rig.authorization
    assert authorization.do_AUTH(b"LOGIN") is None
    assert rig.take() == b"+ VXNlcm5hbWU6\r\n"
    assert authorization.saslWaiting and authorization.midLogin
    assert rig.lineLimits == [MAX_SASL_LINE]
    assert authorization.saslResponse(CommandLine(base64.b64encode(b"alice"))) is None
    assert rig.take() == b"+ UGFzc3dvcmQ6\r\n"
    run(authorization.saslResponse(CommandLine(base64.b64encode(b"secret"))))
    assert rig.lineLimits == [MAX_SASL_LINE, MAX_COMMAND_LINE, MAX_SASL_LINE, MAX_COMMAND_LINE]
    assert rig.logins.asked == [("sasl", b"", b"alice", b"secret")]
    assert rig.logins.methods == ["auth"] and not authorization.saslWaiting


def test_saslCancelledOrTooLongEndsTheExchange() -> None:
    """
    C{*} cancels an AUTH exchange, an overlong response ends it; neither
    reaches the exchange, and the next line is a command again.
    """
    rig = Rig()
    authorization = rig.authorization
    authorization.do_AUTH(b"PLAIN")
    assert rig.take() == b"+ \r\n"
    assert authorization.saslResponse(CommandLine(b"*")) is None
    assert rig.take() == b"-ERR authentication cancelled\r\n"
    authorization.do_AUTH(b"PLAIN")
    rig.take()
    assert authorization.saslResponse(CommandLine(b"", tooLong=True)) is None
    assert rig.take() == b"-ERR [AUTH] authentication response too long\r\n"
    assert not authorization.saslWaiting and rig.logins.asked == []
    assert rig.lineLimits[-1] == MAX_COMMAND_LINE


def test_invalidCommandsCountOnlyWhenTold() -> None:
    """
    An invalid command's refusal is written at once, unless invalid
    commands count as failed logins: then it goes to the exchange.
    """
    rig = Rig()
    assert rig.authorization.refuse(b"-ERR unknown command") is None
    assert rig.take() == b"-ERR unknown command\r\n"
    counting = Rig(countInvalid=True)
    answer = run(counting.authorization.refuse(b"-ERR unknown command"))
    assert answer == LoginAnswer(b"-ERR unknown command")
    assert counting.logins.asked == [("invalid", b"-ERR unknown command")]
    assert counting.take() == b""


def test_loggedInEntersTransactionAndSaysSo() -> None:
    """
    A successful login enters TRANSACTION for its name, is logged, and its
    line reaches the client; the session goes on.
    """
    rig = Rig()
    answer = LoginAnswer(b"+OK logged in", "alice", loggedIn=True, upstream="tcp:mail:110")
    with capturedLogs() as events:
        assert rig.authorization.answered(answer) is None
    assert rig.entered == ["alice"]
    assert rig.take() == b"+OK logged in\r\n"
    assert [formatEvent(e) for e in events] == ["session 1f: alice logged in at tcp:mail:110"]


def test_hangUpSaysHowManyLoginsFailed() -> None:
    """
    A refused login that ends the session is relayed first; the reason
    names the failed logins, or the throttle when none failed here.
    """
    rig = Rig()
    refusal = LoginAnswer(b"-ERR [AUTH] no", "alice", failed=True, hangUp=True)
    rig.logins.failedLogins = 3
    assert rig.authorization.answered(refusal) == "3 failed logins"
    assert rig.take() == b"-ERR [AUTH] no\r\n" and rig.entered == []
    rig.logins.failedLogins = 0
    assert rig.authorization.answered(refusal) == "throttled after failed logins"
    assert rig.authorization.answered(LoginAnswer(b"-ERR [AUTH] no", failed=True)) is None


def test_forgetDropsTheLoginBegunBeforeTLS() -> None:
    """
    After STLS a USER accepted before it no longer waits for its PASS.
    """
    rig = Rig()
    route = Router(Config(upstream="tcp:mail:110").routing).route("alice")
    rig.logins.pending = PendingPass("alice", route)
    assert rig.authorization.midLogin
    rig.authorization.forget()
    # Read afresh: mypy keeps the narrowing above across the call.
    authorization, logins = rig.authorization, rig.logins
    assert not authorization.midLogin and logins.pending is None
