"""
Tests for popproxy._clientwire: what reaches the client (a StringTransport)
for each kind of answer, dot-stuffed at this boundary only, big messages
streamed through a pull producer the test drives, and the upstream paused
while the client cannot keep up.
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet.interfaces import IPullProducer, IPushProducer

from popproxy._clientwire import ClientWire, MessageSender
from popproxy._framing import StatusLine, stuff
from popproxy._retrievalflow import (
    ChunkSource,
    Continuation,
    Refusal,
    Relayed,
    Spool,
    Streamed,
    WholeMessage,
)
from tests.typedtransport import ProducerTransport

#: A message whose lines start with dots, one of them right where the
#: first 64 KiB chunk of a ChunkSource ends.
MESSAGE = (
    b"Subject: dots\r\n\r\n.first\r\n"
    + b"x" * (65536 - 29)
    + b"\r\n"
    + b".across the chunk boundary\r\n"
    + b"..two\r\n.\r\nlast line without CRLF"
)


def wire() -> tuple[ClientWire, ProducerTransport]:
    transport = ProducerTransport()
    client = ClientWire()
    client.attach(transport)
    return client, transport


class FakeUpstream:
    """
    What the throttle calls on the upstream connection.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseReading(self) -> None:
        self.calls.append("pause")

    def resumeReading(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")


class Source:
    """
    A chunked message that notes when it is closed.
    """

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks
        self.closed = 0

    def chunks(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        self.closed += 1


def drive(transport: ProducerTransport, sent: list[str]) -> int:
    """
    Ask the registered pull producer for more until it says it is done;
    how many times it was asked.
    """
    rounds = 0
    while not sent:
        assert IPullProducer.providedBy(transport.producer) and not transport.streaming
        IPullProducer(transport.producer).resumeProducing()
        rounds += 1
        assert rounds < 100
    return rounds


def test_writeCounts() -> None:
    """
    Every octet written, line or raw, reaches the client and is counted.
    """
    client, transport = wire()
    client.write(b"+OK ready\r\n")
    client.reply(b"-ERR no")
    assert transport.value() == b"+OK ready\r\n-ERR no\r\n"
    assert client.bytesOut == len(transport.value())


def test_deliverRelayedVerbatim() -> None:
    """
    An answer relayed as received goes out byte for byte, its body not
    stuffed a second time.
    """
    client, transport = wire()
    body = b"Subject: a\r\n\r\n..dot\r\n.\r\n"
    client.deliver(Relayed(b"+OK 22 octets", body))
    assert transport.value() == b"+OK 22 octets\r\n" + body
    assert client.bytesOut == len(transport.value())


def test_deliverWholeMessageStuffed() -> None:
    """
    A message the chain produced is dot-stuffed on the way out and ends
    with the terminating line (a CRLF added if it lacked one).
    """
    client, transport = wire()
    client.deliver(WholeMessage(b"+OK message follows", b".a\r\n..b\r\n.\r\nend"))
    assert transport.value() == b"+OK message follows\r\n..a\r\n...b\r\n..\r\nend\r\n.\r\n"


def test_deliverContinuationAndRefusal() -> None:
    """
    The rest of a message the keepalive began continues mid-line, still
    stuffed; a refusal is one line.
    """
    client, transport = wire()
    client.deliver(Continuation(b"der: x\r\n.dot\r\n"))
    assert transport.value() == b"der: x\r\n..dot\r\n.\r\n"
    transport.clear()
    client.deliver(Refusal(b"-ERR [SYS/TEMP] scanner unavailable"))
    assert transport.value() == b"-ERR [SYS/TEMP] scanner unavailable\r\n"


def test_streamChunkSource() -> None:
    """
    A streamed message goes out status line first, then one chunk each
    time the transport pulls, dot-stuffed across chunk boundaries, with
    the terminating line; then sent is called and the producer leaves.
    """
    client, transport = wire()
    sent: list[str] = []
    data = memoryview(MESSAGE)
    client.stream(Streamed(b"+OK big message", ChunkSource(data)), lambda: sent.append("sent"))
    assert transport.value() == b"+OK big message\r\n"
    assert IPullProducer.providedBy(transport.producer)
    assert drive(transport, sent) == 3  # two chunks, then the end
    assert transport.value() == b"+OK big message\r\n" + stuff(MESSAGE)
    assert sent == ["sent"]
    assert transport.registeredProducer() is None
    assert client.bytesOut == len(transport.value())
    assert _released(data)  # the source was closed


def _released(view: memoryview) -> bool:
    try:
        len(view)
    except ValueError:
        return True
    return False


def test_streamSpoolWithPrefix() -> None:
    """
    A message spooled to a file streams with its prefix (the head the
    chain rewrote) first, all of it dot-stuffed, and the spool is closed.
    """
    spool = Spool(threshold=16)
    spool.statusReceived(StatusLine(b"+OK"))
    spool.bodyReceived(stuff(b".body line\r\nmore\r\n"))
    spool.responseFinished()
    client, transport = wire()
    sent: list[str] = []
    client.stream(
        Streamed(b"+OK 40 octets", spool, prefix=b".X-Scanned: yes\r\n"),
        lambda: sent.append("sent"),
    )
    drive(transport, sent)
    assert transport.value() == b"+OK 40 octets\r\n" + stuff(
        b".X-Scanned: yes\r\n.body line\r\nmore\r\n"
    )
    assert spool.read() == b""  # closed: nothing kept


def test_throttle() -> None:
    """
    While throttled, a client whose buffer is full pauses reading from the
    upstream and resumes it later; unthrottle lets go (once).
    """
    client, transport = wire()
    upstream = FakeUpstream()
    client.throttle(upstream)  # type: ignore[arg-type]
    assert IPushProducer.providedBy(transport.producer) and transport.streaming
    producer = IPushProducer(transport.producer)
    producer.pauseProducing()
    producer.resumeProducing()
    producer.stopProducing()
    assert upstream.calls == ["pause", "resume", "close"]
    client.unthrottle()
    assert transport.registeredProducer() is None
    client.unthrottle()  # not throttled any more: nothing to unregister


def test_streamWhileThrottled() -> None:
    """
    Streaming replaces the throttle by the message's pull producer.
    """
    client, transport = wire()
    client.throttle(FakeUpstream())  # type: ignore[arg-type]
    sent: list[str] = []
    client.stream(Streamed(b"+OK", ChunkSource(memoryview(b"hi\r\n"))), lambda: sent.append("s"))
    assert not transport.streaming
    drive(transport, sent)
    assert transport.value() == b"+OK\r\nhi\r\n.\r\n"
    assert transport.producer is None


def test_senderStopClosesTheSource() -> None:
    """
    A client gone mid-stream: the sender closes its source, writes nothing
    more, and never reports the message sent.
    """
    source = Source(b"one\r\n", b"two\r\n")
    writes: list[bytes] = []
    sent: list[str] = []
    sender = MessageSender(source, b"", writes.append, lambda: sent.append("sent"))
    sender.resumeProducing()
    sender.stopProducing()
    sender.resumeProducing()
    assert b"".join(writes) == b"one"  # the stuffer held the CRLF back; no ".\r\n"
    assert source.closed == 1
    assert sent == []


def test_senderFinishesOnce() -> None:
    """
    After the terminating line, more pulls write nothing and sent is not
    called again; the source is closed once.
    """
    source = Source(b"a\r\n")
    writes: list[bytes] = []
    sent: list[str] = []
    sender = MessageSender(source, b"", writes.append, lambda: sent.append("sent"))
    for _ in range(4):
        sender.resumeProducing()
    assert b"".join(writes) == b"a\r\n.\r\n"
    assert sent == ["sent"]
    assert source.closed == 1
