"""
Deciding, from what a client connection itself shows, whether it may log in
without STLS (the C{[tls] require} policy).

L{loginSecurity} decides, once per session, whether TLS protects the
connection already and whether logins must wait for it.  L{originOf} reads a
session's transport once, when the session starts: the
addresses of the real TCP connection underneath any wrappers, and the PROXY
header if the connection came through a C{haproxy:} listener.  The
resulting L{ConnectionOrigin} is a frozen value; L{loginsNeedTLS} and its
properties are pure functions of it.

The rule for C{require = "auto"}: a connection is exempt (logins allowed in
clear) only when

 1. both ends of the real TCP connection are loopback addresses, and
 2. it came through no PROXY header, or through a v2 C{LOCAL} header (the
    balancer's own connection), or through a header whose claimed source is
    itself a loopback address.

The header can only take the exemption away, never grant it: its
destination address is not looked at, and a relayed connection whose
source the header does not name (v1 C{UNKNOWN}, v2 C{AF_UNSPEC}) counts as
remote.  TLS that the balancer terminated (a v2 SSL TLV with
C{PP2_CLIENT_SSL}) counts as TLS under every policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import ITransport
from twisted.protocols.policies import ProtocolWrapper

from popproxy._proxyheader import ProxyHeader, ProxyHeaderWrapper, ProxyTLS
from popproxy._tls import isLoopback

__all__ = ["ConnectionOrigin", "LoginSecurity", "loginSecurity", "loginsNeedTLS", "originOf"]

#: How many protocol wrappers (PROXY header, TLS) may sit between a session
#: and its TCP connection; more is not a connection this module understands.
_MAX_WRAPPERS = 8


def _isLoopback(host: str | None) -> bool:
    # A socket address is numeric: a name there says nothing about the peer.
    return host != "localhost" and isLoopback(host)


@dataclass(frozen=True, slots=True)
class ConnectionOrigin:
    """
    Where a client connection comes from, as far as the proxy can tell.

    @ivar socketHost: the local address of the real TCP connection (never a
        PROXY header's claim), or C{None} if it has no IP address.
    @ivar socketPeer: the remote address of the real TCP connection.
    @ivar header: the PROXY header the connection started with, if it came
        through a C{haproxy:} listener.
    """

    socketHost: str | None
    socketPeer: str | None
    header: ProxyHeader | None = None

    @property
    def local(self) -> bool:
        """
        Whether the client is on this host (the C{auto} exemption).
        """
        if not (_isLoopback(self.socketHost) and _isLoopback(self.socketPeer)):
            return False
        header = self.header
        if header is None or header.local:
            return True
        return header.source is not None and _isLoopback(header.source.host)

    @property
    def balancerTLS(self) -> ProxyTLS | None:
        """
        The PROXY header's SSL TLV, if it says the client used TLS to reach
        the balancer.
        """
        if self.header is None or self.header.tls is None or not self.header.tls.encrypted:
            return None
        return self.header.tls


def originOf(transport: ITransport) -> ConnectionOrigin:
    """
    The origin of the connection under C{transport}, looking through the
    PROXY and TLS wrappers to the TCP connection itself.
    """
    header = None
    inner: object = transport
    for _ in range(_MAX_WRAPPERS):
        if isinstance(inner, ProxyHeaderWrapper):
            header = inner.header
        if not isinstance(inner, ProtocolWrapper):
            break
        inner = inner.transport
    else:
        return ConnectionOrigin(None, None, header)
    if inner is None:
        return ConnectionOrigin(None, None, header)
    host = getattr(inner.getHost(), "host", None)  # type: ignore[attr-defined]
    peer = getattr(inner.getPeer(), "host", None)  # type: ignore[attr-defined]
    return ConnectionOrigin(host, peer, header)


def loginsNeedTLS(require: str, haveCertificate: bool, origin: ConnectionOrigin) -> bool:
    """
    Whether logins on a connection must wait for TLS (STLS), before any TLS
    is taken into account.

    @param require: C{"auto"}, C{"always"} or C{"never"}.
    @param haveCertificate: the proxy has a certificate (without one
        nothing can be required).
    """
    if not haveCertificate or require == "never":
        return False
    if require == "always":
        return True
    return not origin.local


@dataclass(frozen=True, slots=True)
class LoginSecurity:
    """
    How one session's logins are protected, decided when it starts.

    @ivar secure: TLS protects the connection already: an implicit-TLS
        listener, or TLS the balancer terminated (then logins need no STLS,
        and STLS is neither offered nor accepted).
    @ivar tlsRequired: logins must wait for TLS.
    @ivar balancerTLS: the PROXY header's SSL TLV, if the balancer
        terminated TLS.
    """

    secure: bool
    tlsRequired: bool
    balancerTLS: ProxyTLS | None = None


def loginSecurity(
    transport: ITransport, *, implicitTLS: bool, requireTLS: str, haveCertificate: bool
) -> LoginSecurity:
    """
    How logins on the connection under C{transport} are protected.

    @param implicitTLS: the listener speaks TLS from the first byte.
    @param requireTLS: the C{[tls] require} policy.
    @param haveCertificate: the proxy has a certificate (STLS is possible).
    """
    origin = originOf(transport)
    balancerTLS = origin.balancerTLS
    return LoginSecurity(
        secure=implicitTLS or balancerTLS is not None,
        tlsRequired=loginsNeedTLS(requireTLS, haveCertificate, origin),
        balancerTLS=balancerTLS,
    )
