"""
Tests for popproxy._loginpolicy: what a connection shows about its origin
(looking through the PROXY and TLS wrappers to the TCP connection), and the
require-TLS decision made from it.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol

from popproxy._loginpolicy import ConnectionOrigin, loginsNeedTLS, originOf
from popproxy._proxyheader import ProxyHeader, ProxyHeaderFactory, ProxyTLS

REMOTE = IPv4Address("TCP", "203.0.113.7", 51234)
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 110)
LOOPBACK_CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


def header(source: str | None, *, local: bool = False, tls: ProxyTLS | None = None) -> ProxyHeader:
    address = None if source is None else IPv4Address("TCP", source, 1)
    if source is not None and ":" in source:
        address = IPv6Address("TCP", source, 1)  # type: ignore[assignment]
    return ProxyHeader(2, address, LOOPBACK, local=local, tls=tls)


@pytest.mark.parametrize(
    ("origin", "local"),
    [
        (ConnectionOrigin("127.0.0.1", "127.0.0.1"), True),
        (ConnectionOrigin("::1", "::1"), True),
        (ConnectionOrigin("::ffff:127.0.0.1", "::ffff:127.0.0.5"), True),
        (ConnectionOrigin("127.0.0.1", "192.0.2.1"), False),
        (ConnectionOrigin("192.0.2.1", "127.0.0.1"), False),
        (ConnectionOrigin("::ffff:192.0.2.1", "::ffff:127.0.0.1"), False),
        (ConnectionOrigin(None, "127.0.0.1"), False),
        (ConnectionOrigin("127.0.0.1", "localhost"), False),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header("127.0.0.1")), True),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header("::1")), True),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header(None, local=True)), True),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header(None)), False),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header("203.0.113.7")), False),
        (ConnectionOrigin("127.0.0.1", "127.0.0.1", header("10.0.0.9")), False),
        (ConnectionOrigin("10.0.0.1", "10.0.0.2", header("127.0.0.1")), False),
        (ConnectionOrigin("10.0.0.1", "10.0.0.2", header(None, local=True)), False),
    ],
)
def test_localRule(origin: ConnectionOrigin, local: bool) -> None:
    """
    A connection is local only when both ends of the real socket are
    loopback (IPv4-mapped loopback included) and a PROXY header, if any,
    is the balancer's own (LOCAL) or relays a loopback client; a claimed
    address never makes a remote socket local.
    """
    assert origin.local is local


@pytest.mark.parametrize(
    ("require", "certificate", "local", "needed"),
    [
        ("auto", True, True, False),
        ("auto", True, False, True),
        ("always", True, True, True),
        ("never", True, False, False),
        ("auto", False, False, False),
        ("always", False, False, False),
    ],
)
def test_policy(require: str, certificate: bool, local: bool, needed: bool) -> None:
    """
    "auto" requires TLS from non-local connections, "always" from all,
    "never" from none; without a certificate nothing can be required.
    """
    origin = ConnectionOrigin("127.0.0.1", "127.0.0.1" if local else "192.0.2.1")
    assert loginsNeedTLS(require, certificate, origin) is needed


def test_balancerTLS() -> None:
    """
    Only an SSL TLV with PP2_CLIENT_SSL is TLS at the balancer.
    """
    tls = ProxyTLS(0x05, 0, "TLSv1.2")
    assert (
        ConnectionOrigin("10.0.0.1", "10.0.0.2", header("203.0.113.7", tls=tls)).balancerTLS == tls
    )
    plain = header("203.0.113.7", tls=ProxyTLS(0, 0))
    assert ConnectionOrigin("10.0.0.1", "10.0.0.2", plain).balancerTLS is None
    assert ConnectionOrigin("10.0.0.1", "10.0.0.2", header("203.0.113.7")).balancerTLS is None
    assert ConnectionOrigin("127.0.0.1", "127.0.0.1").balancerTLS is None


def test_originOfPlainConnection() -> None:
    """
    Without wrappers, the transport's own addresses are the socket's.
    """
    transport = StringTransport(hostAddress=LOOPBACK, peerAddress=REMOTE)
    assert originOf(transport) == ConnectionOrigin("127.0.0.1", "203.0.113.7")


def proxied(layers: int) -> tuple[Protocol, StringTransport, ProtocolWrapper]:
    """
    A protocol behind the PROXY wrapper (and C{layers} further generic
    wrappers, standing in for TLS) on a connection from 127.0.0.1 to
    127.0.0.1 that has received a header from 203.0.113.7 to 127.0.0.1.
    """
    inner = Protocol()
    top: Protocol = inner
    for _ in range(layers):
        top = ProtocolWrapper(WrappingFactory(Factory.forProtocol(Protocol)), top)
    proxyFactory = ProxyHeaderFactory(Factory.forProtocol(Protocol), Clock())
    wrapper = proxyFactory.buildProtocol(LOOPBACK_CLIENT)
    assert wrapper is not None
    wrapper.wrappedProtocol = top
    transport = StringTransport(hostAddress=LOOPBACK, peerAddress=LOOPBACK_CLIENT)
    wrapper.makeConnection(transport)
    wrapper.dataReceived(b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 110\r\n")
    return inner, transport, wrapper


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_originOfProxiedConnection(layers: int) -> None:
    """
    Behind the PROXY wrapper, and behind further wrappers above it (a TLS
    layer on an implicit-TLS haproxy: listener), the origin holds the real
    socket's addresses, not the header's, and the header itself; the
    protocol's transport meanwhile answers with the header's addresses.
    """
    assert issubclass(TLSMemoryBIOProtocol, ProtocolWrapper)
    inner, _, wrapper = proxied(layers)
    assert inner.transport is not None
    # Typed as getPeer() answers: with mypy-zope, mypy finds no value common
    # to an interface and a class implementing it (as for isinstance in
    # Shoobx/mypy-zope#91), so == would read as never true and mypy would
    # check nothing after it.
    remote: IAddress = REMOTE
    assert inner.transport.getPeer() == remote
    origin = originOf(inner.transport)
    assert (origin.socketHost, origin.socketPeer) == ("127.0.0.1", "127.0.0.1")
    assert origin.header == wrapper.header
    assert not origin.local


def test_originOfTooManyWrappers() -> None:
    """
    A stack of wrappers deeper than any listener builds tells nothing about
    the socket, and so is never local.
    """
    inner, _, _ = proxied(10)
    assert inner.transport is not None
    origin = originOf(inner.transport)
    assert origin.socketHost is None and not origin.local
