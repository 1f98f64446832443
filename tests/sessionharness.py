"""
An in-memory harness for ClientSession: a client and its upstreams on
StringTransports, time on a task.Clock.  No sockets, no reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from popproxy._admission import Admission, ConnectionLimits
from popproxy._config import ChainConfig, Config
from popproxy._gracefulstop import GracefulStop
from popproxy._loginthrottle import LoginThrottle
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._preloginpool import PreloginPool
from popproxy._proxyheader import ProxyHeaderFactory
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._retrieval import MessageHook, PassThrough
from popproxy._routing import Router
from popproxy._session import ClientSession, SessionFactory, SessionSettings
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection
from tests.typedtransport import ProducerTransport


class ClosingTransport(ProducerTransport):
    """
    A StringTransport that tells its protocol about the end of the
    connection on the next clock tick, as a reactor would.
    """

    def __init__(
        self, clock: Clock, peer: IPv4Address | None = None, host: IPv4Address | None = None
    ) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self._clock = clock
        self.tlsStarted: object | None = None
        self.closedBy: Failure | None = None
        self.aborted = False
        self.protocol: Protocol | None = None

    def startTLS(self, creator: object) -> None:
        """
        Record the switch to TLS; later bytes count as decrypted.
        """
        self.tlsStarted = creator

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def loseConnection(self) -> None:
        if not self.disconnecting and self.closedBy is None:
            self._clock.callLater(0, self.dropped, Failure(ConnectionDone()))
        super().loseConnection()

    def dropped(self, reason: Failure) -> None:
        """
        The connection ended (called by the clock, or by a test).
        """
        if self.closedBy is None:
            self.closedBy = reason
            self.disconnecting = True
            assert self.protocol is not None
            self.protocol.connectionLost(reason)

    def take(self) -> bytes:
        """
        Everything written since the last take.
        """
        data = self.value()
        self.clear()
        return data


@dataclass
class FakeUpstream:
    """
    One upstream connection the session made; the test plays the server.
    """

    address: str
    connection: UpstreamConnection
    transport: ClosingTransport
    #: The client's addresses the session passed to the connect.
    origin: ClientOrigin | None = None

    def reply(self, data: bytes) -> None:
        self.connection.dataReceived(data)

    def received(self) -> bytes:
        return self.transport.take()

    def die(self) -> None:
        self.transport.dropped(Failure(ConnectionLost("upstream died")))


@dataclass
class Harness:
    """
    A ClientSession connected to an in-memory client, with fake upstreams.

    @ivar refuse: addresses whose connection attempts fail.
    @ivar greet: greet new upstream connections automatically.
    """

    config: Config = field(default_factory=lambda: Config(upstream="tcp:upstream:110"))
    hook: MessageHook = field(default_factory=PassThrough)
    refuse: set[str] = field(default_factory=set)
    greet: bool = True
    idleTimeout: float = 600.0
    responseTimeout: float = 60.0
    serverTLS: object | None = None
    implicitTLS: bool = False
    requireTLS: str = "auto"
    localAddress: str = "127.0.0.1"
    peerAddress: str = "127.0.0.1"
    #: A PROXY header: the session sits behind the haproxy: wrapper, on a
    #: connection from peerAddress to localAddress that starts with it.
    proxyHeader: bytes | None = None
    loginFailureDelay: float = 0.0
    #: [chain] settings to use instead of the defaults (e.g. top,
    #: keepaliveAfter, spoolThreshold).
    chain: dict[str, object] = field(default_factory=dict)
    #: Called when the session has ended (SessionSettings.sessionClosed).
    sessionClosed: Callable[[], None] | None = None
    #: Where the session counts what it does, as the listener "test".
    metrics: Metrics = NO_METRICS
    #: The time sessions sharing a graceful stop share.
    clock: Clock = field(default_factory=Clock)
    #: The process's graceful stop (SessionSettings.stop).
    stop: GracefulStop | None = None
    #: The [limits] timers and counting (SessionSettings.limits).
    limits: ConnectionLimits | None = None
    #: The process's connection counts (SessionSettings.admission).
    admission: Admission | None = None
    #: The login throttle sessions share (SessionSettings.loginThrottle).
    loginThrottle: LoginThrottle | None = None
    #: The pre-login upstream connections sessions share
    #: (SessionSettings.preloginPool).
    preloginPool: PreloginPool | None = None

    def __post_init__(self) -> None:
        self.upstreams: list[FakeUpstream] = []
        self.settings = SessionSettings(
            router=Router(self.config.routing),
            connect=self.connect,
            clock=self.clock,
            hook=self.hook,
            idleTimeout=self.idleTimeout,
            maxFailedLogins=self.config.maxFailedLogins,
            serverTLS=self.serverTLS,
            implicitTLS=self.implicitTLS,
            requireTLS=self.requireTLS,
            loginFailureDelay=self.loginFailureDelay,
            chain=replace(ChainConfig(), **self.chain),  # type: ignore[arg-type]
            sessionClosed=self.sessionClosed,
            listener="test",
            metrics=self.metrics,
            stop=self.stop,
            limits=self.limits,
            admission=self.admission,
            loginThrottle=self.loginThrottle,
            preloginPool=self.preloginPool,
        )
        self.client = ClosingTransport(
            self.clock,
            IPv4Address("TCP", self.peerAddress, 40000),
            IPv4Address("TCP", self.localAddress, 110),
        )
        if self.proxyHeader is None:
            self.session = ClientSession(self.settings)
            self.client.protocol = self.session
            self.session.makeConnection(self.client)
            return
        wrapper = ProxyHeaderFactory(SessionFactory(self.settings), self.clock).buildProtocol(
            self.client.getPeer()
        )
        assert wrapper is not None
        self.client.protocol = wrapper
        wrapper.makeConnection(self.client)
        wrapper.dataReceived(self.proxyHeader)
        assert isinstance(wrapper.wrappedProtocol, ClientSession)
        self.session = wrapper.wrappedProtocol

    def connect(
        self, target: UpstreamTarget, origin: ClientOrigin | None = None
    ) -> Deferred[UpstreamConnection]:
        address = target.endpoint
        if address in self.refuse:
            return fail(ConnectionRefusedError())
        connection = UpstreamConnection(self.clock, self.responseTimeout)
        transport = ClosingTransport(self.clock)
        transport.protocol = connection
        connection.makeConnection(transport)
        self.upstreams.append(FakeUpstream(address, connection, transport, origin))
        if self.greet:
            connection.dataReceived(b"+OK upstream ready\r\n")
        return connection.ready

    @property
    def upstream(self) -> FakeUpstream:
        return self.upstreams[-1]

    def send(self, data: bytes) -> None:
        self.session.dataReceived(data)

    def received(self) -> bytes:
        return self.client.take()

    def settle(self) -> None:
        self.clock.advance(0)

    def login(self, user: bytes = b"alice", password: bytes = b"secret") -> None:
        """
        Log in through the upstream and forget the traffic it took.
        """
        self.send(b"USER " + user + b"\r\n")
        self.upstream.reply(b"+OK\r\n")
        self.send(b"PASS " + password + b"\r\n")
        self.upstream.reply(b"+OK logged in\r\n")
        self.received()
        self.upstream.received()
