"""
The tag filter: marks each message with what the chain did to it and with
SpamAssassin's opinion, and changes nothing else.

  - header fields from templates over the notes of the earlier filters
    (C{X-Popproxy-Status: strip: removed invoice.exe; scan: clean});
  - subject prefixes by rule (C{[SPAM]}, C{[ATTACHMENT REMOVED]},
    C{[VIRUS]}), spliced in front of the Subject as it was sent: an RFC
    2047-encoded or folded subject is never decoded or re-encoded;
  - a spam score from spamd (SpamAssassin's SPAMC/1.5 protocol, asked
    without blocking, with a timeout and a size limit): C{X-Spam-Flag},
    C{X-Spam-Score}, C{X-Spam-Status}.  A message spamd did not score is
    never called ham: it gets C{X-Spam-Status: unchecked (<why>)}.

Every setting is described in docs/plugins/tag.md.  Written on the public
plugin API only (C{popproxy.interfaces}, C{popproxy.message}) plus Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    Rewrite,
    SettingsReader,
    TempFail,
    Verdict,
)
from popproxy.message import Message, encodedWords

__all__ = [
    "HeaderTemplate",
    "SpamdAnswer",
    "SpamdAnswerParser",
    "SpamdClient",
    "SpamdError",
    "SubjectRule",
    "TagFilter",
    "TagSettings",
    "makeFilter",
    "parseSettings",
    "spamdRequest",
    "withSubjectPrefixes",
]

DEFAULT_SPAMD = "tcp:127.0.0.1:783"
DEFAULT_USER = "popproxy"
DEFAULT_TIMEOUT = 20.0
#: spamc's own default limit (500 KiB): SpamAssassin gets slow on big
#: messages, and spam is small.
DEFAULT_MAX_SIZE = 512_000
ON_FAILURE = ("deliver", "tempfail")
DEFAULT_HEADERS: Mapping[str, str] = {"X-Popproxy-Status": "{status}"}
# The wording of the shipped filters' notes: scan says "virus <name>" when it
# replaced a whole message and "removed <name>" when it replaced infected
# parts; strip says "removed <file> (<reason>)".
DEFAULT_SUBJECT_RULES: tuple[tuple[str, str], ...] = (
    ("[VIRUS]", "note:scan:virus"),
    ("[VIRUS]", "note:scan:removed"),
    ("[ATTACHMENT REMOVED]", "note:strip:removed"),
    ("[SPAM]", "spam"),
)

SPAM_FLAG = "X-Spam-Flag"
SPAM_SCORE = "X-Spam-Score"
SPAM_STATUS = "X-Spam-Status"
_SPAM_HEADERS = (SPAM_FLAG, SPAM_SCORE, SPAM_STATUS)

_DEFAULT_RULE_TABLES = [{"prefix": p, "when": w} for p, w in DEFAULT_SUBJECT_RULES]
# RFC 5322 ftext; the plugin only ever owns X- fields.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_USER = re.compile(r"[A-Za-z0-9._@+=-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ENCODED_WORD = re.compile(rb"=\?[^?\s]++\?[BbQq]\?[^?\s]*+\?=")
#: RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters.
_FOLD_AT = 78
#: Longest header value this plugin writes (before folding).
_MAX_VALUE = 900


# Settings.


@dataclass(frozen=True)
class SubjectRule:
    """
    Put C{prefix} in front of the Subject when the rule matches.

    @ivar kind: C{"spam"} (spamd scored the message as spam) or C{"note"}
        (an earlier filter left a note).
    @ivar filter: for C{"note"}: the chain name of the filter whose notes
        count, or C{"*"} for any filter.
    @ivar text: for C{"note"}: the note must contain this (compared without
        regard to case); empty: any note.
    """

    prefix: str
    kind: str
    filter: str = ""
    text: str = ""

    @classmethod
    def fromSetting(cls, prefix: str, when: str) -> SubjectRule:
        """
        Parse C{when}: C{"spam"}, C{"note:<filter>"} or
        C{"note:<filter>:<text>"}.

        @raise ValueError: anything else.
        """
        if when == "spam":
            return cls(prefix, "spam")
        kind, _, rest = when.partition(":")
        filterName, _, text = rest.partition(":")
        if kind != "note" or not filterName.strip():
            raise ValueError(
                f"subject rule {prefix!r}: when must be 'spam', 'note:<filter>' or "
                f"'note:<filter>:<text>', not {when!r}"
            )
        return cls(prefix, "note", filterName.strip(), text.strip())

    def matches(self, isSpam: bool, notes: Sequence[tuple[str, str]]) -> bool:
        """
        Whether the rule applies, given spamd's opinion and the notes.
        """
        if self.kind == "spam":
            return isSpam
        wanted = self.text.casefold()
        return any(
            (self.filter == "*" or name == self.filter) and wanted in note.casefold()
            for name, note in notes
        )


@dataclass(frozen=True)
class HeaderTemplate:
    """
    A header field to set, its value made from the notes of earlier
    filters: C{{status}} is every note (C{"strip: removed x.exe; scan:
    clean"}), C{{note:NAME}} the notes of the filter called NAME; C{{{}}
    and C{}}} stand for braces.  The field is set only when every
    placeholder has a value; a template without placeholders is always set.
    """

    name: str
    template: str

    def __post_init__(self) -> None:
        if not _FIELD_NAME.fullmatch(self.name) or not self.name.lower().startswith("x-"):
            raise ValueError(f"headers: {self.name!r} is not an X- header field name")
        if _CONTROL.search(self.template):
            raise ValueError(f"headers: the value of {self.name} has a control character")
        for match in _PLACEHOLDER.finditer(self.template):
            token = match.group(0)
            if token in ("{{", "}}"):
                continue
            placeholder = match.group(1)
            if placeholder is None:
                raise ValueError(
                    f"headers: a lone brace in the value of {self.name} (write {{{{ or }}}})"
                )
            if placeholder != "status" and not (
                placeholder.startswith("note:") and placeholder[5:].strip()
            ):
                raise ValueError(
                    f"headers: unknown placeholder {token} in the value of {self.name} "
                    "(known: {status}, {note:<filter>})"
                )

    def render(self, notes: Sequence[tuple[str, str]]) -> str | None:
        """
        The value for these notes, or C{None} if a placeholder has none.
        """
        missing = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal missing
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            placeholder = match.group(1)
            if placeholder == "status":
                value = "; ".join(f"{name}: {_oneLine(note)}" for name, note in notes)
            else:
                wanted = placeholder[5:].strip()
                value = "; ".join(_oneLine(note) for name, note in notes if name == wanted)
            if not value:
                missing = True
            return value

        value = _PLACEHOLDER.sub(substitute, self.template)
        return None if missing else _capped(value.strip())


@dataclass(frozen=True)
class TagSettings:
    """
    The checked settings of one tag filter (see docs/plugins/tag.md).

    @ivar spamd: a Twisted client endpoint string; empty: no spam scoring.
    @ivar threshold: the score from which a message is spam; C{None}:
        spamd's own C{required_score}.
    """

    spamd: str = DEFAULT_SPAMD
    user: str = DEFAULT_USER
    timeout: float = DEFAULT_TIMEOUT
    maxSize: int = DEFAULT_MAX_SIZE
    threshold: float | None = None
    onFailure: str = "deliver"
    headers: tuple[HeaderTemplate, ...] = ()
    subjectRules: tuple[SubjectRule, ...] = ()


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"subject_rules: prefix must be a non-empty string, not {value!r}")
    prefix = value.strip()
    if _CONTROL.search(prefix) or "=?" in prefix:
        raise ValueError(f"subject_rules: prefix {prefix!r} has a control character or '=?'")
    return prefix


def parseSettings(settings: Mapping[str, Any]) -> TagSettings:
    """
    Check the C{settings} table of a C{[[filter]]} entry.

    @raise ValueError: an unknown key or a bad value (stops start-up).
    """
    read = SettingsReader(settings)
    spamd = read.string("spamd", DEFAULT_SPAMD).strip()
    user = read.string("user", DEFAULT_USER)
    if not _USER.fullmatch(user):
        raise ValueError(f"user must be a plain user name for spamd, not {user!r}")
    checked = TagSettings(
        spamd=spamd,
        user=user,
        timeout=read.number("timeout", DEFAULT_TIMEOUT, above=0),
        maxSize=read.integer("max_size", DEFAULT_MAX_SIZE, minimum=1),
        threshold=read.number("threshold", None),
        onFailure=read.choice("on_failure", "deliver", ON_FAILURE),
        headers=_headers(read.table("headers", DEFAULT_HEADERS), spamd),
        subjectRules=_subjectRules(read.value("subject_rules", _DEFAULT_RULE_TABLES)),
    )
    read.finish()
    return checked


def _headers(table: Mapping[str, Any], spamd: str) -> tuple[HeaderTemplate, ...]:
    headers = []
    seen: set[str] = set()
    for name, template in table.items():
        if not isinstance(name, str) or not isinstance(template, str):
            raise ValueError(f"headers: {name!r} = {template!r} is not name = text")
        if name.lower() in seen or (spamd and name.lower() in (h.lower() for h in _SPAM_HEADERS)):
            raise ValueError(f"headers: {name} is set twice (the X-Spam- fields are spamd's)")
        seen.add(name.lower())
        headers.append(HeaderTemplate(name, template))
    return tuple(headers)


def _subjectRules(ruleList: object) -> tuple[SubjectRule, ...]:
    if not isinstance(ruleList, list):
        raise ValueError("subject_rules must be a list of {prefix = ..., when = ...} tables")
    rules = []
    for rule in ruleList:
        if not isinstance(rule, Mapping) or set(rule) != {"prefix", "when"}:
            raise ValueError(f"subject_rules: {rule!r} is not a {{prefix, when}} table")
        when = rule["when"]
        if not isinstance(when, str):
            raise ValueError(f"subject_rules: when must be a string, not {when!r}")
        rules.append(SubjectRule.fromSetting(_prefix(rule["prefix"]), when.strip()))
    return tuple(rules)


# Text helpers.


def _oneLine(text: str) -> str:
    """
    C{text} with control characters (line breaks included) and runs of
    spaces turned into one space: a note must not inject header lines.
    """
    return " ".join(_CONTROL.sub(" ", text).split())


def _capped(text: str) -> str:
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


# The subject.


def withSubjectPrefixes(message: Message, prefixes: Sequence[str]) -> tuple[Message, list[str]]:
    """
    Put C{prefixes} (in order, space-separated) in front of the first
    Subject field; add a Subject if there is none.  A prefix the subject
    already shows (decoded, without regard to case) is not added again.

    The prefix is spliced in right after C{Subject:}: the rest of the field
    (encoded-words, folding, 8-bit octets, the field name's spelling) and
    every other octet of the message stay exactly as they were.  A prefix
    that is not ASCII becomes encoded-words of its own.  If the first line
    would grow beyond 78 characters, the field is folded after the prefix.

    @return: the message (the same object if nothing was added) and the
        prefixes added.
    """
    current = (message.headers.get("Subject") or "").casefold()
    wanted = [prefix for prefix in dict.fromkeys(prefixes) if prefix.casefold() not in current]
    if not wanted:
        return message, []
    text = " ".join(wanted)
    rawValues = message.headers.rawValues("Subject")
    if not rawValues:
        return message.withHeaderAdded("Subject", text), wanted
    data = message.toBytes()
    value = rawValues[0]
    start, end = message.headers.fieldRanges("Subject")[0]
    field = data[start:end]
    lineEnd = b"\r\n" if field.endswith(b"\r\n") else b"\n" if field.endswith(b"\n") else b""
    valueEnd = end - len(lineEnd)
    valueStart = valueEnd - len(value)
    if data[valueStart:valueEnd] != value or valueStart <= start:
        raise ValueError("the Subject field is not where its value says it is")
    fold = lineEnd or message.lineEnding
    rest = value.lstrip(b" \t\r\n")
    if text.isascii():
        prefix = text.encode("ascii")
    else:
        # Whitespace between two encoded-words is dropped when decoding,
        # so the space before an encoded rest goes inside the prefix.
        spaced = _ENCODED_WORD.match(rest) is not None
        prefix = b" ".join(encodedWords(text + " " if spaced else text))
    startsBlank = value[:1] in (b" ", b"\t") or re.match(rb"\r?\n[ \t]", value) is not None
    if not value:
        newValue = b" " + prefix
    elif startsBlank:
        newValue = b" " + prefix + value
    else:
        newValue = b" " + prefix + b" " + value
    firstLine = data[start:valueStart] + newValue.split(b"\n", 1)[0].rstrip(b"\r")
    if len(firstLine) > _FOLD_AT and rest:
        # Fold after the prefix: the line end goes before the whitespace
        # that separates it from the rest (a value that starts with a fold
        # already has its first line short).
        if value[:1] in (b" ", b"\t"):
            newValue = b" " + prefix + fold + value
        elif not startsBlank:
            newValue = b" " + prefix + fold + b" " + value
    edited = data[:valueStart] + newValue + data[valueEnd:]
    return message.withBytes(edited), wanted


# The SPAMC/SPAMD protocol.


class SpamdError(Exception):
    """
    spamd answered with an error, or with something that is not an answer.
    """


@dataclass(frozen=True)
class SpamdAnswer:
    """
    What spamd said about one message.

    @ivar isSpam: spamd's own decision (C{score >= required}).
    @ivar score: the message's score.
    @ivar required: spamd's threshold (its C{required_score}).
    @ivar tests: the names of the rules that hit.
    """

    isSpam: bool
    score: float
    required: float
    tests: tuple[str, ...] = ()


def spamdRequest(message: bytes, user: str) -> bytes:
    """
    A C{SYMBOLS} request (SPAMC/1.5) for C{message}: spamd answers with the
    decision, the score, the threshold and the names of the rules that hit.
    """
    return (
        b"SYMBOLS SPAMC/1.5\r\n"
        b"Content-length: %d\r\n"
        b"User: %s\r\n"
        b"\r\n" % (len(message), user.encode("ascii"))
    ) + message


_STATUS_LINE = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) *(.*)")
_SPAM_LINE = re.compile(
    rb"(true|false|yes|no) *; *(-?\d+(?:\.\d+)?) */ *(-?\d+(?:\.\d+)?)", re.IGNORECASE
)
_SYMBOL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class SpamdAnswerParser:
    """
    Reads spamd's answer to a C{SYMBOLS} request, fed as it arrives (no
    I/O here):

        SPAMD/1.1 0 EX_OK
        Content-length: 12
        Spam: True ; 1000.0 / 5.0

        GTUBE,NO_RELAYS

    L{feed} returns the L{SpamdAnswer} as soon as it is complete and
    raises L{SpamdError} as soon as it cannot be one; L{finish} is called
    when spamd closed the connection.
    """

    #: An answer is a few hundred octets; more is not spamd.
    MAX_ANSWER = 65536

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> SpamdAnswer | None:
        """
        Take more of the answer.

        @return: the answer once it is complete, else C{None}.
        @raise SpamdError: an error status or a malformed answer.
        """
        self._buffer += data
        if len(self._buffer) > self.MAX_ANSWER:
            raise SpamdError(f"answer longer than {self.MAX_ANSWER} octets")
        return self._parse(final=False)

    def finish(self) -> SpamdAnswer:
        """
        The connection was closed: the answer must be complete now.

        @raise SpamdError: it is not.
        """
        if not self._buffer:
            raise SpamdError("spamd closed the connection without answering")
        answer = self._parse(final=True)
        if answer is None:
            raise SpamdError("spamd closed the connection in the middle of its answer")
        return answer

    def _parse(self, final: bool) -> SpamdAnswer | None:
        statusEnd = self._buffer.find(b"\n")
        if statusEnd == -1:
            if final:
                self._status(self._buffer)
            return None
        self._status(self._buffer[:statusEnd].rstrip(b"\r"))
        separator = _BLANK_LINE.search(self._buffer, statusEnd)
        if separator is None:
            return None
        headers: dict[bytes, bytes] = {}
        for line in self._buffer[statusEnd + 1 : separator.start()].split(b"\n"):
            if not line.strip():
                continue
            name, colon, value = line.rstrip(b"\r").partition(b":")
            if not colon:
                raise SpamdError(f"malformed answer line {_shown(line)}")
            headers[name.strip().lower()] = value.strip()
        body = self._buffer[separator.end() :]
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise SpamdError(f"malformed Content-length {_shown(length)}")
            if len(body) < int(length):
                return None
            if len(body) > int(length):
                raise SpamdError("more octets than its Content-length")
        elif not final:
            return None
        spam = headers.get(b"spam")
        if spam is None:
            raise SpamdError("answer without a Spam header")
        match = _SPAM_LINE.fullmatch(spam)
        if match is None:
            raise SpamdError(f"malformed Spam header {_shown(spam)}")
        tests = tuple(
            test
            for test in (item.strip() for item in body.decode("ascii", "replace").split(","))
            if _SYMBOL.fullmatch(test)
        )
        return SpamdAnswer(
            isSpam=match.group(1).lower() in (b"true", b"yes"),
            score=float(match.group(2)),
            required=float(match.group(3)),
            tests=tests,
        )

    def _status(self, line: bytes) -> None:
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise SpamdError(f"not a SPAMD answer: {_shown(line)}")
        if match.group(2) != b"0":
            raise SpamdError(
                f"spamd answered {match.group(2).decode()} {_shown(match.group(3), 80)}"
            )


def _shown(octets: bytes, limit: int = 40) -> str:
    return repr(octets[:limit].decode("ascii", "replace"))


class _SpamdConnection(StreamProtocol):
    """
    One request and its answer on one connection (spamd closes it after
    answering).
    """

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._parser = SpamdAnswerParser()
        self.answered: Deferred[SpamdAnswer] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        try:
            answer = self._parser.feed(data)
        except SpamdError:
            self.answered.errback()
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if answer is not None:
            self.answered.callback(answer)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.answered.called:
            return
        try:
            answer = self._parser.finish()
        except SpamdError:
            self.answered.errback()
        else:
            self.answered.callback(answer)

    def _cancel(self, answered: Deferred[SpamdAnswer]) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class SpamChecker(Protocol):
    """
    What the filter needs from a spamd client (tests give it a fake).
    """

    def check(self, message: bytes) -> Deferred[SpamdAnswer]: ...


class SpamdClient:
    """
    Asks spamd about messages, one connection per message, without
    blocking.

    @param endpoint: where spamd listens (TCP or a UNIX socket).
    @param clock: for the timeout.
    @param timeout: seconds for the whole exchange (connecting included).
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        timeout: float = DEFAULT_TIMEOUT,
        user: str = DEFAULT_USER,
    ) -> None:
        self._endpoint = endpoint
        self._clock = clock
        self._timeout = timeout
        self._user = user

    def check(self, message: bytes) -> Deferred[SpamdAnswer]:
        """
        What spamd says about C{message}.

        @return: a Deferred failing with L{SpamdError} (an error answer),
            L{twisted.internet.defer.TimeoutError} (no answer within the
            timeout; the connection is aborted), or a connection error;
            cancelling it aborts the connection.
        """
        connection = _SpamdConnection(spamdRequest(message, self._user))
        connecting = self._endpoint.connect(_QuietFactory(connection))
        answered: Deferred[SpamdAnswer] = connecting.addCallback(lambda _: connection.answered)
        return answered.addTimeout(self._timeout, self._clock)


class _QuietFactory(Factory):
    """
    Hands out one prepared connection without logging every connection.
    """

    noisy = False

    def __init__(self, connection: StreamProtocol) -> None:
        self._connection = connection

    def buildProtocol(self, addr: object) -> StreamProtocol:
        return self._connection


# The filter.


def _failureReason(failure: Exception, timeout: float) -> str:
    if isinstance(failure, DeferredTimeoutError | error.TimeoutError):
        return f"no answer from spamd within {timeout:g} s"
    if isinstance(failure, error.ConnectionRefusedError):
        return "spamd refused the connection"
    if isinstance(failure, SpamdError):
        return str(failure)
    if isinstance(failure, error.ConnectError):
        return f"cannot connect to spamd: {failure}"
    if isinstance(failure, error.ConnectionLost | error.ConnectionDone):
        return "spamd closed the connection"
    return f"{failure.__class__.__name__}: {failure}"


def _score(value: float) -> str:
    # Adding 0.0 turns spamd's "-0.0" into 0.0.
    return f"{value + 0.0:.1f}"


@implementer(IMessageFilter)
class TagFilter:
    """
    Sets status headers and subject prefixes, and asks spamd for a score.

    @param spamd: a spamd client, or C{None} when scoring is off.
    """

    name = "tag"

    def __init__(self, settings: TagSettings, spamd: SpamChecker | None = None) -> None:
        self.settings = settings
        self._spamd = spamd

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        settings = self.settings
        notes = list(context.notes)
        said: list[str] = []
        spamHeaders: list[tuple[str, str | None]] = []
        isSpam = False
        if self._spamd is not None:
            data = message.toBytes()
            answer: SpamdAnswer | None = None
            unchecked = ""
            if context.partial:
                unchecked = "partial message"
            elif len(data) > settings.maxSize:
                unchecked = f"{len(data)} octets, over max_size {settings.maxSize}"
            else:
                try:
                    answer = await self._spamd.check(data)
                except CancelledError:
                    raise
                except Exception as e:
                    reason = _oneLine(_failureReason(e, settings.timeout))[:200]
                    context.log.warn(
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
                    unchecked = reason
            if answer is not None:
                required = answer.required if settings.threshold is None else settings.threshold
                isSpam = answer.isSpam if settings.threshold is None else answer.score >= required
                score, needed = _score(answer.score), _score(required)
                tests = ",".join(answer.tests) or "none"
                if len(tests) > _MAX_VALUE - 60:
                    tests = tests[: tests.rfind(",", 0, _MAX_VALUE - 64)] + ",..."
                spamHeaders = [
                    (SPAM_FLAG, "YES" if isSpam else "NO"),
                    (SPAM_SCORE, score),
                    (
                        SPAM_STATUS,
                        f"{'Yes' if isSpam else 'No'}, score={score} required={needed} "
                        f"tests={tests}",
                    ),
                ]
                said.append(f"{'spam' if isSpam else 'not spam'} ({score}/{needed})")
            else:
                spamHeaders = [
                    (SPAM_FLAG, None),
                    (SPAM_SCORE, None),
                    (SPAM_STATUS, f"unchecked ({unchecked})"),
                ]
                said.append(f"spam unchecked: {unchecked}")
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


def makeFilter(settings: Mapping[str, Any], reactor: IReactorTime) -> TagFilter:
    """
    Build the filter from the C{settings} table of its C{[[filter]]} entry;
    it talks to spamd through C{reactor}, the one the chain runs on.

    @raise ValueError: a bad setting or spamd address (stops start-up).
    """
    checked = parseSettings(settings)
    if not checked.spamd:
        return TagFilter(checked)
    endpoint = clientFromString(reactor, checked.spamd)
    client = SpamdClient(endpoint, reactor, checked.timeout, checked.user)
    return TagFilter(checked, client)
