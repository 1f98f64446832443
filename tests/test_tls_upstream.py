"""
Tests for TLS towards upstreams: settings resolution (popproxy._tls) and
the STLS exchange of popproxy._upstream.UpstreamConnection, in memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from popproxy._tls import (
    TlsSettingsError,
    UpstreamTls,
    endpointHost,
    isLoopback,
    resolveUpstreamTls,
)
from popproxy._upstream import UpstreamConnection, UpstreamPermanentError


@pytest.mark.parametrize(
    ("description", "host"),
    [
        ("tcp:pop.example.com:110", "pop.example.com"),
        ("tcp:host=pop.example.com:port=110", "pop.example.com"),
        ("tls:pop.example.com:995", "pop.example.com"),
        ("tcp6:\\:\\:1:110", "::1"),
        ("unix:/run/pop.sock", None),
    ],
)
def test_endpointHost(description: str, host: str | None) -> None:
    """
    The host name to verify is read from the usual client endpoint forms,
    escaped colons included.
    """
    assert endpointHost(description) == host


def test_defaultModes() -> None:
    """
    Without a tls setting, remote upstreams use STLS, loopback ones plain
    text, tls: endpoints implicit TLS; the host name to verify is filled in.
    """
    assert resolveUpstreamTls("tcp:pop.example.com:110", UpstreamTls()).mode == "starttls"
    assert resolveUpstreamTls("tcp:pop.example.com:110", UpstreamTls()).hostname == (
        "pop.example.com"
    )
    assert resolveUpstreamTls("tcp:127.0.0.1:110", UpstreamTls()).mode == "none"
    assert resolveUpstreamTls("tcp:localhost:110", UpstreamTls()).mode == "none"
    assert resolveUpstreamTls("tls:pop.example.com:995", UpstreamTls()).mode == "implicit"
    assert resolveUpstreamTls("tcp:10.0.0.1:110", UpstreamTls(mode="none")).mode == "none"
    assert isLoopback("::1") and not isLoopback("10.0.0.1")
    assert isLoopback("::ffff:127.0.0.1") and not isLoopback("::ffff:10.0.0.1")


def test_impossibleSettings() -> None:
    """
    Contradictions and TLS without a name to verify are refused.
    """
    with pytest.raises(TlsSettingsError):
        resolveUpstreamTls("tls:pop.example.com:995", UpstreamTls(mode="starttls"))
    with pytest.raises(TlsSettingsError):
        resolveUpstreamTls("unix:/run/pop.sock", UpstreamTls(mode="starttls"))
    assert resolveUpstreamTls("unix:/run/pop.sock", UpstreamTls(mode="starttls", verify=False))
    with pytest.raises(TlsSettingsError):
        resolveUpstreamTls("tcp:h:110", UpstreamTls(mode="sometimes"))


class TLSTransport(StringTransport):
    """
    Records startTLS calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tlsStarts: list[object] = []

    def startTLS(self, creator: object) -> None:
        self.tlsStarts.append(creator)


#: The TLS connection creator connectWithSTLS configures (only its identity matters).
CREATOR = object()


def connectWithSTLS() -> tuple[UpstreamConnection, TLSTransport, list[object]]:
    connection = UpstreamConnection(Clock(), 30, startTLS=CREATOR)
    transport = TLSTransport()
    connection.makeConnection(transport)
    results: list[object] = []
    connection.ready.addBoth(results.append)
    return connection, transport, results


def test_stlsBeforeAnythingElse() -> None:
    """
    With starttls the first thing sent is STLS; TLS starts after +OK, once,
    with the configured creator, and the connection is ready only once the
    handshake completed.
    """
    connection, transport, results = connectWithSTLS()
    connection.dataReceived(b"+OK ready\r\n")
    assert transport.value() == b"STLS\r\n"
    assert transport.tlsStarts == []
    connection.dataReceived(b"+OK Begin TLS negotiation now.\r\n")
    assert transport.tlsStarts == [CREATOR]
    assert results == []
    connection.handshakeCompleted()
    assert results == [connection]


def test_stlsRefused() -> None:
    """
    An upstream that refuses STLS is a permanent error, and nothing else is
    sent to it (no credentials in clear).
    """
    connection, transport, results = connectWithSTLS()
    connection.dataReceived(b"+OK ready\r\n")
    connection.dataReceived(b"-ERR unknown command\r\n")
    connection.connectionLost(Failure(ConnectionError()))
    assert transport.value() == b"STLS\r\n"
    assert isinstance(results[0], Failure)
    assert results[0].check(UpstreamPermanentError)
    assert "refused STLS" in str(results[0].value)


def test_stlsInjectionFromUpstream() -> None:
    """
    Plain-text bytes an attacker appends after the upstream's STLS +OK are
    not taken as responses: the connection is dropped.
    """
    connection, transport, results = connectWithSTLS()
    connection.dataReceived(b"+OK ready\r\n")
    connection.dataReceived(b"+OK go\r\n+OK injected\r\n")
    assert transport.disconnecting
    connection.connectionLost(Failure(ConnectionError()))
    assert isinstance(results[0], Failure)


def test_caFileBundle(tmp_path: Path) -> None:
    """
    A ca_file that holds no certificate is refused when building the
    connection creator.
    """
    from popproxy._tls import clientCreator

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TlsSettingsError):
        clientCreator(resolveUpstreamTls("tcp:pop.example.com:110", UpstreamTls(caFile=bad)))
