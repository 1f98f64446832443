"""
The scan filter: virus scanning with clamd.

Each message is streamed to clamd with its INSTREAM command: by default
every decoded leaf part on its own, so base64-encoded malware is found
whatever clamd's own MIME support does; or the whole raw message; or both.
The infected parts of a message are stored in the quarantine together,
each under an id derived from the message and the part (a retry of the
message stores nothing twice), and replaced by short notices in one
edit; an infected message body is replaced whole (the chain quarantines
the original).  When clamd cannot scan (unreachable, too slow, an error, a
stream over the size limit) the configured policy decides: a temporary
failure, or delivery marked unchecked.  A message is never called clean
unless every scan it needed said so.

The module has three layers, each usable alone: the INSTREAM framing and
reply parsing (L{instreamFrames}, L{ReplyParser}, L{interpretReplies}),
plain code fed bytes; the Twisted client (L{InstreamProtocol} streams one
scan as fast as clamd reads it, L{ClamdClient} opens one connection per
scan, at most C{maxConnections} at once); and the filter (L{VirusScan}),
which only needs something with a C{scan(data)} method.  It is one file
because plugin files are loaded by path and use only popproxy's public API
and Twisted.

Settings and policies: docs/plugins/scan.md.
"""

from __future__ import annotations

import re
import string
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IAddress,
    IPullProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IPartQuarantine,
    RemovedPart,
    Replace,
    Rewrite,
    SettingsReader,
    TempFail,
    Verdict,
)
from popproxy.message import Message, Part, textPart

__all__ = [
    "ClamdClient",
    "ClamdError",
    "ClamdUnavailable",
    "InstreamProtocol",
    "ReplyParser",
    "ScanResult",
    "ScanSettings",
    "StreamTooLarge",
    "VirusScan",
    "instreamFrames",
    "interpretReplies",
    "makeFilter",
    "parseSettings",
]


# The INSTREAM protocol, sans I/O.
#
# The client sends "zINSTREAM\0", then the data as chunks, each preceded by
# its length as four octets in network byte order, then a chunk of length
# zero.  clamd answers with one NUL-terminated reply and closes the
# connection:
#
#   - "stream: OK": nothing found;
#   - "stream: <name> FOUND": a signature matched (one reply per signature
#     with AllMatchScanning);
#   - "INSTREAM size limit exceeded. ERROR": the stream went past clamd's
#     StreamMaxLength (clamd stops reading and closes at once);
#   - "<text> ERROR": anything else that went wrong.

#: The command, in the NUL-delimited form (C{z} prefix): replies end in NUL.
INSTREAM_COMMAND = b"zINSTREAM\0"

#: The zero-length chunk that ends the stream.
END_OF_STREAM = b"\0\0\0\0"

#: Octets per chunk; clamd accepts any chunk up to its StreamMaxLength.
DEFAULT_CHUNK_SIZE = 65536

#: A reply longer than this is not clamd talking.
MAX_REPLY = 16384

_SIZE_LIMIT = "INSTREAM size limit exceeded"

# With ExtendedDetectionInfo some clamd versions append "(<hash>:<size>)".
_DETECTION_INFO = re.compile(r"\([0-9a-fA-F]{32,64}:\d+\)\Z")


def _printable(text: str, limit: int = 200) -> str:
    """
    C{text} on one line (control characters become spaces), at most
    C{limit} characters: fit for a header field and a log line, whatever a
    server or a file name holds.
    """
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class ClamdError(Exception):
    """
    clamd answered, but not with a scan result (C{... ERROR}, or a reply
    that is not clamd's).
    """


class StreamTooLarge(ClamdError):
    """
    clamd refused the stream: it is longer than clamd's C{StreamMaxLength}.
    """


class ClamdUnavailable(Exception):
    """
    clamd could not be reached, or the connection ended without an answer.
    """


@dataclass(frozen=True)
class ScanResult:
    """
    What clamd found in one stream.

    @ivar names: the names of the signatures that matched; empty when the
        stream is clean.
    """

    names: tuple[str, ...] = ()

    @property
    def infected(self) -> bool:
        return bool(self.names)


def instreamFrames(data: bytes, chunkSize: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """
    The frames that send C{data} after the INSTREAM command: each chunk with
    its length prefix, then the end-of-stream marker.  They are made one at
    a time, so a big stream is never copied whole.
    """
    if chunkSize < 1:
        raise ValueError("chunkSize must be positive")
    for start in range(0, len(data), chunkSize):
        chunk = data[start : start + chunkSize]
        yield struct.pack(">I", len(chunk)) + chunk
    yield END_OF_STREAM


class ReplyParser:
    """
    Splits what clamd sends into its NUL-terminated replies.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take more octets; return the replies they complete, without the NUL.

        @raise ClamdError: a reply is longer than L{MAX_REPLY}.
        """
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\0")
        if len(self._buffer) > MAX_REPLY:
            raise ClamdError(f"a reply of more than {MAX_REPLY} octets is not clamd's")
        return complete

    @property
    def pending(self) -> bytes:
        """
        Octets of a reply not yet terminated (clamd closed without its NUL,
        or sent a newline-terminated reply).
        """
        return self._buffer


def interpretReplies(replies: list[bytes]) -> ScanResult:
    """
    The result of a scan from all the replies clamd sent on its connection.
    Any signature found wins over an error in another reply: what was
    found is reason enough to act.

    @raise StreamTooLarge: clamd stopped reading at its StreamMaxLength.
    @raise ClamdError: clamd answered an error or something unexpected.
    @raise ClamdUnavailable: there was no reply at all.
    """
    names: list[str] = []
    problem: ClamdError | None = None
    sawOk = False
    for raw in replies:
        reply = _printable(raw.decode("utf-8", "replace"))
        if reply.startswith("stream: "):
            reply = reply[len("stream: ") :]
        else:
            # clamd versions differ: some name the stream "stream", some
            # a path; only the verdict word at the end matters.
            reply = reply.split(": ", 1)[-1] if ": " in reply else reply
        if reply == "OK":
            sawOk = True
        elif reply.endswith(" FOUND"):
            name = _DETECTION_INFO.sub("", reply[: -len(" FOUND")].strip()).strip()
            names.append(name or "unnamed signature")
        elif reply.startswith(_SIZE_LIMIT):
            problem = StreamTooLarge(f"clamd: {reply}")
        elif problem is None:
            problem = ClamdError(f"clamd: {reply[:200]}")
    if names:
        return ScanResult(tuple(dict.fromkeys(names)))
    if problem is not None:
        raise problem
    if sawOk:
        return ScanResult()
    raise ClamdUnavailable("clamd closed the connection without an answer")


class _Connection(Protocol):
    """
    What the scan needs of its transport (TCP and UNIX transports alike).
    """

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def abortConnection(self) -> None: ...


@implementer(IPullProducer)
class _FrameProducer:
    """
    Writes the next INSTREAM frame each time the transport has sent what it
    had, so a big stream is never buffered whole a second time.
    """

    def __init__(self, consumer: _Connection, frames: Iterator[bytes]) -> None:
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


class InstreamProtocol(TwistedProtocol):
    """
    One INSTREAM scan on one connection.

    @ivar finished: fires with the L{ScanResult} when clamd has answered
        and closed the connection, or fails with L{ClamdError},
        L{StreamTooLarge} or L{ClamdUnavailable}.
    """

    def __init__(self, data: bytes, chunkSize: int = DEFAULT_CHUNK_SIZE) -> None:
        self._data = data
        self._chunkSize = chunkSize
        self._parser = ReplyParser()
        self._replies: list[bytes] = []
        self._producer: _FrameProducer | None = None
        self._error: ClamdError | None = None
        self.finished: Deferred[ScanResult] = Deferred()

    @property
    def _connection(self) -> _Connection:
        return cast(_Connection, self.transport)

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Without it the small last frame waits for clamd's delayed ACK
            # (Nagle's algorithm): about 40 ms more per scan.
            try:
                cast(ITCPTransport, self.transport).setTcpNoDelay(True)
            except OSError:
                pass  # a UNIX socket
        self._connection.write(INSTREAM_COMMAND)
        frames = instreamFrames(self._data, self._chunkSize)
        # The data is only referenced by the frame iterator from now on.
        self._data = b""
        self._producer = _FrameProducer(self._connection, frames)
        self._connection.registerProducer(self._producer, False)

    def abort(self) -> None:
        """
        Drop the connection now, if there is one (a cancelled scan).
        """
        if self.transport is not None:
            self._connection.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        try:
            self._replies.extend(self._parser.feed(data))
        except ClamdError as e:
            self._error = e
            self._stopSending()
            self.abort()
            return
        if self._replies:
            # clamd answers once the stream ended, or early to refuse it
            # (size limit): either way there is nothing more to send.
            self._stopSending()

    def _stopSending(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopSending()
        if self._error is not None:
            self.finished.errback(self._error)
            return
        replies = list(self._replies)
        if self._parser.pending.strip():
            replies.append(self._parser.pending)
        try:
            result = interpretReplies(replies)
        except ClamdUnavailable:
            self.finished.errback(
                ClamdUnavailable(
                    f"clamd closed the connection without an answer ({reason.getErrorMessage()})"
                )
            )
        except ClamdError as e:
            self.finished.errback(e)
        else:
            self.finished.callback(result)


class ClamdClient:
    """
    Scans octets with the clamd at C{endpoint}, one connection per scan, at
    most C{maxConnections} connections at once; further scans wait.

    A scan has no time limit of its own: cancel its Deferred (e.g. with
    C{addTimeout}) and the connection, or the attempt to connect, is
    abandoned and its slot freed.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        maxConnections: int = 4,
        chunkSize: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if maxConnections < 1:
            raise ValueError("maxConnections must be at least 1")
        self._endpoint = endpoint
        self._slots = DeferredSemaphore(maxConnections)
        self._chunkSize = chunkSize

    @property
    def waiting(self) -> int:
        """
        How many scans wait for a free connection.
        """
        return len(self._slots.waiting)

    def scan(self, data: bytes) -> Deferred[ScanResult]:
        """
        Send C{data} to clamd with INSTREAM.

        @return: a Deferred firing with a L{ScanResult}, or failing with
            L{ClamdUnavailable}, L{ClamdError} or L{StreamTooLarge}.
        """
        return self._slots.run(self._scanNow, data)

    def _scanNow(self, data: bytes) -> Deferred[ScanResult]:
        protocol = InstreamProtocol(data, self._chunkSize)
        cancelled = False

        def cancel(result: Deferred[ScanResult]) -> None:
            nonlocal cancelled
            cancelled = True
            if protocol.transport is None:
                connecting.cancel()
            else:
                protocol.abort()

        result: Deferred[ScanResult] = Deferred(cancel)

        def deliver(outcome: ScanResult | Failure) -> None:
            if not cancelled:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        def connected(_: object) -> None:
            protocol.finished.addBoth(deliver)

        def notConnected(failure: Failure) -> None:
            deliver(Failure(ClamdUnavailable(f"cannot reach clamd: {failure.getErrorMessage()}")))

        connecting = self._endpoint.connect(_OneProtocolFactory(protocol))
        connecting.addCallbacks(connected, notConnected)
        return result


class _OneProtocolFactory(Factory):
    """
    Hands out one given protocol, quietly (a factory logs every start and
    stop unless told otherwise).
    """

    noisy = False

    def __init__(self, protocol: TwistedProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> TwistedProtocol:
        return self._protocol


#: What every X-Virus-Scanned value starts with.
STAMP = "popproxy/clamd"

#: Parts with a body at least this big are decoded off the reactor thread.
THREAD_THRESHOLD = 1_000_000

MODES = ("parts", "message", "both")
FAILURE_POLICIES = ("tempfail", "deliver")

DEFAULT_PART_NOTICE = """\
A virus was found in an attachment of this message, and the attachment
was removed.

  Virus:          {virus}
  Attachment:     {filename}
  Quarantine id:  {id}

If you need the original, ask your administrator and give the quarantine id.
"""

DEFAULT_MESSAGE_NOTICE = """\
A virus was found in a message sent to you, and the message was replaced
by this notice.

  Virus:    {virus}
  From:     {sender}
  Subject:  {subject}

The original is kept in quarantine; its id is in the X-Popproxy-Quarantine-Id
header of this notice.  If you need it, ask your administrator.
"""

DEFAULT_SUBJECT = "[VIRUS] {subject}"

_TEMPLATE_FIELDS = {
    "notice": ("virus", "filename", "id", "part"),
    "message_notice": ("virus", "sender", "subject"),
    "subject": ("virus", "subject"),
}

# RFC 5322 field names: printable ASCII except the colon.
_FIELD_NAME_CHARACTERS = frozenset(chr(c) for c in range(33, 127)) - {":"}


@dataclass(frozen=True)
class ScanSettings:
    """
    The scan filter's settings, checked (see docs/plugins/scan.md).
    """

    address: str = "unix:/run/clamav/clamd.ctl"
    mode: str = "parts"
    maxStream: int = 25 * 1024 * 1024
    maxConnections: int = 4
    timeout: float = 20.0
    onFailure: str = "tempfail"
    onOversize: str = "deliver"
    header: str = "X-Virus-Scanned"
    stampClean: bool = True
    notice: str = DEFAULT_PART_NOTICE
    messageNotice: str = DEFAULT_MESSAGE_NOTICE
    subject: str = DEFAULT_SUBJECT


def _checkTemplate(name: str, template: str) -> str:
    allowed = _TEMPLATE_FIELDS[name]
    try:
        for _, fieldName, _, _ in string.Formatter().parse(template):
            if fieldName is not None and fieldName not in allowed:
                raise ValueError(
                    f"{name} may use {', '.join('{' + f + '}' for f in allowed)}, "
                    f"not {{{fieldName}}}"
                )
        template.format(**{f: "x" for f in allowed})
    except (IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"{name} is not a usable template: {e}") from None
    except ValueError as e:
        raise ValueError(f"{name} is not a usable template: {e}") from None
    return template


def parseSettings(settings: Mapping[str, Any]) -> ScanSettings:
    """
    Check the settings table of a scan entry.

    @raise ValueError: an unknown setting, or a value that cannot be used.
    """
    read = SettingsReader(settings)
    default = ScanSettings()
    address = read.string("address", default.address)
    if ":" not in address:
        raise ValueError(
            f"address must be a client endpoint string such as 'unix:/run/clamav/clamd.ctl' "
            f"or 'tcp:127.0.0.1:3310', not {address!r}"
        )
    header = read.string("header", default.header)
    if not header or not set(header) <= _FIELD_NAME_CHARACTERS:
        raise ValueError(f"header must be a header field name, not {header!r}")
    parsed = ScanSettings(
        address=address,
        mode=read.choice("mode", default.mode, MODES),
        maxStream=read.integer("max_stream", default.maxStream, minimum=1),
        maxConnections=read.integer("max_connections", default.maxConnections, minimum=1),
        timeout=read.number("timeout", default.timeout, above=0),
        onFailure=read.choice("on_failure", default.onFailure, FAILURE_POLICIES),
        onOversize=read.choice("on_oversize", default.onOversize, FAILURE_POLICIES),
        header=header,
        stampClean=read.boolean("stamp_clean", default.stampClean),
        notice=_checkTemplate("notice", read.string("notice", default.notice)),
        messageNotice=_checkTemplate(
            "message_notice", read.string("message_notice", default.messageNotice)
        ),
        subject=_checkTemplate("subject", read.string("subject", default.subject)),
    )
    read.finish()
    return parsed


class Scanner(Protocol):
    """
    What the filter needs from a clamd client (L{ClamdClient}).
    """

    def scan(self, data: bytes) -> Deferred[ScanResult]: ...


#: What the client of a temporary failure is told, by kind of unchecked stream.
_TEMPFAIL_REASONS = {
    "unreachable": "the virus scanner is unreachable, try again later",
    "timeout": "the virus scanner did not answer in time, try again later",
    "error": "the virus scanner failed, try again later",
    "oversize": "the message is too large for the virus scanner, try again later",
}


@dataclass(frozen=True)
class _Unchecked:
    """
    A stream that was not scanned, and why.

    @ivar kind: C{"unreachable"}, C{"timeout"}, C{"error"} (the
        C{on_failure} policy) or C{"oversize"} (the C{on_oversize} policy).
    @ivar reason: a few words for the header and the logs.
    """

    kind: str
    reason: str

    def policy(self, settings: ScanSettings) -> str:
        return settings.onOversize if self.kind == "oversize" else settings.onFailure


@dataclass
class _Findings:
    """
    What the scans of one message found so far (one per filterMessage call,
    never shared between messages).
    """

    infected: list[tuple[Part, tuple[str, ...]]] = field(default_factory=list)
    wholeInfected: tuple[str, ...] = ()
    unchecked: list[_Unchecked] = field(default_factory=list)

    @property
    def clamdDown(self) -> bool:
        """
        clamd cannot be asked again for this message (unreachable, or the
        time is up).
        """
        return any(item.kind in ("unreachable", "timeout") for item in self.unchecked)

    def refusal(self, settings: ScanSettings) -> TempFail | None:
        """
        The temporary failure the policies ask for, if any.
        """
        for item in self.unchecked:
            if item.policy(settings) == "tempfail":
                return TempFail(_TEMPFAIL_REASONS[item.kind], note=f"unchecked: {item.reason}")
        return None


def _partLabel(part: Part) -> str:
    if not part.path:
        return "the message body"
    label = "part " + ".".join(str(index + 1) for index in part.path)
    if part.filename:
        label += f" ({_printable(part.filename, 80)})"
    return label


def _removable(message: Message, part: Part) -> Part:
    """
    The part to replace when leaf C{part} is infected: the leaf itself, or,
    when it is the whole of an attached message, that message/rfc822 part
    (the top-level part when the message itself is a single part).
    """
    target = part
    while target.path:
        parent = message.partAt(target.path[:-1])
        if parent.isMultipart:
            break
        target = parent
    return target


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names)


@implementer(IMessageFilter)
class VirusScan:
    """
    Scans messages with clamd and removes what it finds (see the module).

    One object serves every session: all state of a scan lives in the
    call, except the connection limit of the scanner, shared on purpose.

    @param scanner: a L{ClamdClient}, or anything with its C{scan} method.
    @param clock: for the time limit of each message.
    """

    name = "scan"

    def __init__(self, scanner: Scanner, clock: IReactorTime, settings: ScanSettings) -> None:
        self._scanner = scanner
        self._clock = clock
        self._settings = settings

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        settings = self._settings
        deadline = self._clock.seconds() + settings.timeout
        findings = _Findings()
        if settings.mode == "message":
            await self._scan(findings, message.toBytes(), None, context, deadline)
        else:
            for part in message.walk():
                if part.children:
                    continue
                payload = await self._decoded(part, context)
                if payload:
                    await self._scan(findings, payload, part, context, deadline)
                if findings.clamdDown:
                    break
        refusal = findings.refusal(settings)
        if refusal is not None:
            return refusal

        whole = findings.wholeInfected
        for part, names in findings.infected:
            if not _removable(message, part).path:
                whole += names
        if whole:
            return self._replaceWhole(message, context, tuple(dict.fromkeys(whole)))

        edited = message
        removed: tuple[str, ...] = ()
        if findings.infected:
            if context.quarantine is None:
                return TempFail(
                    "a virus was found but there is no quarantine to keep it, try again later",
                    note=f"virus {_names(findings.infected[0][1])}, no quarantine",
                )
            for _, names in findings.infected:
                removed += names
            replaced = await self._quarantineParts(message, findings.infected, context)
            if replaced is None:
                return TempFail(
                    "the quarantine cannot keep an infected part, try again later",
                    note=f"virus {_names(tuple(dict.fromkeys(removed)))}, quarantine failed",
                )
            edited = replaced

        if settings.mode == "both" and not findings.clamdDown:
            # clamd's own MIME decoding sees what a part-by-part scan cannot
            # (a preamble, uuencoded text): scan what would be delivered.
            await self._scan(findings, edited.toBytes(), None, context, deadline)
            refusal = findings.refusal(settings)
            if refusal is not None:
                return refusal
            if findings.wholeInfected:
                return self._replaceWhole(message, context, findings.wholeInfected)

        return self._stamped(edited, findings, tuple(dict.fromkeys(removed)), context)

    async def _decoded(self, part: Part, context: FilterContext) -> bytes:
        """
        The part's payload, decoded in a thread when it is big (decoding
        megabytes of base64 would hold up every other session).
        """
        start, end = part.bodyRange
        if end - start < THREAD_THRESHOLD or context.runInThread is None:
            return part.payload()
        payload: bytes = await context.runInThread(part.payload)
        return payload

    async def _scan(
        self,
        findings: _Findings,
        data: bytes,
        part: Part | None,
        context: FilterContext,
        deadline: float,
    ) -> None:
        """
        Scan C{data} (a leaf part's decoded payload, or the whole message
        when C{part} is None) and record the outcome in C{findings}.
        """
        settings = self._settings
        label = "the message" if part is None else _partLabel(part)
        unchecked = None
        remaining = deadline - self._clock.seconds()
        if len(data) > settings.maxStream:
            unchecked = _Unchecked(
                "oversize",
                f"{label} too large: {len(data)} octets > max_stream {settings.maxStream}",
            )
        elif remaining <= 0:
            unchecked = _Unchecked("timeout", f"clamd timed out after {settings.timeout:g} s")
        else:
            scanning = self._scanner.scan(data)
            scanning.addTimeout(remaining, self._clock)
            try:
                result = await scanning
            except DeferredTimeout:
                unchecked = _Unchecked("timeout", f"clamd timed out after {settings.timeout:g} s")
            except StreamTooLarge:
                unchecked = _Unchecked(
                    "oversize",
                    f"{label} too large for clamd's StreamMaxLength ({len(data)} octets)",
                )
            except ClamdError as e:
                unchecked = _Unchecked("error", str(e)[:120])
            except ClamdUnavailable as e:
                context.log.warn("clamd unreachable: {error}", error=str(e))
                unchecked = _Unchecked("unreachable", "clamd unreachable")
        if unchecked is not None:
            context.log.warn(
                "not scanned (UIDL {uidl}): {reason}", uidl=context.uidl, reason=unchecked.reason
            )
            findings.unchecked.append(unchecked)
            return
        if not result.infected:
            return
        context.log.warn(
            "{virus} found in {where} (user {user}, UIDL {uidl})",
            virus=_names(result.names),
            where=label,
            user=context.user,
            uidl=context.uidl,
        )
        if part is None:
            findings.wholeInfected = tuple(dict.fromkeys(findings.wholeInfected + result.names))
        else:
            findings.infected.append((part, result.names))

    async def _quarantineParts(
        self,
        message: Message,
        infected: list[tuple[Part, tuple[str, ...]]],
        context: FilterContext,
    ) -> Message | None:
        """
        Keep every infected part (its exact octets, headers included) in the
        quarantine and return C{message} with a notice in place of each,
        made in one edit; None if the quarantine could not keep them.

        The parts are kept all at once where the quarantine can, each under
        an id derived from the message and the part, so a retry of the same
        message finds them kept and writes nothing new.
        """
        # The part each finding removes, with every signature found in it.
        targets: dict[tuple[int, ...], tuple[Part, Part, tuple[str, ...]]] = {}
        for part, names in infected:
            target = _removable(message, part)
            if target.path in targets:
                first, _, before = targets[target.path]
                targets[target.path] = (first, target, tuple(dict.fromkeys(before + names)))
            else:
                targets[target.path] = (part, target, names)
        data = message.toBytes()
        removed = [
            RemovedPart(data[slice(*target.range)], target.path, f"virus found: {_names(names)}")
            for _, target, names in targets.values()
        ]
        quarantine = context.quarantine
        try:
            if IPartQuarantine.providedBy(quarantine):
                kept = await maybeDeferred(
                    quarantine.storeParts, message.raw, removed, context, plugin=self.name
                )
                identifiers = [str(identifier) for identifier in kept]
            else:
                identifiers = [
                    str(
                        await maybeDeferred(
                            quarantine.store, item.original, context, item.reason, self.name
                        )
                    )
                    for item in removed
                ]
        except Exception:
            context.log.failure(
                "cannot quarantine {count} infected part(s) (UIDL {uidl})",
                count=len(removed),
                uidl=context.uidl,
            )
            return None
        edits = []
        for (part, target, names), identifier in zip(targets.values(), identifiers, strict=True):
            notice = self._settings.notice.format(
                virus=_names(names),
                filename=_printable(target.filename or part.filename or "(no name)", 200),
                id=identifier,
                part=_partLabel(target),
            )
            edits.append((target, textPart(notice, lineEnding=message.lineEnding)))
        return message.withPartsEdited(edits)

    def _replaceWhole(
        self, message: Message, context: FilterContext, names: tuple[str, ...]
    ) -> Verdict:
        """
        A notice standing in for the whole message (the chain keeps the
        original in the quarantine).
        """
        if context.quarantine is None:
            return TempFail(
                "a virus was found but there is no quarantine to keep it, try again later",
                note=f"virus {_names(names)}, no quarantine",
            )
        settings = self._settings
        eol = message.lineEnding
        subject = message.headers.get("Subject") or ""
        head = b""
        for name in ("From", "To", "Cc", "Date", "Message-ID"):
            for value in message.headers.rawValues(name):
                head += name.encode("ascii") + b":" + value + eol
        text = settings.messageNotice.format(
            virus=_names(names),
            sender=message.headers.get("From") or "(unknown)",
            subject=subject or "(none)",
        )
        body = textPart(text, lineEnding=eol)
        notice = Message.fromBytes(head + b"MIME-Version: 1.0" + eol + body)
        notice = notice.withHeaderReplaced(
            "Subject", settings.subject.format(virus=_names(names), subject=subject)
        )
        notice = notice.withHeaderAdded(
            settings.header, f"{STAMP}; infected ({_names(names)}), message replaced"
        )
        return Replace(notice, f"virus found: {_names(names)}", note=f"virus {_names(names)}")

    def _stamped(
        self,
        message: Message,
        findings: _Findings,
        removed: tuple[str, ...],
        context: FilterContext,
    ) -> Verdict:
        """
        C{message} with the header saying what the scan did; a message is
        only called clean when every stream it needed was scanned.
        """
        settings = self._settings
        notes = [f"removed {_names(removed)}"] if removed else []
        if findings.unchecked:
            reasons = list(dict.fromkeys(item.reason for item in findings.unchecked))
            reason = reasons[0] if len(reasons) == 1 else f"{reasons[0]}; {len(reasons) - 1} more"
            value = f"{STAMP}; unchecked ({reason})"
            if removed:
                value += f"; infected parts replaced ({_names(removed)})"
            notes.append(f"unchecked: {reason}")
        elif context.partial:
            # A TOP preview lacks most of its body: what is missing was not scanned.
            value = f"{STAMP}; unchecked (partial message)"
            notes.append("unchecked: partial message")
        elif removed:
            value = f"{STAMP}; infected parts replaced ({_names(removed)})"
        elif settings.stampClean:
            value = f"{STAMP}; clean"
            notes.append("clean")
        else:
            return Deliver(note="clean")
        return Rewrite(message.withHeaderAdded(settings.header, value), note="; ".join(notes))


def makeFilter(settings: Mapping[str, Any], reactor: IReactorTime) -> VirusScan:
    """
    Build the filter from its settings, talking to clamd through
    C{reactor} (the one the chain runs on: its clock times the scans).
    """
    parsed = parseSettings(settings)
    try:
        endpoint = clientFromString(reactor, parsed.address)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"address {parsed.address!r} cannot be used: {e}") from None
    client = ClamdClient(endpoint, parsed.maxConnections)
    return VirusScan(client, reactor, parsed)
