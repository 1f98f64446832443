"""
Tests for popproxy._directsend: bytes go straight to the socket only when
nothing is queued before them, and never out of order, over a real
loopback TCP connection whose Twisted transport is driven by hand (a
MemoryReactor records write registrations; no reactor runs).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Server
from twisted.internet.testing import MemoryReactor, StringTransport

from popproxy._directsend import sendNow


class Pair:
    """
    A loopback TCP connection: C{transport} wraps one end, C{peer} is the
    other end as a plain blocking socket.
    """

    def __init__(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, address = listener.accept()
        listener.close()
        accepted.setblocking(False)
        self.reactor = MemoryReactor()
        self.transport = Server(accepted, Protocol(), address, None, 0, self.reactor)  # type: ignore[arg-type]

    @property
    def registered(self) -> bool:
        """
        The transport waits for a write event (it has queued bytes).
        """
        return self.transport in self.reactor.getWriters()

    def flush(self) -> bytes:
        """
        Play the reactor until the transport has sent everything; return
        all the peer received.
        """
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.registered:
                self.transport.doWrite()
            select.select([self.peer], [], [], 0.01)
            received += self.readAvailable()
            if not self.registered:
                return received + self.readAvailable()
        raise AssertionError("the transport never emptied its buffer")

    def readAvailable(self) -> bytes:
        self.peer.setblocking(False)
        chunks = []
        try:
            while chunk := self.peer.recv(1 << 20):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        self.peer.setblocking(True)
        return b"".join(chunks)

    def close(self) -> None:
        self.peer.close()
        self.transport.socket.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    connection = Pair()
    yield connection
    connection.close()


def test_idleTransportSendsAtOnce(pair: Pair) -> None:
    """
    With nothing queued, the bytes are on the socket before any reactor
    turn, and the transport does not wait for a write event.
    """
    sendNow(pair.transport, b"+OK hello\r\n")
    assert not pair.registered
    assert pair.peer.recv(100) == b"+OK hello\r\n"


def test_queuedBytesKeepTheirPlace(pair: Pair) -> None:
    """
    Bytes queued by write() go first: sendNow queues behind them.
    """
    pair.transport.write(b"first ")
    sendNow(pair.transport, b"second")
    assert pair.registered
    assert pair.readAvailable() == b""
    assert pair.flush() == b"first second"


def test_whatTheKernelRefusesIsQueued(pair: Pair) -> None:
    """
    When the socket buffer fills, the rest is queued in order and sent on
    later write events; later sends queue behind it.
    """
    pair.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    big = bytes(range(256)) * 32768  # 8 MiB, more than the socket buffers hold
    sendNow(pair.transport, big)
    assert pair.registered
    sendNow(pair.transport, b"tail")
    assert pair.flush() == big + b"tail"


def test_pullProducerKeepsWriteEvents(pair: Pair) -> None:
    """
    A pull producer is asked for more only by write events, so its bytes
    are queued (sent on the next write event), never sent past it.
    """

    class OneChunk:
        def __init__(self) -> None:
            self.calls = 0

        def resumeProducing(self) -> None:
            self.calls += 1
            if self.calls == 1:
                sendNow(pair.transport, b"chunk")
            elif self.calls == 2:
                pair.transport.unregisterProducer()

        def stopProducing(self) -> None:
            pass

    producer = OneChunk()
    pair.transport.registerProducer(producer, False)
    assert pair.registered
    assert pair.flush() == b"chunk"
    assert producer.calls == 2


def test_otherTransportsUseWrite() -> None:
    """
    Transports that are not plain TCP (here an in-memory one; TLS alike)
    get an ordinary write().
    """
    transport = StringTransport()
    sendNow(transport, b"data")
    assert transport.value() == b"data"


def test_tlsConnectionUsesWrite(pair: Pair) -> None:
    """
    Once TLS is on, bytes must go through the TLS layer: no direct send.
    """
    pair.transport.TLS = True
    written: list[bytes] = []
    pair.transport.write = written.append  # type: ignore[method-assign]
    sendNow(pair.transport, b"secret")
    assert written == [b"secret"]
    assert pair.readAvailable() == b""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=300_000)), max_size=8))
def test_anyMixKeepsOrder(writes: list[tuple[bool, bytes]]) -> None:
    """
    Any mix of write() and sendNow(), big and small, arrives complete and
    in order.
    """
    pair = Pair()
    try:
        received = b""
        for direct, data in writes:
            if direct:
                sendNow(pair.transport, data)
            else:
                pair.transport.write(data)
            received += pair.readAvailable()
        received += pair.flush()
        assert received == b"".join(data for _, data in writes)
    finally:
        pair.close()
