"""
The scan filter: asks a scanner about every decoded leaf part, the whole
message, or both, keeps what is infected in the quarantine, and returns the
verdict the findings and the failure policies call for; and says whether
clamd can be reached, from a PING at start-up and every scan since.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IPartQuarantine,
    IScannerStatus,
    IStartable,
    RemovedPart,
    Rewrite,
    ScannerReachability,
    ScannerStatus,
    TempFail,
    Verdict,
)
from popproxy.message import Message, Part

from ._findings import Findings, Unchecked
from ._notices import (
    names,
    noQuarantine,
    partLabel,
    removable,
    removalTargets,
    removedParts,
    stamp,
    wholeReplaced,
    withPartNotices,
)
from ._settings import ScanSettings
from ._wire import ClamdError, ClamdUnavailable, ScanResult, StreamTooLarge

#: Parts with a body at least this big are decoded off the reactor thread.
THREAD_THRESHOLD = 1_000_000


class StreamScanner(Protocol):
    """
    Something that scans one stream at a time: the client, or a session.
    """

    def scan(self, data: bytes) -> Deferred[ScanResult]: ...


class ScanSession(StreamScanner, Protocol):
    """
    The scans of one message on one connection (L{ClamdSession}).
    """

    def close(self) -> Deferred[None]: ...


class Scanner(StreamScanner, Protocol):
    """
    What the filter needs from a clamd client (L{ClamdClient}).
    """

    def session(self) -> ScanSession: ...

    def ping(self) -> Deferred[None]: ...


#: Kinds of unscanned streams that say clamd is not doing its job (the
#: others say the stream was too large): warned about at most once a minute.
_DAEMON_TROUBLE = ("unreachable", "timeout", "error")


def _unreachable(reason: str) -> str:
    """
    Why clamd could not be reached, for its status: the logs name clamd already.
    """
    return reason.removeprefix("cannot reach clamd: ")


@implementer(IMessageFilter, IScannerStatus, IStartable)
class VirusScan:
    """
    Scans messages with clamd and removes what it finds (see the package).

    One object serves every session: all state of a scan lives in the
    call, except the connection limit of the scanner and what is known of
    clamd's reachability, shared on purpose.

    @param scanner: a L{ClamdClient}, or anything with its C{scan} and
        C{ping} methods.
    @param clock: for the time limit of each message.
    @param reachability: keeps clamd's status; by default a new one for
        the settings' address.
    """

    name = "scan"

    def __init__(
        self,
        scanner: Scanner,
        clock: IReactorTime,
        settings: ScanSettings,
        reachability: ScannerReachability | None = None,
    ) -> None:
        self._scanner = scanner
        self._clock = clock
        self._settings = settings
        self._reachability = reachability or ScannerReachability("clamd", settings.address, clock)

    def scannerStatus(self) -> ScannerStatus:
        return self._reachability.status

    def startFilter(self) -> None:
        """
        Ask clamd once whether it is there; its answer (or none within the
        filter's timeout) is logged when it arrives.
        """
        self.probe()

    def probe(self) -> Deferred[None]:
        """
        PING clamd and record the outcome; the Deferred never fails.
        """
        timeout = self._settings.timeout
        probing = self._scanner.ping()
        probing.addTimeout(timeout, self._clock)
        return probing.addCallbacks(self._pinged, self._notPinged, errbackArgs=(timeout,))

    def _pinged(self, _: object) -> None:
        self._reachability.reached()

    def _notPinged(self, failure: Failure, timeout: float) -> None:
        if failure.check(DeferredTimeout):
            self._reachability.missed(f"no answer to PING within {timeout:g} s")
        elif failure.check(ClamdError):
            # It answered, if oddly: it is there.
            self._reachability.reached()
        else:
            self._reachability.missed(_unreachable(failure.getErrorMessage()))

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        settings = self._settings
        deadline = self._clock.seconds() + settings.timeout
        findings = Findings()
        if settings.mode == "message":
            await self._scan(self._scanner, findings, message.toBytes(), None, context, deadline)
        else:
            await self._scanParts(findings, message, context, deadline)
        refusal = findings.refusal(settings)
        if refusal is not None:
            return refusal

        whole = findings.wholeInfected
        for part, found in findings.infected:
            if not removable(message, part).path:
                whole += found
        if whole:
            return self._replaceWhole(message, context, tuple(dict.fromkeys(whole)))

        edited = await self._withoutInfectedParts(message, findings, context)
        if not isinstance(edited, Message):
            return edited
        removed = tuple(dict.fromkeys(n for _, found in findings.infected for n in found))

        if settings.mode == "both" and not findings.clamdDown:
            # clamd's own MIME decoding sees what a part-by-part scan cannot
            # (a preamble, uuencoded text): scan what would be delivered.
            await self._scan(self._scanner, findings, edited.toBytes(), None, context, deadline)
            refusal = findings.refusal(settings)
            if refusal is not None:
                return refusal
            if findings.wholeInfected:
                return self._replaceWhole(message, context, findings.wholeInfected)

        value, notes = stamp(findings, removed, context.partial, settings)
        if value is None:
            return Deliver(note="; ".join(notes))
        return Rewrite(edited.withHeaderAdded(settings.header, value), note="; ".join(notes))

    async def _scanParts(
        self, findings: Findings, message: Message, context: FilterContext, deadline: float
    ) -> None:
        """
        Scan every leaf part's decoded payload, until clamd cannot be asked
        again, in one clamd session (one connection for all the parts),
        ended however the scanning ends.
        """
        session = self._scanner.session()
        try:
            for part in message.walk():
                if part.children:
                    continue
                payload = await self._decoded(part, context)
                if payload:
                    await self._scan(session, findings, payload, part, context, deadline)
                if findings.clamdDown:
                    break
        finally:
            # One reactor turn when clamd reads it, CLOSE_GRACE at most when
            # it does not: the message leaves no connection behind.
            await session.close()

    async def _withoutInfectedParts(
        self, message: Message, findings: Findings, context: FilterContext
    ) -> Message | TempFail:
        """
        C{message} with its infected parts kept in the quarantine and
        replaced by notices; a temporary failure when they cannot be kept.
        """
        if not findings.infected:
            return message
        if context.quarantine is None:
            return noQuarantine(findings.infected[0][1])
        replaced = await self._quarantineParts(message, findings.infected, context)
        if replaced is None:
            removed = tuple(dict.fromkeys(n for _, found in findings.infected for n in found))
            return TempFail(
                "the quarantine cannot keep an infected part, try again later",
                note=f"virus {names(removed)}, quarantine failed",
            )
        return replaced

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
        scanner: StreamScanner,
        findings: Findings,
        data: bytes,
        part: Part | None,
        context: FilterContext,
        deadline: float,
    ) -> None:
        """
        Scan C{data} (a leaf part's decoded payload, or the whole message
        when C{part} is None) and record the outcome in C{findings}.
        """
        label = "the message" if part is None else partLabel(part)
        result = await self._ask(scanner, data, label, deadline)
        if isinstance(result, Unchecked):
            self._warnUnscanned(result, context)
            findings.unchecked.append(result)
            return
        if not result.infected:
            return
        context.log.warn(
            "{virus} found in {where} (user {user}, UIDL {uidl})",
            virus=names(result.names),
            where=label,
            user=context.user,
            uidl=context.uidl,
        )
        if part is None:
            findings.wholeInfected = tuple(dict.fromkeys(findings.wholeInfected + result.names))
        else:
            findings.infected.append((part, result.names))

    def _warnUnscanned(self, unchecked: Unchecked, context: FilterContext) -> None:
        """
        Say that a stream was not scanned: once per message when it was too
        large, at most once a minute when clamd is the reason.
        """
        fields = {
            "command": context.command,
            "index": context.index,
            "uidl": context.uidl,
            "reason": unchecked.reason,
        }
        format = "{command} {index} (UIDL {uidl}) not scanned: {reason}"
        if unchecked.kind in _DAEMON_TROUBLE:
            self._reachability.warn(context.log, format, **fields)
        else:
            context.log.warn(format, **fields)

    async def _ask(
        self, scanner: StreamScanner, data: bytes, label: str, deadline: float
    ) -> ScanResult | Unchecked:
        """
        What C{scanner} says of C{data} within the time left, or why it
        stays unchecked.
        """
        settings = self._settings
        remaining = deadline - self._clock.seconds()
        timedOut = Unchecked("timeout", f"clamd timed out after {settings.timeout:g} s")
        if len(data) > settings.maxStream:
            return Unchecked(
                "oversize",
                f"{label} too large: {len(data)} octets > max_stream {settings.maxStream}",
            )
        if remaining <= 0:
            return timedOut
        scanning = scanner.scan(data)
        scanning.addTimeout(remaining, self._clock)
        reachability = self._reachability
        try:
            result = await scanning
        except DeferredTimeout:
            reachability.missed(f"no answer within {remaining:.1f} s")
            return timedOut
        except StreamTooLarge:
            reachability.reached()
            return Unchecked(
                "oversize", f"{label} too large for clamd's StreamMaxLength ({len(data)} octets)"
            )
        except ClamdError as e:
            reachability.reached()
            return Unchecked("error", str(e)[:120])
        except ClamdUnavailable as e:
            # Why is in the status (and its log line); the header says only this.
            reachability.missed(_unreachable(str(e)))
            return Unchecked("unreachable", "clamd unreachable")
        reachability.reached()
        return result

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
        targets = removalTargets(message, infected)
        removed = removedParts(message, targets)
        try:
            identifiers = await self._keep(message, removed, context)
        except Exception:
            context.log.failure(
                "cannot quarantine {count} infected part(s) (UIDL {uidl})",
                count=len(removed),
                uidl=context.uidl,
            )
            return None
        return withPartNotices(message, targets, identifiers, self._settings, context.itemUrl)

    async def _keep(
        self, message: Message, removed: list[RemovedPart], context: FilterContext
    ) -> list[str]:
        """
        The quarantine ids of the C{removed} parts, all stored at once where
        the quarantine can.
        """
        quarantine = context.quarantine
        if IPartQuarantine.providedBy(quarantine):
            kept = await maybeDeferred(
                quarantine.storeParts, message.raw, removed, context, plugin=self.name
            )
            return [str(identifier) for identifier in kept]
        return [
            str(
                await maybeDeferred(
                    quarantine.store, item.original, context, item.reason, self.name
                )
            )
            for item in removed
        ]

    def _replaceWhole(
        self, message: Message, context: FilterContext, found: tuple[str, ...]
    ) -> Verdict:
        if context.quarantine is None:
            return noQuarantine(found)
        return wholeReplaced(message, found, self._settings)
