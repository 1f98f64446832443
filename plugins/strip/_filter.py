"""
The strip filter itself (L{Strip}): finds what its policy removes, keeps
those parts in the quarantine, and answers with the message carrying a
notice where each one was; a temporary failure when nothing can keep
them, so that nothing is ever thrown away.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from twisted.internet.defer import maybeDeferred
from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IPartQuarantine,
    RemovedPart,
    Replace,
    Rewrite,
    TempFail,
    Verdict,
)
from popproxy.message import Message

from ._findings import Finding, findBlocked
from ._notices import shortened, signedNotice, withNotices
from ._settings import StripPolicy

#: Messages at least this big are checked in a thread (a 255 KB message of
#: 4,000 tiny parts took 0.7 s to check, on the reactor thread below the
#: old 256 KiB; 64 KiB of them about 0.18 s).
THREAD_THRESHOLD = 64 * 1024


@implementer(IMessageFilter)
class Strip:
    """
    Removes the parts its L{StripPolicy} blocks; see the package docstring.
    """

    name = "strip"

    def __init__(self, policy: StripPolicy) -> None:
        self.policy = policy

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        policy = self.policy
        if context.partial:
            # A TOP preview cuts attachments short: an archive that cannot
            # be read there is a cut one, of no use to the reader.
            policy = replace(policy, unreadable="allow")
        # Decoding attachments and opening archives is CPU work: off the
        # reactor thread for big messages when the chain offers a thread
        # (the parse caches of a message may be filled from another
        # thread).  Small ones are checked inline: a thread hop costs more
        # than the work and only adds contention for the GIL.
        if context.runInThread is not None and len(message.raw) >= THREAD_THRESHOLD:
            findings = await context.runInThread(functools.partial(findBlocked, message, policy))
        else:
            findings = findBlocked(message, policy)
        if not findings:
            return Deliver()
        summary = "; ".join(f"{finding.filename} ({finding.reason})" for finding in findings)
        if self.policy.signed == "replace" and any(finding.signed for finding in findings):
            return Replace(
                signedNotice(message, findings),
                reason=f"signed message with {summary}",
                note=shortened(f"removed the whole signed message holding {summary}"),
            )
        quarantine = context.quarantine
        if quarantine is None:
            return TempFail(
                f"strip would remove {findings[0].filename} but no quarantine is configured",
                note="no quarantine",
            )
        return await self._removed(quarantine, message, findings, context)

    async def _removed(
        self, quarantine: Any, message: Message, findings: list[Finding], context: FilterContext
    ) -> Verdict:
        """
        Keep the parts of C{findings} in C{quarantine}, then answer with
        C{message} holding a notice in the place of each.
        """
        data = message.toBytes()
        removed = [
            RemovedPart(data[slice(*finding.part.range)], finding.part.path, finding.reason)
            for finding in findings
        ]
        try:
            identifiers = await self._quarantined(quarantine, message, removed, context)
        except Exception:
            context.log.failure(
                "cannot quarantine {filename} ({reason}) and {more} more removed parts",
                filename=findings[0].filename,
                reason=findings[0].reason,
                more=len(findings) - 1,
            )
            return TempFail(
                "the quarantine cannot keep a removed attachment, try again later",
                note="quarantine failed",
            )
        edit = functools.partial(
            withNotices, message, data, findings, identifiers, self.policy.notice, context.itemUrl
        )
        if context.runInThread is not None and len(message.raw) >= THREAD_THRESHOLD:
            edited = await context.runInThread(edit)
        else:
            edited = edit()
        notes = []
        for finding, identifier in zip(findings, identifiers, strict=True):
            context.log.info(
                "removed {filename} ({reason}), quarantined as {quarantineId}",
                filename=finding.filename,
                reason=finding.reason,
                quarantineId=identifier,
            )
            notes.append(f"removed {finding.filename} ({finding.reason})")
        if any(finding.signed for finding in findings):
            notes.append("signature broken")
        return Rewrite(edited, note=shortened("; ".join(notes)))

    async def _quarantined(
        self,
        quarantine: Any,
        message: Message,
        removed: list[RemovedPart],
        context: FilterContext,
    ) -> list[str]:
        """
        Keep every removed part, all at once where the quarantine can (then
        each under an id derived from the message and the part, so a retry
        of this message writes nothing new), else one by one.
        """
        if IPartQuarantine.providedBy(quarantine):
            identifiers = await maybeDeferred(
                quarantine.storeParts, message.raw, removed, context, plugin=self.name
            )
            return [str(identifier) for identifier in identifiers]
        return [
            str(
                await maybeDeferred(
                    quarantine.store, part.original, context, part.reason, plugin=self.name
                )
            )
            for part in removed
        ]
