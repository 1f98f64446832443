"""
Protocol tests for popproxy._session.ClientSession over in-memory
transports: what the client receives and what reaches the upstream, for
every command and state, pipelining, framing attacks, failures, timeouts.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._config import Config, DomainRoute, UserHostRouting
from popproxy._framing import stuff
from tests.sessionharness import Harness


def test_greetingAndEagerUpstream() -> None:
    """
    The client is greeted at once; with a single upstream the proxy
    connects to it right away, and says nothing to it yet.
    """
    h = Harness()
    assert h.received() == b"+OK popproxy ready\r\n"
    assert [u.address for u in h.upstreams] == ["tcp:upstream:110"]
    assert h.upstream.received() == b""


def test_loginRelayed() -> None:
    """
    USER and PASS reach the upstream as sent (spaces in the password
    included) and its answers reach the client verbatim.
    """
    h = Harness()
    h.received()
    h.send(b"user alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"
    h.upstream.reply(b"+OK send PASS\r\n")
    assert h.received() == b"+OK send PASS\r\n"
    h.send(b"PASS correct horse battery\r\n")
    assert h.upstream.received() == b"PASS correct horse battery\r\n"
    h.upstream.reply(b"+OK Logged in.\r\n")
    assert h.received() == b"+OK Logged in.\r\n"
    assert h.session.state == "TRANSACTION"


def test_upstreamResponseCodesReachClient() -> None:
    """
    -ERR [IN-USE] and [LOGIN-DELAY] replies from the upstream are relayed
    verbatim, and the session stays in AUTHORIZATION.
    """
    h = Harness()
    h.received()
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"PASS pw\r\n")
    h.upstream.reply(b"-ERR [IN-USE] Mailbox is locked by another session\r\n")
    assert h.received() == b"+OK\r\n-ERR [IN-USE] Mailbox is locked by another session\r\n"
    assert h.session.state == "AUTHORIZATION"
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"PASS pw\r\n")
    h.upstream.reply(b"-ERR [LOGIN-DELAY] wait 5 minutes\r\n")
    assert h.received().endswith(b"-ERR [LOGIN-DELAY] wait 5 minutes\r\n")


def test_passWithoutUser() -> None:
    """
    PASS before a successful USER is refused locally.
    """
    h = Harness()
    h.received()
    h.send(b"PASS x\r\n")
    assert h.received() == b"-ERR send USER first\r\n"
    assert h.upstream.received() == b""


def test_commandsInWrongState() -> None:
    """
    TRANSACTION commands before login, and USER after login, get -ERR from
    the proxy; the upstream never sees them.
    """
    h = Harness()
    h.received()
    for command in [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"]:
        h.send(command + b"\r\n")
        assert h.received().startswith(b"-ERR "), command
    assert h.upstream.received() == b""
    h.login()
    h.send(b"USER bob\r\nPASS x\r\n")
    assert h.received() == (
        b"-ERR USER is not valid in the TRANSACTION state\r\n"
        b"-ERR PASS is not valid in the TRANSACTION state\r\n"
    )
    assert h.upstream.received() == b""


def test_garbageAndMalformed() -> None:
    """
    Unknown commands, non-letters, empty lines and bad arguments get -ERR
    locally and the session goes on.
    """
    h = Harness()
    h.login()
    for line in [
        b"",
        b"HELO x",
        b"\xff\xfe",
        b"RETR",
        b"RETR x",
        b"RETR 0",
        b"RETR 1 2",
        b"RETR -1",
        b"TOP 1",
        b"DELE 99999999999",
        b"STAT 1",
        b"LIST 1 2",
        b"CAPA x",
    ]:
        h.send(line + b"\r\n")
        reply = h.received()
        assert reply.startswith(b"-ERR ") and reply.count(b"\r\n") == 1, (line, reply)
    assert h.upstream.received() == b""
    h.send(b"noop\r\n")
    assert h.upstream.received() == b"NOOP\r\n"


def test_unsupportedExtensions() -> None:
    """
    Without a certificate STLS is refused; nothing reaches the upstream.
    """
    h = Harness()
    h.received()
    h.send(b"STLS\r\n")
    assert h.received() == b"-ERR STLS is not available here\r\n"
    assert h.upstream.received() == b""


def test_smugglingWithBareLineEnds() -> None:
    """
    A bare LF or CR does not separate commands: 'NOOP\\nDELE 1' is one
    malformed line, so no DELE reaches the upstream.
    """
    h = Harness()
    h.login()
    h.send(b"NOOP\nDELE 1\r\nNOOP\rDELE 2\r\nNOOP\x00DELE 3\r\n")
    assert h.received() == b"-ERR malformed command\r\n" * 3
    assert h.upstream.received() == b""


def test_overlongLine() -> None:
    """
    A command line over 255 octets gets -ERR and the session continues; a
    flood without CRLF closes the connection.
    """
    h = Harness()
    h.login()
    h.send(b"LIST " + b"1" * 300 + b"\r\nSTAT\r\n")
    assert h.received() == b"-ERR command line too long\r\n"
    assert h.upstream.received() == b"STAT\r\n"
    h.upstream.reply(b"+OK 0 0\r\n")
    assert h.received() == b"+OK 0 0\r\n"
    for _ in range(200):
        h.send(b"A" * 1024)
        if h.client.disconnecting:
            break
    assert h.client.disconnecting
    assert h.received().endswith(b"-ERR line too long, closing\r\n")
    h.settle()
    assert h.upstream.transport.disconnecting
    assert b"QUIT" not in h.upstream.received()


def test_pipelining() -> None:
    """
    Pipelined commands reach the upstream one at a time, and the client gets
    complete responses in order.
    """
    h = Harness()
    h.login()
    h.send(b"STAT\r\nLIST\r\nRETR 1\r\nBOGUS\r\nNOOP\r\n")
    assert h.upstream.received() == b"STAT\r\n"
    h.upstream.reply(b"+OK 1 5\r\n")
    assert h.upstream.received() == b"LIST\r\n"
    h.upstream.reply(b"+OK\r\n1 5\r\n.\r\n")
    assert h.upstream.received() == b"RETR 1\r\n"
    h.upstream.reply(b"+OK 5 octets\r\nab")
    h.upstream.reply(b"c\r\n.\r\n")
    assert h.upstream.received() == b"NOOP\r\n"
    h.upstream.reply(b"+OK\r\n")
    assert h.received() == (
        b"+OK 1 5\r\n+OK\r\n1 5\r\n.\r\n+OK 5 octets\r\nabc\r\n.\r\n-ERR unknown command\r\n+OK\r\n"
    )


def test_retrRelayedVerbatim() -> None:
    """
    A RETR response passes byte for byte: 8-bit, NUL, bare LF, stuffed
    dots, a 5,000-byte line, in odd chunks.
    """
    h = Harness()
    h.login()
    message = b"Subject: x\r\n\r\n\xff\x00bare\nlf\r\n.dot\r\n" + b"y" * 5000 + b"\r\nend"
    wire = b"+OK 6000 octets\r\n" + stuff(message)
    h.send(b"RETR 1\r\n")
    for i in range(0, len(wire), 7):
        h.upstream.reply(wire[i : i + 7])
    assert h.received() == wire


def test_upstreamDiesMidRetr() -> None:
    """
    If the upstream dies in the middle of a RETR body, the client gets the
    partial body but never the terminating line: the connection is cut.
    """
    h = Harness()
    h.login()
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK 100 octets\r\nSubject: half\r\n\r\nsome")
    h.upstream.die()
    data = h.received()
    assert data == b"+OK 100 octets\r\nSubject: half\r\n\r\nsome"
    assert h.client.disconnecting and not h.client.aborted


def test_cutOffClientThatStopsReading() -> None:
    """
    A client cut off mid-response that never reads the rest is aborted
    after a while instead of holding the connection forever.
    """
    h = Harness()
    h.login()
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK\r\npartial")
    h.client.loseConnection = lambda: None  # type: ignore[method-assign]
    h.upstream.die()
    h.clock.advance(61)
    assert h.client.aborted


def test_upstreamDiesBeforeAnswer() -> None:
    """
    If the upstream dies while a command waits for its answer, the client
    gets -ERR [SYS/TEMP] and the session ends.
    """
    h = Harness()
    h.login()
    h.send(b"STAT\r\n")
    h.upstream.die()
    assert h.received().startswith(b"-ERR [SYS/TEMP] ")
    assert h.client.disconnecting


def test_statusLineLeavesWithTheBody() -> None:
    """
    A multi-line response's status line goes out together with the first
    piece of its body (one write, one segment), not on its own.
    """
    h = Harness()
    h.login()
    writes: list[bytes] = []
    write = h.client.write

    def recordingWrite(data: bytes) -> None:
        writes.append(data)
        write(data)

    h.client.write = recordingWrite  # type: ignore[method-assign]
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK 9 octets\r\n")
    assert writes == []
    h.upstream.reply(b"Subject: x\r\n")
    h.upstream.reply(b"\r\nbody\r\n.\r\n")
    assert writes == [b"+OK 9 octets\r\nSubject: x\r\n", b"\r\nbody\r\n.\r\n"]


def test_upstreamDiesAfterStatusLine() -> None:
    """
    If the upstream dies after "+OK" but before any of the body, nothing of
    the response has reached the client, so it gets -ERR [SYS/TEMP] rather
    than a bare "+OK" and a cut connection.
    """
    h = Harness()
    h.login()
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK 100 octets\r\n")
    h.upstream.die()
    assert h.received().startswith(b"-ERR [SYS/TEMP] ")
    assert h.client.disconnecting


def test_clientLeavesWithoutQuit() -> None:
    """
    A client that disconnects without QUIT makes the proxy drop the upstream
    connection without QUIT, so the upstream deletes nothing.
    """
    h = Harness()
    h.login()
    h.send(b"DELE 1\r\n")
    h.upstream.reply(b"+OK marked\r\n")
    assert h.upstream.received() == b"DELE 1\r\n"
    h.client.dropped(Failure(ConnectionLost()))
    assert h.upstream.transport.disconnecting
    assert h.upstream.received() == b""


def test_quitRelayed() -> None:
    """
    QUIT after login is relayed, its answer (the UPDATE result) reaches the
    client, then both connections close; later commands are ignored.
    """
    h = Harness()
    h.login()
    h.send(b"DELE 2\r\nQUIT\r\nDELE 3\r\n")
    assert h.upstream.received() == b"DELE 2\r\n"
    h.upstream.reply(b"+OK deleted\r\n")
    assert h.upstream.received() == b"QUIT\r\n"
    h.upstream.reply(b"+OK Logging out, messages deleted.\r\n")
    assert h.received() == b"+OK deleted\r\n+OK Logging out, messages deleted.\r\n"
    assert h.client.disconnecting
    assert h.upstream.transport.disconnecting
    assert h.upstream.received() == b""


def test_quitBeforeLogin() -> None:
    """
    QUIT before login is answered by the proxy; no QUIT goes upstream.
    """
    h = Harness()
    h.received()
    h.send(b"QUIT\r\n")
    assert h.received() == b"+OK popproxy signing off\r\n"
    assert h.client.disconnecting
    assert h.upstream.received() == b""


def test_idleTimeout() -> None:
    """
    After the idle timeout the client is logged out and the upstream is
    dropped without QUIT; activity resets the timer.
    """
    h = Harness(idleTimeout=600)
    h.login()
    h.clock.advance(599)
    h.send(b"NOOP\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.clock.advance(599)
    assert not h.client.disconnecting
    h.clock.advance(2)
    client = h.client  # read afresh: mypy keeps the narrowing above across the call
    assert client.disconnecting
    assert h.received().endswith(b"-ERR [SYS/PERM] autologout: idle for too long\r\n")
    h.settle()
    assert h.upstream.transport.disconnecting
    assert b"QUIT" not in h.upstream.received()


def test_slowResponseIsNotIdleness() -> None:
    """
    A response that takes longer than the idle timeout to arrive (the
    upstream sending slowly, within its response timeout) does not log the
    client out; once it is complete the idle timeout applies again.
    """
    h = Harness(idleTimeout=10, responseTimeout=8)
    h.login()
    h.send(b"RETR 1\r\n")
    h.upstream.reply(b"+OK 12 octets\r\n")
    for _ in range(5):
        h.clock.advance(6)
        h.upstream.reply(b"line\r\n")
    assert not h.client.disconnecting
    h.upstream.reply(b".\r\n")
    assert h.received() == b"+OK 12 octets\r\n" + b"line\r\n" * 5 + b".\r\n"
    h.clock.advance(9)
    assert not h.client.disconnecting
    h.clock.advance(2)
    client = h.client  # read afresh: mypy keeps the narrowing above across the call
    assert client.disconnecting
    assert h.received() == b"-ERR [SYS/PERM] autologout: idle for too long\r\n"


def test_idleUpstreamIsNotTimedOut() -> None:
    """
    The upstream's response timeout only counts while a response is
    outstanding: a connection idle for longer (the client thinking) stays.
    """
    h = Harness(idleTimeout=600, responseTimeout=30)
    h.login()
    h.send(b"NOOP\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.received()
    h.upstream.received()
    h.clock.advance(100)
    h.settle()
    assert not h.upstream.transport.disconnecting
    h.send(b"NOOP\r\n")
    assert h.upstream.received() == b"NOOP\r\n"
    h.upstream.reply(b"+OK\r\n")
    assert h.received() == b"+OK\r\n"
    h.send(b"STAT\r\n")
    h.clock.advance(31)
    h.settle()
    assert h.received() == b"-ERR [SYS/TEMP] the mail server did not answer in time\r\n"


def test_upstreamResponseTimeout() -> None:
    """
    An upstream that does not answer within the response timeout gives the
    client -ERR [SYS/TEMP], not a hang.
    """
    h = Harness(responseTimeout=30)
    h.login()
    h.send(b"STAT\r\n")
    h.clock.advance(31)
    h.settle()
    assert h.received() == b"-ERR [SYS/TEMP] the mail server did not answer in time\r\n"
    assert h.client.disconnecting


def test_unreachableUpstream() -> None:
    """
    If the upstream cannot be reached, USER gets -ERR [SYS/TEMP] with a
    reason, and a later USER tries again.
    """
    h = Harness(refuse={"tcp:upstream:110"})
    h.received()
    h.send(b"USER alice\r\n")
    assert h.received() == b"-ERR [SYS/TEMP] the mail server refused the connection\r\n"
    h.refuse.clear()
    h.send(b"USER alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"


def test_upstreamGreetsWithErr() -> None:
    """
    With one static upstream the proxy greets once the upstream has; an
    upstream greeting of -ERR still gets the client a greeting, and USER
    then gets -ERR [SYS/TEMP] naming the upstream's text; the next USER
    connects again.
    """
    h = Harness(greet=False)
    assert h.received() == b""
    h.upstream.reply(b"-ERR too many connections\r\n")
    h.settle()
    assert h.received() == b"+OK popproxy ready\r\n"
    h.send(b"USER alice\r\n")
    assert len(h.upstreams) == 2
    h.upstream.reply(b"-ERR too many connections\r\n")
    h.settle()
    assert h.received() == (
        b"-ERR [SYS/TEMP] the mail server refused the connection: too many connections\r\n"
    )
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK hello\r\n")
    assert h.upstream.received() == b"USER alice\r\n"


def test_commandsBeforeGreetingWait() -> None:
    """
    Commands a client sends before the (delayed) greeting are answered
    after it, in order.
    """
    h = Harness(greet=False)
    h.send(b"CAPA\r\n")
    assert h.received() == b""
    h.upstream.reply(b"+OK ready\r\n")
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(b"+OK\r\nTOP\r\n.\r\n")
    assert h.received().startswith(b"+OK popproxy ready\r\n+OK capability list follows\r\n")


def test_capaBeforeLogin() -> None:
    """
    CAPA is the proxy's own list: TOP/UIDL only if the upstream has them,
    PIPELINING and RESP-CODES always, never the upstream's SASL or STLS.
    """
    h = Harness()
    h.received()
    h.send(b"CAPA\r\n")
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(b"+OK\r\nTOP\r\nSASL PLAIN\r\nSTLS\r\nLOGIN-DELAY 900\r\nX-FOO\r\n.\r\n")
    reply = h.received()
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK")
    assert reply.endswith(b"\r\n.\r\n")
    assert b"TOP" in lines and b"LOGIN-DELAY 900" in lines and b"PIPELINING" in lines
    assert b"UIDL" not in lines and b"STLS" not in lines and b"SASL PLAIN" not in lines
    assert b"RESP-CODES" in lines and b"AUTH-RESP-CODE" in lines and b"USER" in lines


def test_capaAfterLoginAsksAgain() -> None:
    """
    After login CAPA is computed from the upstream's answer then (RFC 2449
    allows capabilities to change at login).
    """
    h = Harness()
    h.login()
    h.send(b"CAPA\r\n")
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(b"+OK\r\nTOP\r\nUIDL\r\n.\r\n")
    lines = h.received().split(b"\r\n")
    assert b"TOP" in lines and b"UIDL" in lines


def test_capaWhenUpstreamLacksCapa() -> None:
    """
    An upstream that answers CAPA with -ERR (RFC 1939 only) yields a list
    without TOP and UIDL.
    """
    h = Harness()
    h.received()
    h.send(b"CAPA\r\n")
    h.upstream.reply(b"-ERR unknown command\r\n")
    lines = h.received().split(b"\r\n")
    assert lines[0].startswith(b"+OK") and b"TOP" not in lines and b"UIDL" not in lines


def refuseAfterCapa(h: Harness) -> None:
    """
    After refusing USER, the upstream is asked for CAPA (might it take
    AUTH PLAIN instead?): answer that it does take USER, so the refusal
    stands.
    """
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")


def test_domainRoutes() -> None:
    """
    A login in a routed domain goes to that domain's server with the
    domain stripped; other logins go to the default upstream.
    """
    config = Config(
        upstream="tcp:default:110",
        routes=(DomainRoute("corp.example", "tcp:corp:110", "strip-domain"),),
    )
    h = Harness(config=config)
    h.received()
    assert h.upstreams == []
    h.send(b"USER Alice@Corp.Example\r\n")
    assert h.upstream.address == "tcp:corp:110"
    assert h.upstream.received() == b"USER Alice\r\n"
    h.upstream.reply(b"-ERR no\r\n")
    refuseAfterCapa(h)
    h.send(b"USER bob@else.example\r\n")
    assert h.upstream.address == "tcp:default:110"
    assert h.upstream.received() == b"USER bob@else.example\r\n"
    assert h.upstreams[0].transport.disconnecting


def test_userHostOnlyToAllowedHosts() -> None:
    """
    user@host picks an allowed host; an unlisted host is not connected to
    (it stays part of the login name at the default upstream).
    """
    config = Config(
        upstream=None,
        userHost=UserHostRouting(True, ("@", "#"), {"pop.example.net": "tcp:pop.example.net:110"}),
    )
    h = Harness(config=config)
    h.received()
    h.send(b"USER carol#pop.example.net\r\n")
    assert h.upstream.address == "tcp:pop.example.net:110"
    assert h.upstream.received() == b"USER carol\r\n"
    h.upstream.reply(b"-ERR\r\n")
    refuseAfterCapa(h)
    h.received()
    h.send(b"USER carol@evil.example\r\n")
    assert h.received() == b"-ERR [AUTH] no mail server is configured for that user\r\n"
    assert len(h.upstreams) == 1


def test_failedLoginLimit() -> None:
    """
    After the configured number of failed logins the session is closed.
    """
    h = Harness(config=Config(upstream="tcp:u:110", maxFailedLogins=2))
    h.received()
    for _ in range(2):
        h.send(b"USER a\r\n")
        h.upstream.reply(b"+OK\r\n")
        h.send(b"PASS wrong\r\n")
        h.upstream.reply(b"-ERR [AUTH] Authentication failed.\r\n")
    assert h.received().endswith(b"-ERR [AUTH] Authentication failed.\r\n")
    assert h.client.disconnecting


def test_backpressure() -> None:
    """
    When the client's transport is full the proxy stops reading from the
    upstream, and resumes when the client catches up.
    """
    h = Harness()
    h.login()
    producer = IPushProducer(h.client.producer)
    producer.pauseProducing()
    assert h.upstream.transport.producerState == "paused"
    producer.resumeProducing()
    assert h.upstream.transport.producerState == "producing"


def test_pipelineFloodPausesReading() -> None:
    """
    A client pipelining far ahead is no longer read until the queue drains.
    """
    h = Harness()
    h.login()
    h.send(b"NOOP\r\n" * 200)
    assert h.client.producerState == "paused"
    for _ in range(200):
        h.upstream.reply(b"+OK\r\n")
    assert h.client.producerState == "producing"
    assert h.received() == b"+OK\r\n" * 200


def test_logsNeverHoldPasswords() -> None:
    """
    Session open/close events are logged with user, counts and how the
    session ended; the password appears nowhere in the log.
    """
    with capturedLogs() as events:
        h = Harness()
        h.login(password=b"hunter2-secret")
        h.send(b"QUIT\r\n")
        h.upstream.reply(b"+OK bye\r\n")
        h.settle()
    text = "\n".join(formatEvent(e) for e in events) + repr(events)
    assert "hunter2" not in text
    closed = [e for e in events if "closed" in e.get("log_format", "")]
    assert closed and closed[0]["user"] == "alice" and closed[0]["ending"] == "client quit"
    assert closed[0]["commands"] == 3


def test_closedLogSaysDashForNobody() -> None:
    """
    A session that ends before anyone logged in, with no upstream reached,
    is logged with user=- and upstream=-, never the word None.
    """
    with capturedLogs() as events:
        h = Harness(refuse={"tcp:upstream:110"})
        h.send(b"QUIT\r\n")
        h.settle()
    closed = [formatEvent(e) for e in events if " closed: " in e.get("log_format", "")]
    assert len(closed) == 1
    assert " user=- upstream=- " in closed[0]
    assert "None" not in closed[0]


def test_tcpNoDelayOnBothSides() -> None:
    """
    The proxy turns Nagle's algorithm off on the client and the upstream
    connection (without it request/response clients stall ~40 ms per
    response, as nginx 1.22's mail proxy does).
    """
    from twisted.internet.task import Clock

    from popproxy._upstream import UpstreamConnection
    from tests.sessionharness import ClosingTransport

    class NoDelayTransport(ClosingTransport):
        noDelay = False

        def setTcpNoDelay(self, enabled: bool) -> None:
            self.noDelay = enabled

    clock = Clock()
    upstreamTransport = NoDelayTransport(clock)
    connection = UpstreamConnection(clock, 30)
    upstreamTransport.protocol = connection
    connection.makeConnection(upstreamTransport)
    assert upstreamTransport.noDelay

    h = Harness()
    clientTransport = NoDelayTransport(h.clock)
    from popproxy._session import ClientSession

    session = ClientSession(h.settings)
    clientTransport.protocol = session
    session.makeConnection(clientTransport)
    assert clientTransport.noDelay


def test_capaWithUnreachableUpstream() -> None:
    """
    When the single upstream cannot be reached, CAPA still answers with the
    proxy's own list (TOP and UIDL announced, as for an unknown upstream).
    """
    h = Harness(refuse={"tcp:upstream:110"})
    assert h.received() == b"+OK popproxy ready\r\n"
    h.send(b"CAPA\r\nNOOP\r\n")
    reply = h.received()
    assert reply.startswith(b"+OK capability list follows\r\nTOP\r\nUIDL\r\n")
    assert reply.endswith(b".\r\n-ERR NOOP is not valid in the AUTHORIZATION state\r\n")


def test_brokenExchangeEndsTheSession() -> None:
    """
    A command whose handling of the upstream's answer fails (a bug) ends
    the session with a temporary -ERR and a logged failure, instead of
    leaving the client waiting for an answer that never comes.
    """
    h = Harness()
    h.login()

    def broken(index: int) -> None:
        raise RuntimeError("bug")

    h.session._mailbox.markDeleted = broken  # type: ignore[method-assign]
    with capturedLogs() as events:
        h.send(b"DELE 1\r\n")
        h.upstream.reply(b"+OK marked\r\n")
    assert h.received() == b"-ERR [SYS/TEMP] the command failed\r\n"
    assert h.client.disconnecting
    assert h.upstream.transport.disconnecting
    assert any("command failed" in formatEvent(event) for event in events)
