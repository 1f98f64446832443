"""
TLS on one client connection: L{ClientTLS} decides, once the connection is
made, whether TLS protects it already (an implicit-TLS listener, or TLS the
balancer terminated) and whether logins must wait for it (the C{[tls]
require} policy, L{loginSecurity}); it answers STLS, and says whether STLS
is offered and logins are allowed now.  It is given the server certificate,
the policy and narrow callables (reply to the client, start TLS), never the
session.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import ITransport

from popproxy._loginpolicy import loginSecurity
from popproxy._printable import PrintableLogger

__all__ = ["ClientTLS"]


class ClientTLS:
    """
    Whether one client connection is encrypted, and STLS for it.

    @ivar secure: TLS protects the connection.
    """

    log = PrintableLogger()

    def __init__(
        self,
        serverTLS: object | None,
        *,
        implicitTLS: bool,
        requireTLS: str,
        session: str,
        reply: Callable[[bytes], None],
        startTLS: Callable[[object], None],
    ) -> None:
        """
        @param serverTLS: the proxy's certificate (its TLS context
            creator), if it has one: STLS is possible.
        @param implicitTLS: the listener speaks TLS from the first byte.
        @param requireTLS: the C{[tls] require} policy.
        @param session: the session's id, for the log.
        @param reply: sends the client one line (without CRLF).
        @param startTLS: forgets what the client said in clear and starts
            TLS on the connection with the creator it is given.
        """
        self._serverTLS = serverTLS
        self._implicitTLS = implicitTLS
        self._requireTLS = requireTLS
        self._session = session
        self._reply = reply
        self._startTLS = startTLS
        self.secure = False
        self._tlsRequired = False

    def connected(self, transport: ITransport) -> None:
        """
        The connection under C{transport} was made (and admitted): decide
        how its logins are protected.
        """
        security = loginSecurity(
            transport,
            implicitTLS=self._implicitTLS,
            requireTLS=self._requireTLS,
            haveCertificate=self._serverTLS is not None,
        )
        self.secure, self._tlsRequired = security.secure, security.tlsRequired
        if security.balancerTLS is not None:
            self.log.info(
                "session {session}: TLS terminated by the balancer ({version})",
                session=self._session,
                version=security.balancerTLS.version or "version not sent",
            )

    def loginsAllowed(self) -> bool:
        """
        Whether a login may be tried now (and USER and SASL announced).
        """
        return self.secure or not self._tlsRequired

    def offersSTLS(self) -> bool:
        return self._serverTLS is not None and not self.secure

    def stls(self, arguments: bytes) -> None:
        """
        The STLS command (RFC 2595).
        """
        if arguments:
            self._reply(b"-ERR STLS takes no arguments")
            return
        if self.secure:
            self._reply(b"-ERR TLS is already active")
            return
        if self._serverTLS is None:
            self._reply(b"-ERR STLS is not available here")
            return
        self._reply(b"+OK begin TLS negotiation")
        self.secure = True
        self._startTLS(self._serverTLS)
        self.log.info("session {session}: TLS started (STLS)", session=self._session)
