"""
Tests for popproxy._clienttls: whether a client connection is encrypted,
whether logins wait for TLS, and STLS, on StringTransports with loopback
or remote addresses (no sockets).  What is checked is what the client is
told, whether TLS was started with the proxy's certificate, and the log.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from popproxy._clienttls import ClientTLS

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 110)
LOOPBACK_CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)
REMOTE = IPv4Address("TCP", "203.0.113.7", 50000)
CERTIFICATE = object()


class Rig:
    """
    A ClientTLS whose replies and TLS starts are noted.
    """

    def __init__(
        self,
        serverTLS: object | None = CERTIFICATE,
        implicitTLS: bool = False,
        require: str = "auto",
    ) -> None:
        self.replies: list[bytes] = []
        self.started: list[object] = []
        self.tls = ClientTLS(
            serverTLS,
            implicitTLS=implicitTLS,
            requireTLS=require,
            session="2a",
            reply=self.replies.append,
            startTLS=self.started.append,
        )

    def connect(self, peer: IPv4Address) -> None:
        self.tls.connected(StringTransport(hostAddress=LOOPBACK, peerAddress=peer))


def test_remoteClientMustStartTLSBeforeLoggingIn() -> None:
    """
    Under "auto" with a certificate, a remote client may not log in before
    STLS; STLS is offered, answered, and starts TLS with the certificate;
    then logins are allowed and STLS is no longer offered or accepted.
    """
    rig = Rig()
    rig.connect(REMOTE)
    assert not rig.tls.loginsAllowed() and rig.tls.offersSTLS() and not rig.tls.secure
    with capturedLogs() as events:
        rig.tls.stls(b"")
    assert rig.replies == [b"+OK begin TLS negotiation"]
    tls = rig.tls  # read afresh: mypy keeps the narrowing above across the call
    assert rig.started == [CERTIFICATE] and tls.secure
    assert [formatEvent(e) for e in events] == ["session 2a: TLS started (STLS)"]
    assert rig.tls.loginsAllowed() and not rig.tls.offersSTLS()
    rig.tls.stls(b"")
    assert rig.replies[-1] == b"-ERR TLS is already active" and len(rig.started) == 1


def test_localClientMayLogInInClear() -> None:
    """
    Under "auto", a client on this host may log in without TLS, and is
    still offered STLS.
    """
    rig = Rig()
    rig.connect(LOOPBACK_CLIENT)
    assert rig.tls.loginsAllowed() and rig.tls.offersSTLS()


def test_implicitTLSIsSecureFromTheStart() -> None:
    """
    On an implicit-TLS listener logins are allowed at once, and STLS is
    neither offered nor accepted.
    """
    rig = Rig(implicitTLS=True, require="always")
    rig.connect(REMOTE)
    assert rig.tls.secure and rig.tls.loginsAllowed() and not rig.tls.offersSTLS()


def test_stlsRefusalsStartNothing() -> None:
    """
    STLS with arguments, or without a certificate, is refused and TLS is
    not started; without a certificate logins are allowed in clear.
    """
    rig = Rig()
    rig.connect(REMOTE)
    rig.tls.stls(b"now")
    assert rig.replies == [b"-ERR STLS takes no arguments"] and not rig.tls.secure
    bare = Rig(serverTLS=None)
    bare.connect(REMOTE)
    assert bare.tls.loginsAllowed() and not bare.tls.offersSTLS()
    bare.tls.stls(b"")
    assert bare.replies == [b"-ERR STLS is not available here"]
    assert rig.started == [] and bare.started == []
