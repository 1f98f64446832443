"""
Telling a Dovecot upstream the client's address with POP3 C{XCLIENT}.

Dovecot's pop3-login offers C{XCLIENT} only to connections from its
C{login_trusted_networks}, with a response code in its greeting (C{+OK
[XCLIENT] Dovecot ready.}; its C{CAPA} does not list it).  To anyone else it
answers C{XCLIENT} with C{+OK} and ignores it, so the command is sent only
when the greeting offers it.  After C{+OK Updated} Dovecot logs, penalises
and applies its rules to the address given (no new greeting follows).

L{xclientCommand} is the pure command line, L{XclientExchange} the exchange
on one greeted connection, and L{XclientConnector} wraps the upstream
connect function so that connections to upstreams with C{client_address =
"xclient"} are handed over only after the exchange.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from popproxy._framing import StatusLine
from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._tls import UpstreamTarget
from popproxy._upstream import UpstreamConnection, UpstreamError
from popproxy._upstreamlink import UpstreamLink

__all__ = ["XclientConnector", "XclientExchange", "xclientCommand"]

#: What L{XclientExchange.run} fires with.
ACCEPTED = "accepted"
NOT_OFFERED = "not offered"
REFUSED = "refused"

Connect = Callable[[UpstreamTarget, ClientOrigin | None], Deferred[UpstreamConnection]]


def xclientCommand(origin: ClientOrigin) -> bytes | None:
    """
    C{XCLIENT ADDR=<ip> PORT=<port>} for the client of C{origin}, or
    C{None} when it has no IP address to pass on.  An IPv4-mapped IPv6
    address (a dual-stack listener's IPv4 client) is written as IPv4.
    """
    source = origin.source
    if source is None:
        return None
    address = ipaddress.ip_address(source.host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return b"XCLIENT ADDR=%s PORT=%d" % (str(address).encode("ascii"), source.port)


def offersXclient(greeting: StatusLine | None) -> bool:
    """
    Whether a greeting carries the C{[XCLIENT]} response code.
    """
    return greeting is not None and greeting.text.upper().startswith(b"[XCLIENT]")


class XclientExchange:
    """
    C{XCLIENT}, if the greeting offered it, on one greeted connection.

    @ivar answer: the upstream's text after C{XCLIENT}'s status.
    """

    def __init__(self, connection: UpstreamConnection, command: bytes) -> None:
        self._connection = connection
        self._command = command
        self._lost: Failure | None = None
        self._running: Deferred[str] | None = None
        self.answer = b""

    def run(self) -> Deferred[str]:
        """
        Fire with L{ACCEPTED}, L{NOT_OFFERED} or L{REFUSED}; fail with
        L{UpstreamError} if the connection ends first.  Each answer must
        come within the connection's response timeout.
        """
        self._connection.onLost = self._connectionLost
        self._running = Deferred.fromCoroutine(self._exchange())
        return self._running.addBoth(self._finished)

    async def _exchange(self) -> str:
        if not offersXclient(self._connection.greeting):
            return NOT_OFFERED
        status = await UpstreamLink(self._connection.sendCommand).shortCommand(self._command)
        self.answer = status.text
        return ACCEPTED if status.ok else REFUSED

    def _connectionLost(self, reason: Failure) -> None:
        # Nothing will answer the command in flight: stop waiting for it.
        self._lost = reason
        if self._running is not None:
            self._running.cancel()

    def _finished(self, result: str | Failure) -> str | Failure:
        self._connection.onLost = None
        lost = self._lost
        if lost is not None and isinstance(result, Failure) and result.check(CancelledError):
            if lost.check(UpstreamError):  # e.g. the response timeout
                return lost
            return Failure(UpstreamError("the mail server closed the connection", "closed"))
        return result


class XclientConnector:
    """
    Connects as the wrapped connect function does, then, for an upstream
    with C{client_address = "xclient"}, passes the client's address on
    before handing the connection over.  An upstream that does not offer
    XCLIENT (or refuses it) is used anyway, with a warning.
    """

    #: The upstream's answer is escaped in the log (it is not ours to trust).
    log = PrintableLogger()

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        #: Upstreams already warned about for not offering XCLIENT.
        self._warned: set[UpstreamTarget] = set()

    def connect(
        self, target: UpstreamTarget, origin: ClientOrigin | None = None
    ) -> Deferred[UpstreamConnection]:
        connecting = self._connect(target, origin)
        if target.clientAddress != "xclient" or origin is None:
            return connecting
        command = xclientCommand(origin)
        if command is None:
            return connecting
        return connecting.addCallback(self._announce, target, command)

    def _announce(
        self, connection: UpstreamConnection, target: UpstreamTarget, command: bytes
    ) -> Deferred[UpstreamConnection]:
        exchange = XclientExchange(connection, command)
        return exchange.run().addCallbacks(
            self._announced,
            self._failed,
            callbackArgs=(connection, target, exchange),
            errbackArgs=(connection,),
        )

    def _announced(
        self,
        outcome: str,
        connection: UpstreamConnection,
        target: UpstreamTarget,
        exchange: XclientExchange,
    ) -> UpstreamConnection:
        if outcome == NOT_OFFERED and target not in self._warned:
            self._warned.add(target)
            self.log.warn(
                "upstream {upstream} does not offer XCLIENT to this proxy (is the proxy in its "
                "login_trusted_networks?): it sees the proxy's address, not the client's",
                upstream=str(target),
            )
        elif outcome == REFUSED:
            self.log.warn(
                "upstream {upstream} refused XCLIENT: {answer}",
                upstream=str(target),
                answer=exchange.answer.decode("ascii", "replace")[:200],
            )
        return connection

    @staticmethod
    def _failed(failure: Failure, connection: UpstreamConnection) -> Failure:
        # Given up on (the session ended) or lost: nobody will use it.
        connection.close()
        return failure
