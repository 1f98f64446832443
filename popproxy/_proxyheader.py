"""
Receiving the HAProxy PROXY protocol header (v1 and v2) in front of a
protocol that speaks first.

L{ProxyHeaderParser} is a sans-IO parser fed bytes as they arrive, one at a
time if need be.  L{ProxyHeaderWrapper} (made by L{ProxyHeaderFactory})
holds the connection back from the wrapped protocol until the header is
complete: only then does the wrapped protocol see C{connectionMade}, so a
POP3 greeting never precedes the header (the PROXY specification forbids
the receiver to speak first), and C{getPeer()} already names the client the
load balancer accepted, not the load balancer.  A connection with an invalid
header, or whose header does not arrive in time, is closed unanswered.

Of a v2 header's TLVs only C{PP2_TYPE_SSL} is read (into L{ProxyTLS}): it
tells whether the client's connection to the balancer used TLS.  The others
are checked for length and skipped.

Reference: U{https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt}.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

__all__ = [
    "HEADER_TIMEOUT",
    "InvalidProxyHeader",
    "ProxyHeader",
    "ProxyHeaderFactory",
    "ProxyHeaderParser",
    "ProxyHeaderWrapper",
    "ProxyTLS",
]

#: Seconds a new connection has to deliver its complete PROXY header.
HEADER_TIMEOUT = 10.0

#: The longest v1 header, CRLF included (specification, section 2.1).
V1_MAX_LENGTH = 107

#: The largest v2 address-and-TLV block accepted.  The format allows 65535
#: bytes; what HAProxy sends (addresses, ALPN, authority, unique ID, TLS
#: details) fits easily in this, and a bound keeps a peer from making every
#: connection buffer 64 KB before anything is checked.
V2_MAX_LENGTH = 4096

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version/command, family/protocol, length

_LOCAL = 0x0
_PROXY = 0x1
_UNSPEC = 0x00
_TCP4 = 0x11
_TCP6 = 0x21

_PORT = re.compile(rb"[0-9]{1,5}\Z")

# The SSL TLV (specification, section 2.2.5): its value is a client flags
# byte, a 32-bit verify result, then sub-TLVs.
_PP2_TYPE_SSL = 0x20
_PP2_SUBTYPE_SSL_VERSION = 0x21
_PP2_SUBTYPE_SSL_CIPHER = 0x23
_SSL_FIXED = 5

#: C{client} flags of the SSL TLV.
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04


class InvalidProxyHeader(ValueError):
    """
    The bytes received are not a valid PROXY protocol header.
    """


Address = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyTLS:
    """
    What a v2 header's SSL TLV (C{PP2_TYPE_SSL}) said about the connection
    between the client and the load balancer.

    @ivar client: the C{PP2_CLIENT_*} flags byte, unknown bits included.
    @ivar verify: the client certificate's verification result (0: a
        certificate was presented and verified).  It describes the
        certificate only, not whether TLS was used.
    @ivar version: the C{PP2_SUBTYPE_SSL_VERSION} sub-TLV (C{"TLSv1.3"}),
        if sent.
    @ivar cipher: the C{PP2_SUBTYPE_SSL_CIPHER} sub-TLV, if sent.
    """

    client: int
    verify: int
    version: str | None = None
    cipher: str | None = None

    @property
    def encrypted(self) -> bool:
        """
        Whether the client reached the balancer over TLS (C{PP2_CLIENT_SSL}).
        """
        return bool(self.client & PP2_CLIENT_SSL)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """
    What a PROXY header said about the connection.

    @ivar version: 1 (text) or 2 (binary).
    @ivar source: the client's address as the load balancer saw it, or
        C{None} when the header does not tell (v1 C{UNKNOWN}, v2 C{LOCAL}
        or C{AF_UNSPEC}): then the connection's own addresses apply.
    @ivar destination: the address the client connected to, or C{None}
        likewise.
    @ivar local: a v2 C{LOCAL} header: the balancer's own connection (a
        health check), relaying no client.
    @ivar tls: the v2 SSL TLV, if the header carried one (never for v1,
        which has no room for it, nor for C{LOCAL} or C{AF_UNSPEC}, whose
        blocks are ignored).
    """

    version: int
    source: Address | None
    destination: Address | None
    local: bool = False
    tls: ProxyTLS | None = None


class ProxyHeaderParser:
    """
    Parses one PROXY header (v1 or v2, told apart by the first byte) from
    bytes fed in pieces of any size.

    Once a header has been returned, the parser is done; bytes after the
    header belong to the application and are handed back by L{feed}.
    """

    def __init__(self, maxV2Length: int = V2_MAX_LENGTH) -> None:
        self._maxV2Length = maxV2Length
        self._buffer = bytearray()
        self._version: int | None = None
        self._done = False
        self._error: InvalidProxyHeader | None = None

    def feed(self, data: bytes) -> tuple[ProxyHeader | None, bytes]:
        """
        Take the next bytes received.

        @return: C{(None, b"")} while the header is incomplete; then the
            header and whatever followed it in C{data}.
        @raise InvalidProxyHeader: the bytes so far cannot start a valid
            header; raised again on every later call.
        """
        if self._done:
            raise RuntimeError("the PROXY header is complete; the rest is application data")
        if self._error is not None:
            raise self._error
        self._buffer += data
        try:
            result = self._parse()
        except InvalidProxyHeader as e:
            self._error = e
            self._buffer.clear()
            raise
        if result is None:
            return None, b""
        header, end = result
        remaining = bytes(self._buffer[end:])
        self._buffer.clear()
        self._done = True
        return header, remaining

    def _parse(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        if not buffer:
            return None
        if self._version is None:
            if buffer[:1] == V1_PREFIX[:1]:
                self._version = 1
            elif buffer[:1] == V2_SIGNATURE[:1]:
                self._version = 2
            else:
                raise InvalidProxyHeader("the connection does not start with a PROXY header")
        if self._version == 1:
            return self._parseV1()
        return self._parseV2()

    # Version 1: "PROXY TCP4 192.0.2.1 198.51.100.2 51234 110\r\n"

    def _parseV1(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        prefix = bytes(buffer[: len(V1_PREFIX)])
        if prefix != V1_PREFIX[: len(prefix)]:
            raise InvalidProxyHeader("malformed PROXY v1 header: it must start with 'PROXY '")
        newline = buffer.find(b"\n", 0, V1_MAX_LENGTH)
        if newline < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise InvalidProxyHeader(
                    f"PROXY v1 header has no CRLF within {V1_MAX_LENGTH} bytes"
                )
            return None
        if newline == 0 or buffer[newline - 1] != ord("\r"):
            raise InvalidProxyHeader("PROXY v1 header ends with a bare LF")
        return _parseV1Line(bytes(buffer[: newline - 1])), newline + 1

    # Version 2: signature, version/command, family/protocol, length, block

    def _parseV2(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        signature = bytes(buffer[: len(V2_SIGNATURE)])
        if signature != V2_SIGNATURE[: len(signature)]:
            raise InvalidProxyHeader("malformed PROXY v2 header: bad signature")
        if len(buffer) > 12:
            versionCommand = buffer[12]
            if versionCommand >> 4 != 2:
                raise InvalidProxyHeader(
                    f"unsupported PROXY v2 version {versionCommand >> 4} (expected 2)"
                )
            if versionCommand & 0x0F not in (_LOCAL, _PROXY):
                raise InvalidProxyHeader(f"unknown PROXY v2 command {versionCommand & 0x0F}")
        if len(buffer) < _V2_FIXED:
            return None
        length = int.from_bytes(buffer[14:16], "big")
        if length > self._maxV2Length:
            raise InvalidProxyHeader(
                f"PROXY v2 address block of {length} bytes is over the limit of {self._maxV2Length}"
            )
        end = _V2_FIXED + length
        if len(buffer) < end:
            return None
        command = buffer[12] & 0x0F
        familyProtocol = buffer[13]
        block = bytes(buffer[_V2_FIXED:end])
        return _parseV2Block(command, familyProtocol, block), end


def _parseV1Line(line: bytes) -> ProxyHeader:
    """
    The header in one v1 line (CRLF removed).
    """
    fields = line[len(V1_PREFIX) :].split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        # The specification: the rest of an UNKNOWN line must be ignored.
        return ProxyHeader(1, None, None)
    if protocol not in (b"TCP4", b"TCP6"):
        raise InvalidProxyHeader(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol!r}"
        )
    if len(fields) != 5:
        raise InvalidProxyHeader(
            "PROXY v1 header needs source address, destination address, "
            "source port and destination port, separated by single spaces"
        )
    _, sourceHost, destinationHost, sourcePort, destinationPort = fields
    if protocol == b"TCP4":
        return ProxyHeader(
            1,
            IPv4Address("TCP", _v1IPv4(sourceHost), _v1Port(sourcePort)),
            IPv4Address("TCP", _v1IPv4(destinationHost), _v1Port(destinationPort)),
        )
    return ProxyHeader(
        1,
        IPv6Address("TCP", _v1IPv6(sourceHost), _v1Port(sourcePort)),
        IPv6Address("TCP", _v1IPv6(destinationHost), _v1Port(destinationPort)),
    )


def _v1IPv4(text: bytes) -> str:
    try:
        return str(ipaddress.IPv4Address(text.decode("ascii")))
    except ValueError:
        raise InvalidProxyHeader(f"PROXY v1 header has an invalid IPv4 address {text!r}") from None


def _v1IPv6(text: bytes) -> str:
    try:
        if b"%" in text:
            raise ValueError("scope")
        return str(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        raise InvalidProxyHeader(f"PROXY v1 header has an invalid IPv6 address {text!r}") from None


def _v1Port(text: bytes) -> int:
    if _PORT.match(text) is None or int(text) > 65535:
        raise InvalidProxyHeader(f"PROXY v1 header has an invalid port {text!r}")
    return int(text)


def _parseV2Block(command: int, familyProtocol: int, block: bytes) -> ProxyHeader:
    """
    The header that a v2 address block (TLVs included) describes.
    """
    if command == _LOCAL:
        # Health checks and the like: the specification says to use the
        # connection's own addresses and to ignore the block.
        return ProxyHeader(2, None, None, local=True)
    if familyProtocol == _UNSPEC:
        return ProxyHeader(2, None, None)
    source: Address
    destination: Address
    if familyProtocol == _TCP4:
        size = 12
        if len(block) < size:
            raise InvalidProxyHeader("PROXY v2 header too short for TCP over IPv4 addresses")
        source = IPv4Address(
            "TCP", str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big")
        )
        destination = IPv4Address(
            "TCP", str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big")
        )
    elif familyProtocol == _TCP6:
        size = 36
        if len(block) < size:
            raise InvalidProxyHeader("PROXY v2 header too short for TCP over IPv6 addresses")
        source = IPv6Address(
            "TCP", str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big")
        )
        destination = IPv6Address(
            "TCP", str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big")
        )
    else:
        raise InvalidProxyHeader(
            f"unsupported PROXY v2 address family/protocol 0x{familyProtocol:02x} "
            "(only TCP over IPv4 or IPv6)"
        )
    tls = None
    for kind, value in _splitTLVs(block[size:], "TLV"):
        if kind == _PP2_TYPE_SSL:
            if tls is not None:
                raise InvalidProxyHeader("PROXY v2 header has two SSL TLVs")
            tls = _parseSSL(value)
    return ProxyHeader(2, source, destination, tls=tls)


def _splitTLVs(tlvs: bytes, what: str) -> list[tuple[int, bytes]]:
    """
    The (type, value) pairs of a run of TLVs, which must fill C{tlvs}
    exactly.
    """
    found = []
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise InvalidProxyHeader(f"PROXY v2 header ends inside a {what}")
        end = offset + 3 + int.from_bytes(tlvs[offset + 1 : offset + 3], "big")
        if end > len(tlvs):
            raise InvalidProxyHeader(f"PROXY v2 {what} runs past the end of the header")
        found.append((tlvs[offset], tlvs[offset + 3 : end]))
        offset = end
    return found


def _parseSSL(value: bytes) -> ProxyTLS:
    """
    The SSL TLV's value, which must be complete and agree with itself: a
    client certificate or TLS details claimed without the TLS flag (or a
    certificate on this connection without one on its session) make the
    header invalid rather than being guessed at.
    """
    if len(value) < _SSL_FIXED:
        raise InvalidProxyHeader(f"PROXY v2 SSL TLV of {len(value)} bytes is too short")
    client = value[0]
    verify = int.from_bytes(value[1:_SSL_FIXED], "big")
    details: dict[int, str] = {}
    subTLVs = _splitTLVs(value[_SSL_FIXED:], "SSL sub-TLV")
    for kind, text in subTLVs:
        if kind not in (_PP2_SUBTYPE_SSL_VERSION, _PP2_SUBTYPE_SSL_CIPHER):
            continue
        if kind in details:
            raise InvalidProxyHeader(f"PROXY v2 SSL TLV repeats sub-TLV 0x{kind:02x}")
        if not (text.isascii() and text.decode("ascii").isprintable()):
            raise InvalidProxyHeader(f"PROXY v2 SSL sub-TLV 0x{kind:02x} is not printable ASCII")
        details[kind] = text.decode("ascii")
    if not client & PP2_CLIENT_SSL:
        if client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) or subTLVs:
            raise InvalidProxyHeader(
                "PROXY v2 SSL TLV describes TLS details without the PP2_CLIENT_SSL flag"
            )
    elif client & PP2_CLIENT_CERT_CONN and not client & PP2_CLIENT_CERT_SESS:
        raise InvalidProxyHeader(
            "PROXY v2 SSL TLV has a certificate on the connection but none on the session"
        )
    return ProxyTLS(
        client,
        verify,
        details.get(_PP2_SUBTYPE_SSL_VERSION),
        details.get(_PP2_SUBTYPE_SSL_CIPHER),
    )


def _describe(address: IAddress) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


@implementer(ITransport, IConsumer, IPushProducer)
class ProxyHeaderWrapper(ProtocolWrapper):
    """
    Reads the PROXY header, then hands the connection to the wrapped
    protocol, acting as its transport.

    The wrapped protocol's C{makeConnection} is called once the header is
    complete, with C{getPeer()} and C{getHost()} already answering from the
    header; the bytes that followed the header go to its C{dataReceived}.
    A connection that ends before that never reaches the wrapped protocol:
    it sees neither C{makeConnection} nor C{connectionLost}.

    @ivar header: the header received, once it is complete.
    """

    log = Logger()

    def __init__(
        self,
        factory: ProxyHeaderFactory,
        wrappedProtocol: IProtocol,
        clock: IReactorTime,
        timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(factory, wrappedProtocol)
        self._clock = clock
        self._timeout = timeout
        self._parser = ProxyHeaderParser()
        self._timer: IDelayedCall | None = None
        self.header: ProxyHeader | None = None
        self._handedOver = False
        self._rejected = False
        self._lost = False
        self._paused = False
        self._held = b""

    # The real transport's side

    def makeConnection(self, transport: ITransport) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._timeout, self._headerTimedOut)

    def dataReceived(self, data: bytes) -> None:
        if self._handedOver:
            if self._held:
                data, self._held = self._held + data, b""
            self.wrappedProtocol.dataReceived(data)
            return
        if self._rejected:
            return
        try:
            header, remaining = self._parser.feed(data)
        except InvalidProxyHeader as e:
            self._reject("closing connection from {peer}: {reason}", reason=str(e))
            return
        if header is None:
            return
        self._cancelTimer()
        self.header = header
        self._handedOver = True
        self.wrappedProtocol.makeConnection(self)
        if not remaining or self._lost or self.disconnecting:
            return
        if self._paused:
            # The wrapped protocol asked not to be given data yet.
            self._held = remaining
        else:
            self.wrappedProtocol.dataReceived(remaining)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self.connected = False
        self._cancelTimer()
        self.factory.unregisterProtocol(self)
        if self._handedOver:
            self.wrappedProtocol.connectionLost(reason)

    # The wrapped protocol's transport

    def getPeer(self) -> IAddress:
        if self.header is not None and self.header.source is not None:
            return self.header.source
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        if self.header is not None and self.header.destination is not None:
            return self.header.destination
        assert self.transport is not None
        return self.transport.getHost()

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()  # type: ignore[union-attr]
        if self._held and not self._lost and not self.disconnecting:
            held, self._held = self._held, b""
            self.wrappedProtocol.dataReceived(held)

    def stopProducing(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    # The header's deadline

    def _headerTimedOut(self) -> None:
        self._timer = None
        self._reject("closing connection from {peer}: no complete PROXY header within {timeout}s")

    def _reject(self, message: str, **fields: object) -> None:
        self._rejected = True
        self._cancelTimer()
        assert self.transport is not None
        self.log.warn(
            message, peer=_describe(self.transport.getPeer()), timeout=self._timeout, **fields
        )
        self.disconnecting = True
        self.transport.loseConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class ProxyHeaderFactory(WrappingFactory[ProxyHeaderWrapper]):
    """
    Wraps a server factory so that every connection starts with a PROXY
    header (v1 or v2) before the wrapped protocol sees it.

    @ivar timeout: seconds a connection has to complete its header.
    """

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.timeout = timeout

    # IProtocolFactory lets a factory refuse a connection with None, which
    # WrappingFactory's annotation does not admit.
    def buildProtocol(self, addr: IAddress | None) -> ProxyHeaderWrapper | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return ProxyHeaderWrapper(self, wrapped, self.clock, self.timeout)

    def logPrefix(self) -> str:
        wrapped = self.wrappedFactory
        prefix = wrapped.logPrefix() if hasattr(wrapped, "logPrefix") else type(wrapped).__name__
        return f"{prefix} (PROXY)"
