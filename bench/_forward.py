"""
The C{forward} reference target: the least any Twisted relay does, passing
bytes between a client and the upstream without looking at them.

It is what popproxy would cost if it did no POP3 work at all: one reactor
turn per chunk, Twisted's buffered writes, system calls made from Python.
Between nginx and popproxy in the tables, it shows how much of popproxy's
gap to nginx any Python/Twisted relay pays.  Run as a process of its own
(on the default reactor, as twistd runs popproxy), so its CPU and memory are
measured like nginx's::

    python3 bench/_forward.py LISTEN_PORT UPSTREAM_PORT

L{ForwarderProcess} starts and stops it for the benchmark.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IAddress, IConnector, IReactorTCP
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.tcp import Connection

    from bench._process import ManagedProcess

LOOPBACK = "127.0.0.1"


class ForwardError(RuntimeError):
    """
    The forwarder did not start.
    """


class _Side(Protocol):
    """
    One end of a relayed connection; what it receives goes to its peer.

    Each transport is the other's streaming producer, so a peer that cannot
    write fast enough pauses reading here.  When either end closes, the
    other is closed once it has sent what it holds.
    """

    peer: _Side | None = None
    tcp: Connection

    def connectionMade(self) -> None:
        self.tcp = cast("Connection", self.transport)
        # Without it Nagle's algorithm and delayed ACKs stall each response ~40 ms.
        self.tcp.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer.tcp.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            # Twisted has already told the peer to close, but a paused
            # producer (this closed transport) would keep it open forever.
            peer.tcp.unregisterProducer()
            peer.tcp.loseConnection()


class _ClientSide(_Side):
    """
    The accepted client connection; it connects to the upstream and holds
    what the client sends until that connection is up.
    """

    def __init__(self, reactor: IReactorTCP, upstreamPort: int) -> None:
        self.reactor = reactor
        self.upstreamPort = upstreamPort
        self.early: list[bytes] = []
        self.open = True

    def connectionMade(self) -> None:
        super().connectionMade()
        self.reactor.connectTCP(LOOPBACK, self.upstreamPort, _UpstreamFactory(self))

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            super().dataReceived(data)

    def upstreamConnected(self, upstream: _Side) -> None:
        if not self.open:
            upstream.tcp.loseConnection()
            return
        self.peer, upstream.peer = upstream, self
        self.tcp.registerProducer(upstream.tcp, True)
        upstream.tcp.registerProducer(self.tcp, True)
        early, self.early = self.early, []
        for data in early:
            upstream.tcp.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        super().connectionLost(reason)


class _UpstreamSide(_Side):
    """
    The connection to the upstream, made for one client.
    """

    def __init__(self, client: _ClientSide) -> None:
        self.client = client

    def connectionMade(self) -> None:
        super().connectionMade()
        self.client.upstreamConnected(self)


class _UpstreamFactory(ClientFactory):
    def __init__(self, client: _ClientSide) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> _UpstreamSide:
        return _UpstreamSide(self.client)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.client.tcp.loseConnection()


class _ListenFactory(ServerFactory):
    def __init__(self, reactor: IReactorTCP, upstreamPort: int) -> None:
        self.reactor = reactor
        self.upstreamPort = upstreamPort

    def buildProtocol(self, addr: IAddress | None) -> _ClientSide:
        return _ClientSide(self.reactor, self.upstreamPort)


def forward(reactor: IReactorTCP, listenPort: int, upstreamPort: int) -> None:
    """
    Relay every connection to 127.0.0.1:C{listenPort} to
    127.0.0.1:C{upstreamPort}.
    """
    # popproxy's TCP listeners have this backlog too; Twisted's 50 drops clients.
    reactor.listenTCP(
        listenPort, _ListenFactory(reactor, upstreamPort), backlog=1024, interface=LOOPBACK
    )


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    listenPort, upstreamPort = (int(port) for port in argv)
    forward(reactor, listenPort, upstreamPort)
    reactor.run()


class ForwarderProcess:
    """
    One C{bench/_forward.py} process relaying to one upstream.
    """

    def __init__(self, upstreamPort: int, label: str = "forward") -> None:
        self.upstreamPort = upstreamPort
        self.label = label
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-forward-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.port = 0
        self._process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> None:
        # Imported here, not above: the forwarder process itself loads only
        # Twisted, so its RSS is Twisted's and nothing of the benchmark's.
        from bench._process import ManagedProcess, freePort, waitForPort

        self.port = freePort()
        self._process = ManagedProcess(
            self.label,
            [sys.executable, str(Path(__file__).resolve()), str(self.port)]
            + [str(self.upstreamPort)],
            cwd=self.directory,
            logPath=self.directory / "forward.out",
        )
        self._process.start()
        try:
            waitForPort(self.port, timeout)
        except TimeoutError as e:
            raise ForwardError(f"{e}\n{self._process.output()}") from None
        if not self._process.running:
            raise ForwardError(f"the forwarder exited at start-up:\n{self._process.output()}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
