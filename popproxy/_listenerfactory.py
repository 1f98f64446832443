"""
The factory a listening port keeps for its whole life: L{ListenerFactory}
builds each new connection with the factory the configuration read last
(a reload replaces it), while the connections it built before keep theirs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol


class ListenerFactory(Factory):
    """
    Builds each connection with L{current}, which a reload may replace.

    The port starts and stops this factory; it passes the start and the
    stop on to the factory in use, so the one replaced is stopped and its
    successor started (their own log lines say so).

    @ivar current: the factory new connections come from.
    """

    noisy = False

    def __init__(self, current: Any) -> None:
        self.current = current

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        built: Protocol | None = self.current.buildProtocol(addr)
        return built

    def replace(self, factory: Any) -> None:
        """
        Build the next connections with C{factory}; the connections made
        so far are left as they are.
        """
        previous, self.current = self.current, factory
        if self.numPorts:
            factory.doStart()
            previous.doStop()

    def startFactory(self) -> None:
        self.current.doStart()

    def stopFactory(self) -> None:
        self.current.doStop()

    def logPrefix(self) -> str:
        prefix: str = self.current.logPrefix()
        return prefix
