"""
One filtered RETR or TOP, from the request to what the client gets.

L{RetrievalFlow} takes one retrieval (message number, TOP line count), the
filter chain's L{MessageHook}, the session's L{MailboxView} and narrow
callables to ask the upstream for a response (L{UpstreamRequests}), and
produces one frozen L{Delivery}: the upstream's answer relayed verbatim, a
message to dot-stuff and send, a message to stream from memory or from the
spool file, a refusal line, or a cut.  It owns the TOP mode, the oversize
policy, the keepalive and the spool; it never holds the session and never
dot-stuffs: the session's send step does that, at the wire boundary.

The keepalive is the one thing here that writes to the client (through the
C{write} callable it is given): header bytes sent while a slow chain runs,
which become part of the delivered message.
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from popproxy._config import ChainConfig
from popproxy._framing import StatusLine, UnstuffingScanner, restuff, stuff
from popproxy._mailboxview import MailboxView
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._printable import PrintableLogger
from popproxy._retrieval import MessageHook, TemporaryFailure
from popproxy._verdicts import FilterContext, contextWith

log = PrintableLogger()

#: The status line of every TOP answer the proxy writes itself.
TOP_STATUS = b"+OK top of message follows"

#: The size of one noted dot place (a Python int) at most: an offset into a
#: message held in memory, counted as the largest such int.
_OFFSET_OBJECT_SIZE = sys.getsizeof(1 << 62)

#: How much of an oversize message TOP cuts its answer from.
_OVERSIZE_TOP_HEAD = 1 << 20


def _message(text: str) -> bytes:
    return text.encode("ascii")


# What the client gets: one frozen value per retrieval.


@dataclass(frozen=True, slots=True)
class Relayed:
    """
    The upstream's answer as received: C{status} and the dot-stuffed
    C{wire} body, terminating line included.  For a message no filter
    changed it is made from the message at delivery (L{deliveryOf}): a dot
    put back where each line lost one (L{restuff}), which gives the body
    as received; or, when those places were not noted, the message
    dot-stuffed again, which gives the body as received from any server
    that stuffs as RFC 1939 says (and the same message for the client
    from any other).
    """

    status: bytes
    wire: bytes


@dataclass(frozen=True, slots=True)
class WholeMessage:
    """
    A message (not dot-stuffed) to send below C{status}.
    """

    status: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class Continuation:
    """
    The rest of a message whose first bytes the keepalive sent already
    (part of a header line, never at a line start).
    """

    rest: bytes


@dataclass(frozen=True, slots=True)
class Streamed:
    """
    A big message streamed from C{source} below C{status}, C{prefix} first
    (not dot-stuffed); the sender closes C{source} when done.
    """

    status: bytes
    source: ChunkSource | Spool
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    One C{-ERR} (or the upstream's own) line; the message stays upstream.
    """

    line: bytes


@dataclass(frozen=True, slots=True)
class Cut:
    """
    C{+OK} is out already and the message cannot follow: the connection is
    closed without the terminating line, so no client stores it.
    """

    reason: str


Delivery = Relayed | WholeMessage | Continuation | Streamed | Refusal | Cut


@dataclass(frozen=True, slots=True)
class Filtered:
    """
    A message as the chain delivered it, and if the chain left it
    unchanged, the upstream's status line, so it is relayed as it came:
    rebuilt from the message and C{dotOffsets}, where the lines that lost
    a leading dot start (L{restuff}: no search, no second copy kept), or
    stuffed anew when they were not noted (L{None}).
    """

    message: bytes
    status: bytes | None
    dotOffsets: tuple[int, ...] | None = None

    @property
    def footprint(self) -> int:
        """
        The octets this entry keeps in memory: the message, and the noted
        dot places (a tuple of ints, each a Python object of its own: up to
        65,536 of them can hold more than a small message).
        """
        if self.dotOffsets is None:
            return len(self.message)
        return (
            len(self.message)
            + sys.getsizeof(self.dotOffsets)
            + _OFFSET_OBJECT_SIZE * len(self.dotOffsets)
        )


def deliveryOf(entry: Filtered, command: str, lines: int | None) -> Delivery:
    """
    What the client gets for C{command} (C{"RETR"} or C{"TOP"} with
    C{lines}) from a filtered (or cached) message.
    """
    if command == "TOP":
        return WholeMessage(TOP_STATUS, topOf(entry.message, lines or 0))
    if entry.status is not None:
        offsets = entry.dotOffsets
        wire = stuff(entry.message) if offsets is None else restuff(entry.message, offsets)
        return Relayed(entry.status, wire)
    return WholeMessage(_message(f"+OK {len(entry.message)} octets"), entry.message)


def topOf(message: bytes, lines: int) -> bytes:
    """
    The headers, the empty line and the first C{lines} body lines of
    C{message} (RFC 1939 TOP).
    """
    end = message.find(b"\r\n\r\n")
    if end == -1:
        return message
    headerEnd = end + 4
    position = headerEnd
    for _ in range(lines):
        following = message.find(b"\r\n", position)
        if following == -1:
            return message
        position = following + 2
    return message[:position]


def continueStuffed(rest: bytes) -> bytes:
    """
    Dot-stuff the rest of a message whose first bytes (part of a header
    line, never at a line start) are already on the wire.
    """
    return stuff(b"x" + rest)[1:]


class Spool:
    """
    Receives a multi-line response body and undoes its dot-stuffing as it
    arrives, in the one pass that finds its end (L{UnstuffingScanner},
    which the upstream's parser feeds directly: L{bodyScanner}).  Up to
    C{threshold} octets the message is kept in memory, once; beyond that it
    goes to a temporary file, so a big message costs memory only when (and
    if) it is parsed.  The file is made in C{directory} (C{[chain]
    spool_directory}; C{None}: the system's temporary directory) and has no
    name: it is gone once closed.

    @ivar finished: fires with this spool once the response is complete.
    @ivar size: the size of the unstuffed message (known once complete).
    """

    def __init__(self, threshold: int, directory: Path | None = None) -> None:
        self._threshold = threshold
        self._directory = directory
        self.finished: Deferred[Spool] = Deferred()
        self.bodyScanner = UnstuffingScanner(self._store)
        # The first piece alone (a message that came in one read is kept
        # without a copy), then a buffer the pieces are appended to.
        self._first = b""
        self._buffer: io.BytesIO | None = None
        self._message = b""
        self._file: IO[bytes] | None = None
        self.size = 0
        self.status: StatusLine | None = None
        self.inBody = False

    def statusReceived(self, status: StatusLine) -> None:
        self.status = status

    def bodyReceived(self, data: bytes) -> None:
        """
        Dot-stuffed octets of the body (for a caller that did not hand
        L{bodyScanner} to the parser).
        """
        self.bodyScanner.feed(data)

    def _store(self, piece: bytes) -> None:
        self.size += len(piece)
        if self._file is not None:
            self._file.write(piece)
            return
        if self._buffer is None and not self._first:
            self._first = piece
        else:
            if self._buffer is None:
                self._buffer = io.BytesIO()
                self._buffer.write(self._first)
                self._first = b""
            self._buffer.write(piece)
        if self.size > self._threshold:
            self._file = tempfile.TemporaryFile(prefix="popproxy-spool-", dir=self._directory)
            self._file.write(self._held())
            self._first, self._buffer = b"", None

    def _held(self) -> bytes:
        return self._first if self._buffer is None else self._buffer.getvalue()

    def responseFinished(self) -> None:
        if self._file is None:
            # getvalue() hands over the buffer itself: no copy.
            self._message = self._held()
            self._first, self._buffer = b"", None
        self.finished.callback(self)

    @property
    def dotOffsets(self) -> tuple[int, ...] | None:
        """
        Once complete, where the lines that lost a leading dot start in a
        message kept in memory (L{UnstuffingScanner.dotOffsets}); L{None}
        for a message spooled to a file (it is stuffed anew) or with too
        many of them to note.
        """
        offsets = self.bodyScanner.dotOffsets
        return None if self._file is not None or offsets is None else tuple(offsets)

    def read(self) -> bytes:
        """
        The whole (unstuffed) message.
        """
        if self._file is None:
            return self._message
        self._file.seek(0)
        return self._file.read()

    def head(self, size: int) -> bytes:
        if self._file is None:
            return self._message[:size]
        self._file.seek(0)
        return self._file.read(size)

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        if self._file is None:
            message = self._message
            for start in range(0, len(message), size):
                yield message[start : start + size]
            return
        self._file.seek(0)
        while chunk := self._file.read(size):
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._first, self._buffer = b"", None
        self._message = b""


class ChunkSource:
    """
    A message in memory, handed out in chunks (without copying it).
    """

    def __init__(self, data: memoryview) -> None:
        self._data = data

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        for start in range(0, len(self._data), size):
            yield bytes(self._data[start : start + size])

    def close(self) -> None:
        self._data.release()


class Keepalive:
    """
    Keeps a client from timing out while a slow filter chain runs.

    After C{after} seconds it sends the C{+OK} line and starts a header
    line, C{X-Popproxy-Wait:}, adding one character to it every
    C{interval} seconds.  Real clients' read timeouts are reset by every
    byte, and the line becomes a harmless header of the delivered message,
    so nothing sent early can corrupt it.  A chain that fails after that
    can only cut the connection (no final dot), so the client stores
    nothing.
    """

    def __init__(
        self, write: Callable[[bytes], None], clock: IReactorTime, after: float, interval: float
    ) -> None:
        self._write = write
        self._clock = clock
        self._interval = interval
        self.prefix = b""
        self.sent = b""
        self.started = False
        self._call: IDelayedCall | None = None
        if after > 0:
            self._call = clock.callLater(after, self._begin)

    def _begin(self) -> None:
        self.started = True
        self.prefix = b"X-Popproxy-Wait: "
        self._write(b"+OK message follows\r\n" + self.prefix)
        self._call = self._clock.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        self.prefix += b"."
        self._write(b".")
        self._call = self._clock.callLater(self._interval, self._tick)

    def stop(self) -> bool:
        """
        Stop; return whether anything was sent.
        """
        call = self._call
        if call is not None and call.active():
            call.cancel()
        self._call = None
        self.sent = self.prefix
        return self.started


class UpstreamRequests(Protocol):
    """
    What a retrieval needs from the upstream link
    (L{popproxy._upstreamlink.UpstreamLink}).
    """

    def shortCommand(self, line: bytes) -> Deferred[StatusLine]:
        """
        Send C{line}; fire with the status line of its one-line answer.
        """
        ...

    def longCommand(self, line: bytes) -> Deferred[tuple[StatusLine, bytes]]:
        """
        Send C{line}; fire with the status line and the body of its answer.
        """
        ...

    def spool(self, line: bytes, into: Spool) -> Deferred[Spool]:
        """
        Send C{line} and receive its multi-line answer into C{into}.
        """
        ...


@dataclass(frozen=True, slots=True)
class RetrievalRequest:
    """
    One RETR or TOP as the client asked for it.

    @ivar context: what the chain is told, without the UID (looked up here).
    """

    command: str
    index: int
    lines: int | None
    context: FilterContext


class RetrievalFlow:
    """
    One RETR or TOP through the filter chain: L{run} yields its L{Delivery}.
    """

    def __init__(
        self,
        request: RetrievalRequest,
        *,
        hook: MessageHook,
        mailbox: MailboxView[Filtered],
        chain: ChainConfig,
        upstream: UpstreamRequests,
        write: Callable[[bytes], None],
        clock: IReactorTime,
        closing: Callable[[], bool],
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """
        @param write: sends keepalive bytes to the client as they are due.
        @param closing: whether the session has ended meanwhile (its answer
            is then dropped and nothing is cached).
        @param metrics: counts the retrievals the chain does not see
            (cached, refused upstream, oversize); the chain counts its own.
        """
        self._request = request
        self._hook = hook
        self._mailbox = mailbox
        self._chain = chain
        self._upstream = upstream
        self._write = write
        self._clock = clock
        self._closing = closing
        self._metrics = metrics
        # RETR, and TOP in "full" mode, fetch and filter the whole message,
        # so TOP shows the headers RETR will deliver (tags included) and
        # "TOP n 99999999" (fetchmail) is a full retrieval through the chain.
        self._partial = request.command == "TOP" and chain.top == "partial"

    async def run(self) -> Delivery | None:
        """
        Retrieve, filter and decide what the client gets; L{None} when the
        session ended meanwhile.
        """
        request = self._request
        cached = self._mailbox.cached(request.index)
        if cached is not None:
            self._metrics.retrieved(request.command, "cached")
            return deliveryOf(cached, request.command, request.lines)
        uid = await self._uid()
        context = contextWith(request.context, uidl=uid, partial=self._partial)
        spool = await self._upstream.spool(
            self._fetchLine(), Spool(self._chain.spoolThreshold, self._chain.spoolDirectory)
        )
        status = spool.status
        assert status is not None
        if not status.ok:
            spool.close()
            self._metrics.retrieved(request.command, "upstream_refused")
            return Refusal(status.line)
        if spool.size > self._chain.maxSize:
            self._metrics.retrieved(request.command, "oversize")
            return self._oversize(spool, context)
        return await self._filter(spool, status, context)

    def _fetchLine(self) -> bytes:
        request = self._request
        if self._partial:
            return b"TOP %d %d" % (request.index, request.lines or 0)
        return b"RETR %d" % request.index

    async def _uid(self) -> str | None:
        """
        The message's UID for the chain's context: remembered, or from the
        whole listing (which is then remembered), or from C{UIDL n}.
        """
        index = self._request.index
        known = self._mailbox.uidOf(index)
        if known is not None:
            return known
        if self._mailbox.lookupWholeListing():
            status, body = await self._upstream.longCommand(b"UIDL")
            if status.ok:
                self._mailbox.noteUidListing(body)
            return self._mailbox.uidOf(index)
        status = await self._upstream.shortCommand(b"UIDL %d" % index)
        # "+OK 3 uid" -> "uid"
        parts = status.line.split(b" ")
        return parts[2].decode("ascii", "replace") if status.ok and len(parts) > 2 else None

    def _oversize(self, spool: Spool, context: FilterContext) -> Delivery:
        """
        A message above the maximum size is not parsed: by policy it is
        delivered untouched below a header saying so (streamed from the
        spool file), or refused for now.
        """
        log.warn(
            "session {session}: {command} {index} (UIDL {uidl}) is {size} octets, over "
            "max_size: {policy}",
            session=context.session,
            command=context.command,
            index=context.index,
            uidl=context.uidl,
            size=spool.size,
            policy=self._chain.oversize,
        )
        if self._chain.oversize == "tempfail":
            spool.close()
            return Refusal(b"-ERR [SYS/TEMP] the message is too large to be filtered")
        header = _message(f"X-Popproxy-Unchecked: too large to filter ({spool.size} octets)\r\n")
        if context.command == "TOP" and context.lines is not None:
            # Cut from the spooled original, without parsing it.
            message = header + topOf(spool.head(_OVERSIZE_TOP_HEAD), context.lines)
            spool.close()
            return WholeMessage(TOP_STATUS, message)
        return Streamed(_message(f"+OK {spool.size + len(header)} octets"), spool, header)

    async def _filter(
        self, spool: Spool, status: StatusLine, context: FilterContext
    ) -> Delivery | None:
        original = spool.read()
        dotOffsets = spool.dotOffsets
        spool.close()
        processing = self._hook.processMessage(context, original)
        # A chain that answered at once needs no keepalive timer.
        after = 0 if processing.called else self._chain.keepaliveAfter
        keepalive = Keepalive(self._write, self._clock, after, self._chain.keepaliveInterval)
        try:
            message = await processing
        except Exception:
            return self._failed(Failure(), keepalive)
        return self._delivered(message, status, original, dotOffsets, keepalive)

    def _delivered(
        self,
        message: bytes,
        status: StatusLine,
        original: bytes,
        dotOffsets: tuple[int, ...] | None,
        keepalive: Keepalive,
    ) -> Delivery | None:
        if self._closing():
            keepalive.stop()
            return None
        request = self._request
        changed = message is not original and message != original
        if keepalive.stop():
            # Part of a header line is already on the wire: finish it and
            # deliver the message below it.
            message = keepalive.prefix + b"\r\n" + message
            changed = True
        entry = Filtered(message, None) if changed else Filtered(original, status.line, dotOffsets)
        if not self._partial:
            self._mailbox.remember(request.index, entry, len(entry.message), len(original))
        if keepalive.started:
            wholeTop = request.command == "TOP" and not self._partial
            out = topOf(message, request.lines or 0) if wholeTop else message
            return Continuation(out[len(keepalive.sent) :])
        if self._partial:
            return deliveryOf(entry, "RETR", None)
        if request.command == "RETR" and len(entry.message) > self._chain.spoolThreshold:
            # Big: stuff and send in chunks, never a second whole copy.
            statusLine = entry.status or _message(f"+OK {len(message)} octets")
            return Streamed(statusLine, ChunkSource(memoryview(message)))
        return deliveryOf(entry, request.command, request.lines)

    def _failed(self, failure: Failure, keepalive: Keepalive) -> Delivery | None:
        started = keepalive.stop()
        if self._closing():
            return None
        context = self._request
        if failure.check(TemporaryFailure):
            reason = str(failure.value)
        else:
            log.failure(
                "session {session}: filtering {command} {index} failed",
                failure,
                session=context.context.session,
                command=context.command,
                index=context.index,
            )
            reason = "the message could not be filtered"
        if not started:
            return Refusal(_message(f"-ERR [SYS/TEMP] {reason}"))
        # "+OK" is out already: cut the response off (no final dot), so the
        # client cannot store it; the message stays upstream.
        log.warn(
            "session {session}: {command} {index} failed after keepalive began: "
            "{reason}; connection closed",
            session=context.context.session,
            command=context.command,
            index=context.index,
            reason=reason,
        )
        return Cut(reason)
