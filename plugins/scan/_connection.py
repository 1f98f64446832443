"""
What every clamd connection of the plugin's clients shares: the transport
a scan writes to, the producer that streams INSTREAM frames as fast as the
transport sends them, TCP_NODELAY, and a factory handing out one protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, cast

from twisted.internet.interfaces import IAddress, IPullProducer, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from zope.interface import implementer

from ._wire import END_OF_STREAM


class Connection(Protocol):
    """
    What the scan needs of its transport (TCP and UNIX transports alike).
    """

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def abortConnection(self) -> None: ...

    def loseConnection(self) -> None: ...


@implementer(IPullProducer)
class FrameProducer:
    """
    Writes the next INSTREAM frame each time the transport has sent what it
    had, so a big stream is never buffered whole a second time.
    """

    def __init__(self, consumer: Connection, frames: Iterator[bytes]) -> None:
        self._consumer = consumer
        self._frames = frames
        self.done = False

    def resumeProducing(self) -> None:
        if self.done:
            return
        frame = next(self._frames)
        self._consumer.write(frame)
        if frame == END_OF_STREAM:
            self.stopProducing()

    def stopProducing(self) -> None:
        if not self.done:
            self.done = True
            self._consumer.unregisterProducer()


def noDelay(transport: object) -> None:
    """
    Send small frames at once: without it the small last frame of a stream
    waits for clamd's delayed ACK (Nagle's algorithm), about 40 ms per scan.
    """
    if ITCPTransport.providedBy(transport):
        try:
            cast(ITCPTransport, transport).setTcpNoDelay(True)
        except OSError:
            pass  # a UNIX socket


class OneProtocolFactory(Factory):
    """
    Hands out one given protocol, quietly (a factory logs every start and
    stop unless told otherwise).
    """

    noisy = False

    def __init__(self, protocol: TwistedProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> TwistedProtocol:
        return self._protocol
