"""
Tests for passing the client's address upstream (client_address): the
setting as read and checked (popproxy._config, routing), the XCLIENT
command (popproxy._xclient), and what UpstreamConnector wrapped in
XclientConnector (as popproxy._assembly composes them) sends on the wire
for each mode, over in-memory transports.  The real Dovecot
runs are in test_e2e_clientaddress.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._config import ConfigError, parseConfig
from popproxy._proxyheaderbuild import ClientOrigin, buildProxyHeader
from popproxy._routing import Router
from popproxy._tls import UpstreamTarget, UpstreamTls
from popproxy._upstream import (
    UpstreamConnection,
    UpstreamConnector,
    UpstreamError,
    UpstreamTimeout,
)
from popproxy._xclient import XclientConnector, xclientCommand
from tests.test_config import SOURCE, assertOneLine, checkWithReactor

ORIGIN = ClientOrigin(
    IPv4Address("TCP", "203.0.113.7", 51234), IPv4Address("TCP", "192.0.2.10", 110)
)


# The setting


def test_clientAddressPerUpstreamAndRoute() -> None:
    """
    [upstream] client_address applies to the default upstream and to the
    routes that do not set their own; a route may choose another.
    """
    config = parseConfig(
        """
[upstream]
default = "tcp:127.0.0.1:110"
client_address = "proxy-v2"
[[route]]
domain = "a.example"
upstream = "tcp:127.0.0.1:1110"
[[route]]
domain = "b.example"
upstream = "tcp:127.0.0.1:2110"
client_address = "xclient"
""",
        SOURCE,
    )
    router = Router(config.routing)
    assert router.route("u").upstream.clientAddress == "proxy-v2"
    assert router.route("u@a.example").upstream.clientAddress == "proxy-v2"
    assert router.route("u@b.example").upstream.clientAddress == "xclient"


def test_clientAddressDefaultsToNone() -> None:
    """
    Without the setting nothing is passed upstream (today's behaviour).
    """
    config = parseConfig('[upstream]\ndefault = "tcp:127.0.0.1:110"\n', SOURCE)
    assert Router(config.routing).route("u").upstream.clientAddress == "none"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[upstream]\nclient_address = "proxy"\n', "[upstream] client_address"),
        (
            '[[route]]\ndomain = "a.example"\nupstream = "tcp:h:110"\nclient_address = "v2"\n',
            "[route #1] client_address",
        ),
    ],
)
def test_unknownClientAddress(text: str, where: str) -> None:
    """
    An unknown value is one ConfigError line naming the key and the values
    that exist.
    """
    with pytest.raises(ConfigError) as raised:
        parseConfig(text, SOURCE)
    assertOneLine(raised.value, where, "none, proxy-v1, proxy-v2, xclient", "'")


def test_proxyHeaderNeedsPlainEndpoint() -> None:
    """
    A PROXY header must precede TLS, which a tls: endpoint string starts
    itself: the check says so and what to write instead.
    """
    config = parseConfig(
        '[upstream]\ndefault = "tls:mail.example:995"\nclient_address = "proxy-v1"\n', SOURCE
    )
    with pytest.raises(ConfigError) as raised:
        checkWithReactor(config)
    assertOneLine(raised.value, "[upstream] client_address", "'tcp:mail.example:995'", "implicit")


# The XCLIENT command


def test_xclientCommand() -> None:
    """
    Dovecot's syntax: ADDR and PORT; a dual-stack listener's mapped IPv4
    client goes as IPv4; no IP address, no command.
    """
    assert xclientCommand(ORIGIN) == b"XCLIENT ADDR=203.0.113.7 PORT=51234"
    mapped = ClientOrigin(IPv6Address("TCP", "::ffff:10.1.2.3", 40000), None)
    assert xclientCommand(mapped) == b"XCLIENT ADDR=10.1.2.3 PORT=40000"
    six = ClientOrigin(IPv6Address("TCP", "2001:db8::7", 40000), None)
    assert xclientCommand(six) == b"XCLIENT ADDR=2001:db8::7 PORT=40000"
    assert xclientCommand(ClientOrigin(None, None)) is None


# What the connector sends


class TLSStringTransport(StringTransport):
    """
    A StringTransport that records what had been written when TLS started.
    """

    startedTLS: bytes | None = None

    def startTLS(self, contextFactory: object) -> None:
        self.startedTLS = self.value()


class MemoryEndpoint:
    """
    Connects each factory's protocol to a new in-memory transport.
    """

    def __init__(self) -> None:
        self.transports: list[TLSStringTransport] = []
        self.protocols: list[UpstreamConnection] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 110))
        # None ruled out first: mypy-zope takes isinstance() of an optional
        # interface for always false (Shoobx/mypy-zope#91).
        assert protocol is not None and isinstance(protocol, UpstreamConnection)
        transport = TLSStringTransport()
        self.transports.append(transport)
        self.protocols.append(protocol)
        protocol.makeConnection(transport)
        return succeed(protocol)


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint()
        connector = UpstreamConnector(
            self.clock,
            30.0,
            60.0,
            endpointFactory=lambda description: self.endpoint,  # type: ignore[arg-type,return-value]
        )
        self.connector = XclientConnector(connector.connect)
        self.results: list[object] = []

    def connect(self, target: UpstreamTarget, origin: ClientOrigin | None = ORIGIN) -> None:
        self.connector.connect(target, origin).addBoth(self.results.append)

    @property
    def transport(self) -> TLSStringTransport:
        return self.endpoint.transports[-1]

    @property
    def protocol(self) -> UpstreamConnection:
        return self.endpoint.protocols[-1]

    def reply(self, data: bytes) -> bytes:
        """
        Answer as the upstream; return what the proxy sent since last asked.
        """
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.transport.value()


def target(mode: str, tls: str = "none") -> UpstreamTarget:
    return UpstreamTarget("tcp:127.0.0.1:110", UpstreamTls(mode=tls, verify=False), mode)


@pytest.mark.parametrize("version", [1, 2])
def test_proxyHeaderFirst(version: int) -> None:
    """
    With proxy-v1/v2 the header for the client's addresses is the first
    thing on the connection, before the upstream has said anything; the
    connection is ready at the greeting, with nothing else sent.
    """
    rig = Rig()
    rig.connect(target(f"proxy-v{version}"))
    assert rig.transport.value() == buildProxyHeader(version, ORIGIN)
    assert rig.reply(b"+OK Dovecot ready.\r\n") == b""
    assert rig.results == [rig.protocol]


def test_proxyHeaderBeforeImplicitTLS() -> None:
    """
    With implicit TLS the header goes in the clear and TLS starts right
    after it, before the greeting.
    """
    rig = Rig()
    rig.connect(target("proxy-v2", tls="implicit"))
    assert rig.transport.startedTLS == buildProxyHeader(2, ORIGIN)


def test_proxyHeaderWithoutOrigin() -> None:
    """
    A connection made without the client's addresses still starts with a
    header (a haproxy = yes listener drops a connection without one),
    which tells the upstream to use the connection's own addresses.
    """
    rig = Rig()
    rig.connect(target("proxy-v1"), None)
    assert rig.transport.value() == b"PROXY UNKNOWN\r\n"


def test_noneSendsNothing() -> None:
    """
    client_address = "none": nothing before or after the greeting.
    """
    rig = Rig()
    rig.connect(target("none"))
    assert rig.transport.value() == b""
    assert rig.reply(b"+OK ready\r\n") == b""
    assert rig.results == [rig.protocol]


def test_xclientAccepted() -> None:
    """
    With xclient, since the greeting offers XCLIENT (Dovecot's [XCLIENT]
    response code, for trusted proxies), the proxy sends the client's
    address; the connection is ready once the upstream accepted it.
    """
    rig = Rig()
    rig.connect(target("xclient"))
    assert rig.transport.value() == b""
    sent = rig.reply(b"+OK [XCLIENT] Dovecot ready. <1.2@host>\r\n")
    assert sent == b"XCLIENT ADDR=203.0.113.7 PORT=51234\r\n"
    assert rig.results == []
    assert rig.reply(b"+OK Updated\r\n") == b""
    assert rig.results == [rig.protocol]


def test_xclientNotOffered() -> None:
    """
    An upstream whose greeting does not offer XCLIENT (the proxy is not in
    its login_trusted_networks; Dovecot would answer +OK and ignore it) is
    not sent one; the connection is used at once, and the administrator
    gets one warning per upstream, not one per connection.
    """
    rig = Rig()
    with capturedLogs() as events:
        for _ in range(2):
            rig.connect(target("xclient"))
            assert rig.reply(b"+OK Dovecot ready.\r\n") == b""
    assert rig.results == rig.endpoint.protocols
    warnings = [formatEvent(e) for e in events if "XCLIENT" in formatEvent(e)]
    assert len(warnings) == 1
    assert "login_trusted_networks" in warnings[0]


def test_xclientRefused() -> None:
    """
    A -ERR to XCLIENT is logged with the upstream's words; the connection
    is still used.
    """
    rig = Rig()
    rig.connect(target("xclient"))
    rig.reply(b"+OK [XCLIENT] ready\r\n")
    with capturedLogs() as events:
        rig.reply(b"-ERR Invalid parameters\r\n")
    assert rig.results == [rig.protocol]
    assert any("refused XCLIENT: Invalid parameters" in formatEvent(e) for e in events)


def test_xclientConnectionLost() -> None:
    """
    If the upstream hangs up during the exchange, the connect fails at once
    with the reason, not after a timeout.
    """
    rig = Rig()
    rig.connect(target("xclient"))
    rig.reply(b"+OK [XCLIENT] ready\r\n")
    rig.protocol.connectionLost(Failure(ConnectionResetError()))
    assert len(rig.results) == 1
    failure = rig.results[0]
    assert isinstance(failure, Failure) and failure.check(UpstreamError)
    assert failure.value.kind == "closed"


def test_xclientTimeout() -> None:
    """
    An upstream that never answers XCLIENT is given up on after the
    response timeout, and its connection closed.
    """
    rig = Rig()
    rig.connect(target("xclient"))
    rig.reply(b"+OK [XCLIENT] ready\r\n")
    rig.clock.advance(61)
    assert rig.transport.disconnecting
    rig.protocol.connectionLost(Failure(ConnectionDone()))  # as the reactor then does
    assert len(rig.results) == 1
    failure = rig.results[0]
    assert isinstance(failure, Failure) and failure.check(UpstreamTimeout)


def test_xclientGivenUp() -> None:
    """
    A session that stops waiting during the exchange (it ended, or a login
    went elsewhere) leaves no connection open behind it.
    """
    rig = Rig()
    deferred = rig.connector.connect(target("xclient"), ORIGIN)
    deferred.addErrback(lambda failure: None)
    rig.reply(b"+OK [XCLIENT] ready\r\n")
    deferred.cancel()
    assert rig.protocol._closed
