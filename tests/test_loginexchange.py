"""
Tests for popproxy._loginexchange: a session's USER/PASS, SASL and APOP
logins routed (a real Router), the connection asked of a fake slot whose
attempts the test fires, and the planned lines sent through a real
UpstreamLink whose upstream the test plays by hand.  What is checked is
what the client is told, the lines the upstream receives, and the log.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from popproxy._config import Config, DomainRoute
from popproxy._failedlogins import FailedLogins
from popproxy._framing import StatusLine
from popproxy._loginexchange import GREETING_GONE, NO_ROUTE, LoginAnswer, LoginExchange
from popproxy._retrievalflow import Spool
from popproxy._routing import Router
from popproxy._sasl import Credentials
from popproxy._sessionsettings import SessionSettings
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamPermanentError, UpstreamRefused
from popproxy._upstreamlink import Collector, UpstreamLink

UPSTREAM = "tcp:upstream:110"
#: How the default upstream is named in answers (its TLS mode resolved).
SHOWN = str(Config(upstream=UPSTREAM).target(UPSTREAM))
GREETING = b"+OK ready <1896.697170952@upstream>"


class FakeUpstream:
    """
    The upstream's side of the link: notes each line and answers by hand.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._handlers: list[Collector | Spool] = []

    def __call__(self, line: bytes, multiLine: bool, handler: Collector | Spool) -> None:
        self.received.append(line)
        self._handlers.append(handler)

    def answer(self, status: bytes, body: bytes = b"") -> None:
        handler = self._handlers.pop(0)
        handler.statusReceived(StatusLine(status))
        if body:
            handler.bodyReceived(body + b".\r\n")
        handler.responseFinished()

    def capa(self, *lines: bytes) -> None:
        self.answer(b"+OK", b"".join(line + b"\r\n" for line in lines))

    @property
    def waiting(self) -> int:
        return len(self._handlers)


class FakeConnection:
    """
    The connection in the slot: what LoginExchange looks at (its greeting).
    """

    def __init__(self, greeting: bytes) -> None:
        self.greeting = StatusLine(greeting)
        self.connected = True


class FakeSlot:
    """
    An UpstreamSlot whose connection attempts the test fires or fails.
    """

    def __init__(self) -> None:
        self.asked: list[UpstreamTarget] = []
        self.attempts: list[Deferred[FakeConnection]] = []
        self.connection: FakeConnection | None = None
        self.address: UpstreamTarget | None = None
        self.dropped = 0

    def ensure(self, address: UpstreamTarget) -> Deferred[FakeConnection]:
        self.asked.append(address)
        if self.connection is not None and self.address == address:
            return Deferred.fromCoroutine(_now(self.connection))
        attempt: Deferred[FakeConnection] = Deferred()
        self.attempts.append(attempt)
        self.address = address
        return attempt

    def connect(self, greeting: bytes = GREETING) -> None:
        self.connection = FakeConnection(greeting)
        self.attempts.pop(0).callback(self.connection)

    def fail(self, reason: Exception) -> None:
        self.attempts.pop(0).errback(reason)

    def isUsable(self, address: UpstreamTarget) -> bool:
        return self.connection is not None and self.address == address

    def drop(self) -> None:
        self.dropped += 1
        self.connection = None


async def _now(connection: FakeConnection) -> FakeConnection:
    return connection


class Login:
    """
    A LoginExchange with its fakes, for the default upstream unless a
    config is given.
    """

    def __init__(self, config: Config | None = None, delay: float = 0.0, maximum: int = 3) -> None:
        self.config = config or Config(upstream=UPSTREAM)
        self.upstream = FakeUpstream()
        self.slot = FakeSlot()
        self.clock = Clock()
        self.exchange = LoginExchange(
            Router(self.config.routing),
            self.slot,  # type: ignore[arg-type]
            UpstreamLink(self.upstream),
            FailedLogins(self.clock, delay, maximum),
            "s1",
        )
        self.answers: list[LoginAnswer] = []

    def run(self, step: Coroutine[Any, Any, LoginAnswer]) -> None:
        ensureDeferred(step).addCallback(self.answers.append)

    @property
    def answer(self) -> LoginAnswer:
        assert len(self.answers) == 1, f"answers: {self.answers}"
        return self.answers.pop()

    @property
    def target(self) -> UpstreamTarget:
        return self.config.target(UPSTREAM)


def plain(authzid: bytes, authcid: bytes, password: bytes) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(authzid + b"\0" + authcid + b"\0" + password)


def test_userAccepted() -> None:
    """
    USER goes to the routed upstream once connected; its +OK reaches the
    client and a PASS is now awaited for that login.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    assert t.upstream.received == []
    t.slot.connect()
    assert t.slot.asked == [t.target]
    assert t.upstream.received == [b"USER alice"]
    t.upstream.answer(b"+OK send PASS")
    assert t.answer == LoginAnswer(b"+OK send PASS", "alice")
    assert t.exchange.pending is not None
    assert t.exchange.pending.login == "alice"
    assert not t.exchange.pending.asPlain

    t.run(t.exchange.password(b"correct horse"))
    assert t.upstream.received[-1] == b"PASS correct horse"
    t.upstream.answer(b"+OK logged in")
    assert t.answer == LoginAnswer(b"+OK logged in", "alice", loggedIn=True, upstream=SHOWN)
    assert t.exchange.pending is None


def test_userRefusedPassGoesAsPlain() -> None:
    """
    An upstream that refuses USER and offers only SASL PLAIN gets the
    client's PASS as AUTH PLAIN; the client is told to send PASS.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect()
    t.upstream.answer(b"-ERR USER not supported")
    assert t.upstream.received == [b"USER alice", b"CAPA"]
    t.upstream.capa(b"SASL PLAIN", b"TOP")
    assert t.answer == LoginAnswer(
        b"+OK send PASS (the mail server takes it as AUTH PLAIN)", "alice"
    )
    assert t.exchange.pending is not None and t.exchange.pending.asPlain

    t.run(t.exchange.password(b"secret"))
    assert t.upstream.received[-1] == plain(b"", b"alice", b"secret")
    t.upstream.answer(b"+OK welcome")
    assert t.answer.loggedIn


@pytest.mark.parametrize(
    "capabilities",
    [
        (b"SASL PLAIN", b"USER"),  # USER offered: its refusal stands
        (b"SASL CRAM-MD5",),
        (),
    ],
)
def test_userRefusedOtherwise(capabilities: tuple[bytes, ...]) -> None:
    """
    When the upstream refuses USER and PLAIN would not help, its -ERR
    reaches the client and no PASS is awaited.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect()
    t.upstream.answer(b"-ERR [AUTH] no such user")
    t.upstream.capa(*capabilities)
    assert t.answer == LoginAnswer(b"-ERR [AUTH] no such user", "alice")
    assert t.exchange.pending is None


def test_passWithoutUser() -> None:
    """
    PASS with no accepted USER is refused locally: no connection asked
    for, nothing sent.
    """
    t = Login()
    t.run(t.exchange.password(b"secret"))
    assert t.answer == LoginAnswer(b"-ERR send USER first")
    assert t.slot.asked == []
    assert t.upstream.received == []


def test_passAfterAFailedPassNeedsUserAgain() -> None:
    """
    A refused PASS ends the pending login: a second PASS is refused
    locally, and the first one counts as a failed login.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect()
    t.upstream.answer(b"+OK")
    t.answers.clear()
    t.run(t.exchange.password(b"wrong"))
    t.upstream.answer(b"-ERR [AUTH] invalid password")
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] invalid password", "alice", failed=True, upstream=SHOWN
    )
    t.run(t.exchange.password(b"again"))
    assert t.answer == LoginAnswer(b"-ERR send USER first")
    assert t.upstream.received == [b"USER alice", b"PASS wrong"]


LoginStep = Callable[[LoginExchange], Coroutine[Any, Any, LoginAnswer]]

#: One way in for each login command, with the login name "bob@nowhere".
NO_ROUTE_STEPS: list[LoginStep] = [
    lambda e: e.user("bob@nowhere"),
    lambda e: e.sasl(Credentials(b"", b"bob@nowhere", b"pw")),
    lambda e: e.apop("bob@nowhere", b"c4c9334bac560ecc979e58001b3e22fb", b"<1@x>"),
]


@pytest.mark.parametrize("step", NO_ROUTE_STEPS, ids=["USER", "AUTH", "APOP"])
def test_noRoute(step: LoginStep) -> None:
    """
    A login name no route serves gets NO_ROUTE without any connection or
    line upstream, and does not count as a failed login.
    """
    t = Login(Config(routes=(DomainRoute("example.com", "tcp:mx:110"),)))
    t.run(step(t.exchange))
    assert t.answer == LoginAnswer(NO_ROUTE)
    assert t.slot.asked == []
    assert t.upstream.received == []


def test_routedByDomain() -> None:
    """
    A login routed by its domain asks for that route's upstream and sends
    the name the route says (here with the domain stripped).
    """
    config = Config(routes=(DomainRoute("example.com", "tcp:mx:110", login="strip-domain"),))
    t = Login(config)
    t.run(t.exchange.user("carol@example.com"))
    t.slot.connect()
    assert t.slot.asked == [config.target("tcp:mx:110")]
    assert t.upstream.received == [b"USER carol"]


@pytest.mark.parametrize(
    ("reason", "line"),
    [
        (ConnectionRefusedError(), b"-ERR [SYS/TEMP] the mail server refused the connection"),
        (
            UpstreamRefused("the mail server refused the connection: busy"),
            b"-ERR [SYS/TEMP] the mail server refused the connection: busy",
        ),
        (
            UpstreamPermanentError("the mail server refused STLS"),
            b"-ERR [SYS/PERM] the mail server refused STLS",
        ),
    ],
)
def test_connectFailure(reason: Exception, line: bytes) -> None:
    """
    When the upstream cannot be reached the client gets a -ERR line with
    the RFC 3206 code and a short reason; nothing is sent, nothing awaits a
    PASS, and it is no failed login.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.fail(reason)
    assert t.answer == LoginAnswer(line)
    assert t.upstream.received == []
    assert t.exchange.pending is None


def test_saslConnectFailure() -> None:
    """
    A SASL login whose upstream cannot be reached gets the same -ERR line.
    """
    t = Login()
    t.run(t.exchange.sasl(Credentials(b"", b"alice", b"pw")))
    t.slot.fail(ConnectionRefusedError())
    assert t.answer == LoginAnswer(b"-ERR [SYS/TEMP] the mail server refused the connection")


#: (capabilities, credentials, lines after CAPA).
SASL_PLANS = [
    (
        (b"SASL PLAIN LOGIN", b"USER"),
        Credentials(b"", b"alice", b"pass word"),
        [plain(b"", b"alice", b"pass word")],
    ),
    (
        (b"SASL PLAIN",),
        Credentials(b"alice", b"alice", b"pw"),  # acting as itself
        [plain(b"", b"alice", b"pw")],
    ),
    (
        (b"SASL PLAIN",),
        Credentials(b"shared", b"admin", b"pw"),  # on behalf of "shared"
        [plain(b"shared", b"admin", b"pw")],
    ),
    (
        (b"USER", b"TOP"),
        Credentials(b"", b"alice", b"pass word"),
        [b"USER alice", b"PASS pass word"],
    ),
    ((), Credentials(b"", b"alice", b"pw"), [b"USER alice", b"PASS pw"]),
]


@pytest.mark.parametrize(("capabilities", "credentials", "lines"), SASL_PLANS)
def test_saslPlanned(
    capabilities: tuple[bytes, ...], credentials: Credentials, lines: list[bytes]
) -> None:
    """
    A finished SASL exchange asks the upstream's CAPA, then logs in with
    SASL PLAIN if it is offered, else USER then PASS, each line sent only
    once the one before was accepted.
    """
    t = Login()
    t.run(t.exchange.sasl(credentials))
    t.slot.connect()
    assert t.upstream.received == [b"CAPA"]
    t.upstream.capa(*capabilities)
    for count, _ in enumerate(lines, start=2):
        assert t.upstream.received == [b"CAPA", *lines[: count - 1]]
        assert t.answers == []
        t.upstream.answer(b"+OK")
    assert t.upstream.received == [b"CAPA", *lines]
    answer = t.answer
    assert answer.loggedIn and not answer.failed
    assert answer.upstream == SHOWN


def test_saslUserPassStopsAtTheFirstRefusal() -> None:
    """
    When USER is refused during a SASL login carried as USER/PASS, the
    password is never sent and the refusal reaches the client.
    """
    t = Login()
    t.run(t.exchange.sasl(Credentials(b"", b"alice", b"pw")))
    t.slot.connect()
    t.upstream.capa(b"USER")
    t.upstream.answer(b"-ERR [AUTH] unknown user")
    assert t.upstream.received == [b"CAPA", b"USER alice"]
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] unknown user", "alice", failed=True, upstream=SHOWN
    )


def test_saslOnBehalfWithoutPlain() -> None:
    """
    Acting for another user needs SASL PLAIN upstream; without it the
    client is refused, nothing more is sent, and it is no failed login.
    """
    t = Login()
    with capturedLogs() as events:
        t.run(t.exchange.sasl(Credentials(b"shared", b"admin", b"pw")))
        t.slot.connect()
        t.upstream.capa(b"USER")
    answer = t.answer
    assert answer.line == (b"-ERR [AUTH] the mail server cannot log in on behalf of another user")
    assert not answer.failed and not answer.loggedIn
    assert t.upstream.received == [b"CAPA"]
    assert [e for e in events if e.get("log_level") == LogLevel.warn] == []


def test_saslContinuationFailsAndDrops() -> None:
    """
    An upstream that answers the PLAIN login with yet another SASL
    challenge is given up on: the login fails and the connection is
    dropped (it is mid-exchange and cannot take another command).
    """
    t = Login()
    t.run(t.exchange.sasl(Credentials(b"", b"alice", b"pw")))
    t.slot.connect()
    t.upstream.capa(b"SASL PLAIN")
    t.upstream.answer(b"+ bW9yZQ==")
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] the mail server's login failed", "alice", failed=True
    )
    assert t.slot.dropped == 1


def test_longPlainWaitsForTheChallenge() -> None:
    """
    A PLAIN response too long for one AUTH line goes after the upstream's
    empty challenge, and the login succeeds on the +OK after it.
    """
    t = Login()
    password = b"t" * 300
    t.run(t.exchange.sasl(Credentials(b"", b"alice", password)))
    t.slot.connect()
    t.upstream.capa(b"SASL PLAIN")
    assert t.upstream.received == [b"CAPA", b"AUTH PLAIN"]
    t.upstream.answer(b"+ ")
    assert t.upstream.received[-1] == base64.b64encode(b"\0alice\0" + password)
    t.upstream.answer(b"+OK")
    assert t.answer.loggedIn
    assert t.slot.dropped == 0


def test_apopOverTheGreetingConnection() -> None:
    """
    APOP is relayed when the connection in use showed the greeting whose
    timestamp the digest covers.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect()
    t.upstream.answer(b"+OK")
    t.answers.clear()
    t.run(
        t.exchange.apop("alice", b"c4c9334bac560ecc979e58001b3e22fb", b"<1896.697170952@upstream>")
    )
    assert t.upstream.received[-1] == b"APOP alice c4c9334bac560ecc979e58001b3e22fb"
    t.upstream.answer(b"+OK maildrop ready")
    assert t.answer == LoginAnswer(b"+OK maildrop ready", "alice", loggedIn=True, upstream=SHOWN)


@pytest.mark.parametrize(
    ("greeting", "connected"),
    [
        (b"+OK ready <2@upstream>", True),  # a newer connection's greeting
        (b"+OK ready", True),  # no timestamp at all
        (GREETING, False),  # the connection is gone
    ],
)
def test_apopStaleGreeting(greeting: bytes, connected: bool) -> None:
    """
    APOP whose timestamp is not in the greeting of the connection in use
    gets GREETING_GONE; nothing is sent, no new connection is made.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect(greeting)
    t.upstream.answer(b"+OK")
    t.answers.clear()
    if not connected:
        t.slot.drop()
    t.run(
        t.exchange.apop("alice", b"c4c9334bac560ecc979e58001b3e22fb", b"<1896.697170952@upstream>")
    )
    assert t.answer == LoginAnswer(GREETING_GONE)
    assert t.upstream.received == [b"USER alice"]
    assert len(t.slot.asked) == 1


def test_apopBeforeAnyConnection() -> None:
    """
    APOP before the proxy connected anywhere gets GREETING_GONE.
    """
    t = Login()
    t.run(t.exchange.apop("alice", b"c4c9334bac560ecc979e58001b3e22fb", b"<1@x>"))
    assert t.answer == LoginAnswer(GREETING_GONE)
    assert t.slot.asked == []


#: (login step, login name, the reason the client is told).
REFUSED: list[tuple[LoginStep, str, bytes]] = [
    (
        lambda e: e.sasl(Credentials(b"", b"alice\r\nDELE 1", b"pw")),
        "alice\r\nDELE 1",
        b"the user name contains a control character (CR, LF or NUL)",
    ),
    (
        lambda e: e.sasl(Credentials(b"", b"alice\nQUIT", b"pw")),
        "alice\nQUIT",
        b"the user name contains a control character (CR, LF or NUL)",
    ),
    (
        lambda e: e.sasl(Credentials(b"", b"alice", b"pw\r\nDELE 1")),
        "alice",
        b"the password contains a control character (CR, LF or NUL)",
    ),
    (
        lambda e: e.sasl(Credentials(b"x\0y", b"alice", b"pw")),
        "x\0y",
        b"the authorization identity contains a control character (CR, LF or NUL)",
    ),
    (
        lambda e: e.user("alice\rDELE 1"),
        "alice\rDELE 1",
        b"the user name contains a control character (CR, LF or NUL)",
    ),
    (
        lambda e: e.user("a" * 300),
        "a" * 300,
        b"the user name is longer than 248 octets",
    ),
    (
        lambda e: e.apop("alice\n", b"c4c9334bac560ecc979e58001b3e22fb", b"<1@x>"),
        "alice\n",
        b"the user name contains a control character (CR, LF or NUL)",
    ),
]


@pytest.mark.parametrize(("step", "login", "reason"), REFUSED)
def test_refusedValues(step: LoginStep, login: str, reason: bytes) -> None:
    """
    A login value that would not stay one value of one line is refused
    before the upstream hears anything (not even CAPA): the client is told
    why, it counts as a failed login, and a warning names the session and
    the user, escaped, never the password.
    """
    t = Login()
    if login == "alice\n":
        # APOP is checked only over the connection that greeted.
        t.run(t.exchange.user("bob"))
        t.slot.connect(b"+OK <1@x>")
        t.upstream.answer(b"+OK")
        t.answers.clear()
        t.upstream.received.clear()
    with capturedLogs() as events:
        t.run(step(t.exchange))
    assert t.answer == LoginAnswer(b"-ERR [AUTH] " + reason, login, failed=True)
    assert t.upstream.received == []
    assert t.upstream.waiting == 0
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0].startswith("session s1: login values refused for ")
    assert warnings[0].endswith(reason.decode())
    assert "\r" not in warnings[0] and "\n" not in warnings[0] and "\0" not in warnings[0]
    assert "pw" not in warnings[0]


def test_refusedPassword() -> None:
    """
    A PASS whose value cannot go upstream is refused after USER was
    accepted: the password line is never sent and the login failed.
    """
    t = Login()
    t.run(t.exchange.user("alice"))
    t.slot.connect()
    t.upstream.answer(b"+OK")
    t.answers.clear()
    with capturedLogs() as events:
        t.run(t.exchange.password(b"p" * 300))
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] the password is longer than 248 octets", "alice", failed=True
    )
    assert t.upstream.received == [b"USER alice"]
    assert any(e["log_level"] == LogLevel.warn for e in events)


def test_pacedFailureWaitsTheDelay() -> None:
    """
    Through paced(), a failed PASS is answered only after the failure
    delay, is logged (user, never password), and counts; a good login is
    answered at once.
    """
    t = Login(delay=2.0)
    t.run(t.exchange.paced(t.exchange.user("alice"), "user"))
    t.slot.connect()
    t.upstream.answer(b"+OK")
    assert t.answer == LoginAnswer(b"+OK", "alice")
    with capturedLogs() as events:
        t.run(t.exchange.paced(t.exchange.password(b"hunter2"), "user"))
        t.upstream.answer(b"-ERR [AUTH] invalid password")
    assert t.answers == []
    t.clock.advance(1.9)
    assert t.answers == []
    t.clock.advance(0.1)
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] invalid password", "alice", failed=True, upstream=SHOWN
    )
    assert t.exchange.failedLogins == 1
    logged = [formatEvent(e) for e in events]
    assert "session s1: login failed for alice" in logged
    assert not any("hunter2" in line for line in logged)


def test_pacedHangsUpAfterTheMaximum() -> None:
    """
    The failed login that reaches the maximum says to hang up; the ones
    before it do not; answers that are not failures never count.
    """
    t = Login(maximum=2)
    t.run(t.exchange.paced(t.exchange.password(b"x"), "user"))  # not a failure: no USER
    assert t.answer == LoginAnswer(b"-ERR send USER first")
    hangUps = []
    for _ in range(2):
        t.run(t.exchange.paced(t.exchange.user("alice"), "user"))
        if t.slot.attempts:
            t.slot.connect()
        t.upstream.answer(b"+OK")
        t.answers.clear()
        t.run(t.exchange.paced(t.exchange.password(b"wrong"), "user"))
        t.upstream.answer(b"-ERR [AUTH] no")
        hangUps.append(t.answer.hangUp)
    assert hangUps == [False, True]
    assert t.exchange.failedLogins == 2


def test_forSessionTakesTheListenersLoginSettings() -> None:
    """
    Built from a listener's settings, the exchange routes with its router
    and hangs up at its failed-login maximum, after its failure delay.
    """
    clock = Clock()
    config = Config(upstream=UPSTREAM)
    settings = SessionSettings(
        router=Router(config.routing),
        connect=lambda target, origin: Deferred(),
        clock=clock,
        maxFailedLogins=1,
        loginFailureDelay=2.0,
    )
    t = Login()
    exchange = LoginExchange.forSession(
        settings,
        t.slot,  # type: ignore[arg-type]
        UpstreamLink(t.upstream),
        "s9",
    )
    t.run(exchange.paced(exchange.user("alice"), "user"))
    t.slot.connect()
    t.upstream.answer(b"+OK")
    t.answers.clear()
    t.run(exchange.paced(exchange.password(b"wrong"), "user"))
    t.upstream.answer(b"-ERR [AUTH] no")
    assert t.answers == []
    clock.advance(2.0)
    assert t.answer == LoginAnswer(
        b"-ERR [AUTH] no", "alice", failed=True, upstream=SHOWN, hangUp=True
    )
