"""
The tag filter: sets the status headers and subject prefixes its rules ask
for and, when it has a spamd client, the X-Spam- fields of spamd's answer;
it changes nothing else.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IScannerStatus,
    IStartable,
    Rewrite,
    ScannerReachability,
    ScannerStatus,
    TempFail,
    Verdict,
)
from popproxy.message import Message

from ._client import SpamChecker, failureReason
from ._rules import MAX_VALUE, oneLine
from ._settings import SPAM_FLAG, SPAM_SCORE, SPAM_STATUS, TagSettings
from ._spamd import SpamdAnswer, SpamdError
from ._subject import withSubjectPrefixes

#: The X-Spam- fields to set (None: remove), and what spamd said, for the note.
SpamTags = tuple[list[tuple[str, str | None]], bool, str]


def _score(value: float) -> str:
    # Adding 0.0 turns spamd's "-0.0" into 0.0.
    return f"{value + 0.0:.1f}"


def answerTags(answer: SpamdAnswer, threshold: float | None) -> SpamTags:
    """
    The X-Spam- fields for spamd's answer, whether it is spam (by spamd's
    own threshold unless one is configured), and the note.
    """
    required = answer.required if threshold is None else threshold
    isSpam = answer.isSpam if threshold is None else answer.score >= required
    score, needed = _score(answer.score), _score(required)
    tests = ",".join(answer.tests) or "none"
    if len(tests) > MAX_VALUE - 60:
        tests = tests[: tests.rfind(",", 0, MAX_VALUE - 64)] + ",..."
    fields: list[tuple[str, str | None]] = [
        (SPAM_FLAG, "YES" if isSpam else "NO"),
        (SPAM_SCORE, score),
        (
            SPAM_STATUS,
            f"{'Yes' if isSpam else 'No'}, score={score} required={needed} tests={tests}",
        ),
    ]
    return fields, isSpam, f"{'spam' if isSpam else 'not spam'} ({score}/{needed})"


def uncheckedTags(why: str) -> SpamTags:
    """
    A message spamd did not score is never called ham.
    """
    fields: list[tuple[str, str | None]] = [
        (SPAM_FLAG, None),
        (SPAM_SCORE, None),
        (SPAM_STATUS, f"unchecked ({why})"),
    ]
    return fields, False, f"spam unchecked: {why}"


@implementer(IMessageFilter)
class TagFilter:
    """
    Sets status headers and subject prefixes, and asks spamd for a score.

    With a spamd client it also provides L{IScannerStatus} and
    L{IStartable}: it PINGs spamd at start-up and records every check.

    @param spamd: a spamd client, or C{None} when scoring is off.
    @param reachability: keeps spamd's status; by default a new one for
        the settings' address.
    """

    name = "tag"

    def __init__(
        self,
        settings: TagSettings,
        spamd: SpamChecker | None = None,
        reachability: ScannerReachability | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.settings = settings
        self._spamd = spamd
        self._reachability = reachability
        if spamd is not None:
            if reachability is None:
                if clock is None:
                    raise ValueError("a spamd client needs a reachability or a clock")
                self._reachability = ScannerReachability("spamd", settings.spamd, clock)
            alsoProvides(self, IScannerStatus, IStartable)

    def scannerStatus(self) -> ScannerStatus:
        """
        spamd's last known state (provided only with a spamd client).
        """
        assert self._reachability is not None
        return self._reachability.status

    def startFilter(self) -> None:
        """
        Ask spamd once whether it is there; the answer (or none within the
        timeout) is logged when it arrives.
        """
        self.probe()

    def probe(self) -> Deferred[None]:
        """
        PING spamd and record the outcome; the Deferred never fails.
        """
        assert self._spamd is not None
        return self._spamd.ping().addCallbacks(self._pinged, self._notPinged)

    def _pinged(self, _: object) -> None:
        assert self._reachability is not None
        self._reachability.reached()

    def _notPinged(self, failure: Failure) -> None:
        assert self._reachability is not None
        reason = oneLine(failureReason(failure.value, self.settings.timeout))[:200]
        if failure.check(SpamdError):
            # It answered, if oddly: it is there.
            self._reachability.reached()
        else:
            self._reachability.missed(reason)

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        settings = self.settings
        notes = list(context.notes)
        said: list[str] = []
        spamHeaders: list[tuple[str, str | None]] = []
        isSpam = False
        if self._spamd is not None:
            tags = await self._spamTags(self._spamd, message, context)
            if isinstance(tags, TempFail):
                return tags
            spamHeaders, isSpam, spamNote = tags
            said.append(spamNote)
        tagged = message
        prefixes = [rule.prefix for rule in settings.subjectRules if rule.matches(isSpam, notes)]
        if prefixes:
            tagged, added = withSubjectPrefixes(tagged, prefixes)
            if added:
                said.append(f"subject {' '.join(added)}")
        # The headers this plugin sets are its own: copies that came with
        # the message (forged, or from an earlier hop) are removed, so a
        # sender cannot pre-empt a verdict.  The last added comes first.
        fields = [(t.name, t.render(notes)) for t in settings.headers] + spamHeaders
        for name, value in reversed(fields):
            tagged = tagged.withHeaderRemoved(name)
            if value is not None:
                tagged = tagged.withHeaderAdded(name, value)
        note = "; ".join(said)
        if tagged is message:
            return Deliver(note=note)
        return Rewrite(tagged, note=note)

    async def _spamTags(
        self, spamd: SpamChecker, message: Message, context: FilterContext
    ) -> SpamTags | TempFail:
        """
        What spamd says of C{message}, as fields to set; a temporary failure
        when it cannot say and the policy asks for one.
        """
        settings = self.settings
        data = message.toBytes()
        if context.partial:
            return uncheckedTags("partial message")
        if len(data) > settings.maxSize:
            return uncheckedTags(f"{len(data)} octets, over max_size {settings.maxSize}")
        reachability = self._reachability
        assert reachability is not None
        try:
            answer = await spamd.check(data)
        except CancelledError:
            raise
        except Exception as e:
            reason = oneLine(failureReason(e, settings.timeout))[:200]
            if isinstance(e, SpamdError):
                reachability.reached()
            else:
                reachability.missed(reason)
            reachability.warn(
                context.log,
                "spamd check of {command} {index} (UIDL {uidl}) failed: {reason}",
                command=context.command,
                index=context.index,
                uidl=context.uidl,
                reason=reason,
            )
            if settings.onFailure == "tempfail":
                return TempFail(
                    f"spam check unavailable ({reason}), try again later",
                    note=f"spam check failed: {reason}",
                )
            return uncheckedTags(reason)
        reachability.reached()
        return answerTags(answer, settings.threshold)
