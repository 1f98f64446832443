"""
The shipped tag plugin (plugins/tag/: its filter, settings and subject
splice), loaded as a C{[[filter]]} entry loads it: status headers from the
notes of earlier filters, subject prefixes that never break an RFC 2047 or
folded subject, and spam scores from a real spamd
(GTUBE is spam, normal mail is not), with its failure policies, timeout and
size limit.  Everything but the added header lines and the Subject prefix
stays byte-identical.

The checks against the real spamd need a running reactor: they run the
plugin in a short child process (L{runWithSpamd}), so this process never
starts the global reactor.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from twisted.internet.defer import (
    Deferred,
    ensureDeferred,
    fail,
    succeed,
)
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from plugins.tag import (
    SpamdAnswer,
    SpamdError,
    TagFilter,
    parseSettings,
)
from popproxy._chain import ChainEntry, FilterChain
from popproxy._plugins import PluginError, loadFilter
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IScannerStatus,
    IStartable,
    Rewrite,
    ScannerStatus,
    TempFail,
    Verdict,
)
from popproxy.message import Message
from popproxy.strategies import mimeMessages
from tests.peers.ports import freePort
from tests.peers.spamd import SpamdServer

ROOT = Path(__file__).resolve().parent.parent

#: The GTUBE test string, put together here so this file is not itself spam.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*" + b"GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

HAM = (
    b"Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
    b"\tby mx.example.net with ESMTP id 4F1A2B3C; Mon, 10 Mar 2025 09:00:01 +0000\r\n"
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob Example <bob@example.net>\r\n"
    b"Subject: Lunch on Thursday\r\n"
    b"Date: Mon, 10 Mar 2025 09:00:00 +0000\r\n"
    b"Message-ID: <20250310090000.4F1A2B3C@mail.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hi Bob,\r\n\r\nshall we meet for lunch on Thursday at noon?\r\n\r\nAlice\r\n"
)
SPAM = HAM.replace(b"Lunch on Thursday", b"Offer").replace(b"at noon?", b"at noon? " + GTUBE)

NOTES = (("strip", "removed invoice.exe (blocked extension)"), ("scan", "clean"))
VIRUS_NOTES = (("scan", "virus Eicar-Test-Signature"),)
INFECTED_PART_NOTES = (("scan", "removed Eicar-Test-Signature"),)

OFF = {"spamd": ""}


def contextWith(notes: Sequence[tuple[str, str]] = (), *, partial: bool = False) -> FilterContext:
    """A RETR (or, partial, TOP) context in which earlier filters left C{notes}."""
    return FilterContext(
        command="TOP" if partial else "RETR",
        index=1,
        user="alice",
        client="127.0.0.1:40000",
        upstream="tcp:127.0.0.1:110",
        session="s1",
        uidl="uid-1",
        partial=partial,
        notes=tuple(notes),
    )


def load(settings: dict[str, Any]) -> Any:
    """The tag filter, loaded exactly as the configuration loads C{plugin = "tag"}."""
    return loadFilter("tag", settings, Path("."), (), Clock())


def judge(tag: Any, raw: bytes, notes: Sequence[tuple[str, str]] = (), **kw: Any) -> Verdict:
    """The verdict of C{tag} on C{raw}; the filter must not wait for a reactor."""
    answered = ensureDeferred(tag.filterMessage(Message.fromBytes(raw), contextWith(notes, **kw)))
    results: list[Any] = []
    answered.addBoth(results.append)
    assert results, "the filter waited for something no running reactor will bring"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    verdict: Verdict = results[0]
    return verdict


def output(verdict: Verdict, raw: bytes) -> bytes:
    """What the client gets from C{verdict} on C{raw}."""
    assert isinstance(verdict, Deliver | Rewrite), verdict
    return verdict.message.toBytes() if isinstance(verdict, Rewrite) else raw


def tagged(raw: bytes, notes: Sequence[tuple[str, str]] = (), **settings: Any) -> bytes:
    """C{raw} as the client gets it from a tag filter without spamd."""
    return output(judge(load({**OFF, **settings}), raw, notes), raw)


# Subject prefixes.


def test_rfc2047SubjectKeptAndPrefixPrependedAsPlainText() -> None:
    """
    An encoded-word subject is not decoded or re-encoded: the ASCII prefix goes
    in front of it as plain text, so a reader shows "[ATTACHMENT REMOVED] Grüße".
    """
    raw = b"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nbody\r\n"
    out = tagged(raw, NOTES[:1], headers={})
    assert out == raw.replace(b"Subject: =?utf-8?q?", b"Subject: [ATTACHMENT REMOVED] =?utf-8?q?")
    assert Message.fromBytes(out).headers.get("Subject") == "[ATTACHMENT REMOVED] Grüße"


def test_nonAsciiPrefixBecomesItsOwnEncodedWord() -> None:
    """
    A non-ASCII prefix is an encoded-word of its own; before an encoded subject
    it carries the separating space inside (whitespace between encoded-words is
    dropped by readers), and the original encoded-words stay as they were.
    """
    raw = b"Subject: =?iso-8859-1?q?caf=E9?=\r\n\r\nbody\r\n"
    rules = [{"prefix": "[ВИРУС]", "when": "note:scan:virus"}]
    out = tagged(raw, VIRUS_NOTES, headers={}, subject_rules=rules)
    prefix = b"=?utf-8?b?" + base64.b64encode("[ВИРУС] ".encode()) + b"?="
    assert out == b"Subject: " + prefix + b" =?iso-8859-1?q?caf=E9?=\r\n\r\nbody\r\n"
    assert Message.fromBytes(out).headers.get("Subject") == "[ВИРУС] café"
    plain = tagged(b"Subject: hello\r\n\r\n", VIRUS_NOTES, headers={}, subject_rules=rules)
    assert Message.fromBytes(plain).headers.get("Subject") == "[ВИРУС] hello"


def test_foldedSubjectKeepsItsFolding() -> None:
    """
    A folded subject keeps its line breaks and continuation whitespace; the
    prefix joins the first line.
    """
    raw = (
        b"Subject: Quarterly report\r\n\t=?utf-8?b?w7xiZXJzaWNodA==?=\r\n"
        b"To: b@example.net\r\n\r\nbody\r\n"
    )
    out = tagged(raw, NOTES, headers={})
    assert out == raw.replace(b"Subject: Q", b"Subject: [ATTACHMENT REMOVED] Q")
    assert Message.fromBytes(out).headers.get("Subject") == (
        "[ATTACHMENT REMOVED] Quarterly report\tübersicht"
    )


def test_longFirstLineIsFoldedAfterThePrefix() -> None:
    """
    When the prefix would push the first line past 78 characters the field is
    folded right after the prefix; the original value follows unchanged.
    """
    subject = b"x" * 70
    out = tagged(b"Subject: " + subject + b"\n\nbody\n", NOTES, headers={})
    assert out == b"Subject: [ATTACHMENT REMOVED]\n " + subject + b"\n\nbody\n"
    noSpace = tagged(b"Subject:" + subject + b"\n\nbody\n", NOTES, headers={})
    assert noSpace == b"Subject: [ATTACHMENT REMOVED]\n " + subject + b"\n\nbody\n"


def test_missingSubjectIsAdded() -> None:
    """
    Without a Subject, one holding the prefixes is added above the other fields.
    """
    raw = b"From: a@example.com\r\n\r\nbody\r\n"
    out = tagged(raw, NOTES + VIRUS_NOTES, headers={})
    assert out == b"Subject: [VIRUS] [ATTACHMENT REMOVED]\r\n" + raw


def test_prefixNeverAddedTwice() -> None:
    """
    A prefix the subject already shows (plainly, encoded, or in another case)
    is not added again; only the missing one is.
    """
    for subject in (b"[ATTACHMENT REMOVED] report", b"=?utf-8?q?=5Battachment_removed=5D_x?="):
        raw = b"Subject: " + subject + b"\r\n\r\nbody\r\n"
        assert tagged(raw, NOTES, headers={}) == raw
        both = tagged(raw, NOTES + VIRUS_NOTES, headers={})
        assert both == raw.replace(b"Subject: ", b"Subject: [VIRUS] ")


def test_onlyTheFirstSubjectChanges() -> None:
    """
    A second Subject field and the field name's own spelling are left alone.
    """
    raw = b"SUBJECT:  one\r\nSubject: two\r\n\r\nbody\r\n"
    out = tagged(raw, NOTES, headers={})
    assert out == b"SUBJECT: [ATTACHMENT REMOVED]  one\r\nSubject: two\r\n\r\nbody\r\n"


# Status headers from the notes.


def test_statusHeaderSummarisesTheNotes() -> None:
    """
    With the default settings (spamd aside) a message that the strip filter
    changed gets an X-Popproxy-Status line with every note and the
    [ATTACHMENT REMOVED] prefix; nothing else changes.
    """
    raw = HAM
    out = tagged(raw, NOTES)
    assert out == (
        b"X-Popproxy-Status: strip: removed invoice.exe (blocked extension); scan: clean\r\n"
        + raw.replace(b"Subject: Lunch", b"Subject: [ATTACHMENT REMOVED] Lunch")
    )


def test_virusNotesGiveVirusPrefix() -> None:
    """
    The default rules mark a message in which the scan filter replaced a virus
    (the whole message or a part), once, and not one it found clean.
    """
    for notes in (VIRUS_NOTES, INFECTED_PART_NOTES, VIRUS_NOTES + INFECTED_PART_NOTES):
        out = tagged(HAM, notes, headers={})
        assert out == HAM.replace(b"Subject: Lunch", b"Subject: [VIRUS] Lunch")
    assert tagged(HAM, (("scan", "clean"),), headers={}) == HAM


def test_messageWithoutNotesIsNotTouched() -> None:
    """
    No spamd, no notes: the verdict is Deliver and the bytes are the very same.
    """
    verdict = judge(load(OFF), HAM)
    assert verdict == Deliver(note="")


def test_headerTemplatesNeedTheirNotes() -> None:
    """
    A header whose placeholder has no note is not set; a forged copy of a
    header the plugin owns is removed either way; braces can be escaped.
    """
    headers = {
        "X-Virus-Scanned": "clamd {{popproxy}}: {note:scan}",
        "X-Popproxy-Status": "{status}",
    }
    forged = b"X-Virus-Scanned: clamd: clean\r\nX-Popproxy-Status: scan: clean\r\n" + HAM
    assert tagged(forged, (), headers=headers) == HAM
    out = tagged(forged, (("scan", "clean"),), headers=headers)
    assert out == (
        b"X-Virus-Scanned: clamd {popproxy}: clean\r\nX-Popproxy-Status: scan: clean\r\n" + HAM
    )


def test_notesCannotInjectHeaderLines() -> None:
    """
    A note with line breaks (e.g. a file name) becomes one line of the header.
    """
    out = tagged(HAM, (("strip", "removed a.exe\r\nX-Spam-Flag: NO"),), subject_rules=[])
    assert out == b"X-Popproxy-Status: strip: removed a.exe X-Spam-Flag: NO\r\n" + HAM


def test_notesReachTheTagFilterThroughTheChain() -> None:
    """
    In a chain, the notes of the entries before it (by their chain names) make
    the status header and the prefixes.
    """

    class Noter:
        def __init__(self, name: str, note: str) -> None:
            self.name = name
            self.note = note

        def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
            return Deliver(note=self.note)

    chain = FilterChain(
        [
            ChainEntry("strip", Noter("strip", NOTES[0][1])),
            ChainEntry("scan", Noter("scan", NOTES[1][1])),
            ChainEntry("tag", load(OFF)),
        ],
        Clock(),
    )
    retrieval = FilterContext("RETR", 1, "alice", "127.0.0.1:4", "up", "s1")
    results: list[bytes] = []
    chain.processMessage(retrieval, HAM).addCallback(results.append)
    assert results == [tagged(HAM, NOTES)]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"spamd_address": "x"}, "unknown setting 'spamd_address'"),
        ({"on_failure": "ignore"}, "on_failure must be"),
        ({"timeout": 0}, "timeout must be"),
        ({"max_size": True}, "max_size must be"),
        ({"user": "a b"}, "user must be"),
        ({"spamd": "nonsense:"}, "rejects its settings"),
        ({"headers": {"Content-Type": "x"}}, "not an X- header"),
        ({"headers": {"X-A": "{sender}"}}, "unknown placeholder"),
        ({"headers": {"X-A": "a { b"}}, "lone brace"),
        ({"headers": {"X-Spam-Flag": "x"}}, "set twice"),
        ({"subject_rules": [{"prefix": "[X]", "when": "virus"}]}, "when must be"),
        ({"subject_rules": [{"prefix": "", "when": "spam"}]}, "prefix must be"),
        ({"subject_rules": [{"prefix": "=?x", "when": "spam"}]}, "'=?'"),
        ({"subject_rules": [{"prefix": "[X]"}]}, "not a {prefix, when} table"),
    ],
)
def test_badSettingsStopStartUp(settings: dict[str, Any], complaint: str) -> None:
    """
    A wrong setting is refused when the plugin is loaded, with a message
    saying what is wrong.
    """
    with pytest.raises(PluginError, match=re.escape(complaint)):
        load(settings)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mimeMessages())
def test_onlyHeaderLinesChange(raw: bytes) -> None:
    """
    Whatever arrives, the plugin (spamd off, every rule firing) never raises;
    the body is byte-identical, every original field is still there in order,
    and the first Subject only gained a prefix in front of its original octets.
    """
    verdict = judge(load(OFF), raw, NOTES + VIRUS_NOTES)
    out = output(verdict, raw)
    before, after = Message.fromBytes(raw), Message.fromBytes(out)
    assert out[after.headers.range[1] :] == raw[before.headers.range[1] :]
    added = {"x-popproxy-status", "subject"}
    assert [f for f in fieldLines(after) if f[0] not in added] == [
        f for f in fieldLines(before) if f[0] not in added
    ]
    subjects = before.headers.rawValues("Subject")
    newSubject = after.headers.rawValues("Subject")[0]
    assert newSubject.endswith(subjects[0] if subjects else b"")
    assert after.headers.rawValues("Subject")[1:] == subjects[1:]
    assert after.headers.get("X-Popproxy-Status") == (
        "strip: removed invoice.exe (blocked extension); scan: clean; "
        "scan: virus Eicar-Test-Signature"
    )


def fieldLines(message: Message) -> list[tuple[str, bytes]]:
    """Every header field as (lowercased name, its octets), in order."""
    data = message.toBytes()
    seen: dict[str, int] = {}
    fields = []
    for name in message.headers.names():
        index = seen.get(name.lower(), 0)
        seen[name.lower()] = index + 1
        start, end = message.headers.fieldRanges(name)[index]
        fields.append((name.lower(), data[start:end]))
    return fields


# spamd: the protocol, without sockets.


class FakeSpamd:
    """
    A spamd client answering every check with C{answer} (a verdict or an exception), and
    every PING with C{pong} (None, an exception or a Deferred).
    """

    def __init__(self, answer: SpamdAnswer | Exception, pong: Any = None) -> None:
        self.answer = answer
        self.pong = pong
        self.checked: list[bytes] = []

    def check(self, message: bytes) -> Deferred[SpamdAnswer]:
        self.checked.append(message)
        if isinstance(self.answer, Exception):
            return fail(self.answer)
        return succeed(self.answer)

    def ping(self) -> Deferred[None]:
        if isinstance(self.pong, Exception):
            return fail(self.pong)
        return self.pong if isinstance(self.pong, Deferred) else succeed(None)


def withFake(
    answer: SpamdAnswer | Exception, clock: Clock | None = None, pong: Any = None, **settings: Any
) -> tuple[TagFilter, FakeSpamd]:
    """A tag filter with C{settings} (no status header) asking a L{FakeSpamd}."""
    fake = FakeSpamd(answer, pong)
    settings = {"headers": {}, "spamd": SPAMD_ADDRESS, **settings}
    return TagFilter(parseSettings(settings), fake, clock=clock or Clock()), fake


SPAMD_ADDRESS = "tcp:127.0.0.1:783"


def test_withSpamdItReportsSpamdsStatus() -> None:
    """
    Loaded as the configuration loads it, the filter provides IScannerStatus and
    IStartable with spamd, and neither with scoring off (spamd = "": no daemon to report
    on).
    """
    with_ = loadFilter("tag", {"spamd": SPAMD_ADDRESS}, Path("."), (), Clock())
    verifyObject(IScannerStatus, with_)
    verifyObject(IStartable, with_)
    assert with_.scannerStatus() == ScannerStatus("spamd", SPAMD_ADDRESS)
    without = loadFilter("tag", {"spamd": ""}, Path("."), (), Clock())
    assert not IScannerStatus.providedBy(without) and not IStartable.providedBy(without)


@pytest.mark.parametrize(
    ("pong", "reachable", "logged"),
    [
        (None, True, ("info", f"spamd at {SPAMD_ADDRESS} is reachable")),
        (
            ConnectionRefusedError("Connection refused"),
            False,
            ("warn", f"spamd at {SPAMD_ADDRESS} cannot be reached: spamd refused the connection"),
        ),
        (
            DeferredTimeoutError(20, "Deferred"),
            False,
            (
                "warn",
                f"spamd at {SPAMD_ADDRESS} cannot be reached: no answer from spamd within 20 s",
            ),
        ),
        (SpamdError("spamd answered PING with 'SPAMD/1.0 76 Bad'"), True, None),
    ],
    ids=["pong", "refused", "silent", "odd-answer"],
)
def test_startUpProbeSaysOnceWhatItFound(pong: Any, reachable: bool, logged: Any) -> None:
    """
    Started, the filter PINGs spamd without waiting; the answer sets the status and is
    logged once (an odd answer still means spamd is there).
    """
    clock = Clock()
    clock.advance(7)
    tag, _ = withFake(SpamdAnswer(False, 0.0, 5.0), clock, pong)
    with capturedLogs() as events:
        tag.startFilter()  # returns None, nothing to wait for: mypy holds it to its -> None
    assert tag.scannerStatus().reachable is reachable
    assert tag.scannerStatus().since == 7.0
    lines = [(e["log_level"].name, formatEvent(e)) for e in events]
    assert lines == [logged or ("info", f"spamd at {SPAMD_ADDRESS} is reachable")]


def test_spamdDownWarnsOncePerMinuteAndComesBack() -> None:
    """
    Five messages while spamd refuses connections: each is marked unchecked, the change is
    logged once and the per-message warning once; a minute later the next warning says how
    many were held back; when spamd answers again that is logged once.
    """
    clock = Clock()
    tag, fake = withFake(ConnectionRefusedError("Connection refused"), clock)
    with capturedLogs() as events:
        for _ in range(5):
            assert judge(tag, HAM).note == "spam unchecked: spamd refused the connection"
            clock.advance(10)
        clock.advance(10)
        judge(tag, HAM)
        fake.answer = SpamdAnswer(False, 0.5, 5.0)
        judge(tag, HAM)
    assert [(e["log_level"].name, formatEvent(e)) for e in events if "spamd" in formatEvent(e)] == [
        ("warn", f"spamd at {SPAMD_ADDRESS} cannot be reached: spamd refused the connection"),
        ("warn", "spamd check of RETR 1 (UIDL uid-1) failed: spamd refused the connection"),
        (
            "warn",
            "spamd check of RETR 1 (UIDL uid-1) failed: spamd refused the connection "
            "(4 more like it not logged since 60 s ago)",
        ),
        ("info", f"spamd at {SPAMD_ADDRESS} is reachable again"),
    ]
    assert tag.scannerStatus() == ScannerStatus("spamd", SPAMD_ADDRESS, True, 60.0, "")


def test_spamVerdictHeadersAndPrefix() -> None:
    """
    A spam verdict gives X-Spam-Flag YES, the score, an X-Spam-Status with the
    tests, and the [SPAM] prefix; the message spamd saw is the one delivered.
    """
    tag, fake = withFake(SpamdAnswer(True, 1003.3, 5.0, ("GTUBE", "NO_RELAYS")))
    verdict = judge(tag, HAM)
    assert fake.checked == [HAM]
    assert output(verdict, HAM) == (
        b"X-Spam-Flag: YES\r\nX-Spam-Score: 1003.3\r\n"
        b"X-Spam-Status: Yes, score=1003.3 required=5.0 tests=GTUBE,NO_RELAYS\r\n"
        + HAM.replace(b"Subject: Lunch", b"Subject: [SPAM] Lunch")
    )
    assert verdict.note == "spam (1003.3/5.0); subject [SPAM]"


def test_thresholdOverridesSpamdsOwn() -> None:
    """
    With a threshold, the score decides against it, and X-Spam-Status says so;
    a forged X-Spam-Flag is replaced.
    """
    tag, _ = withFake(SpamdAnswer(False, 3.2, 5.0, ()), threshold=3)
    raw = b"X-Spam-Flag: NO\r\n" + HAM
    assert output(judge(tag, raw), raw) == (
        b"X-Spam-Flag: YES\r\nX-Spam-Score: 3.2\r\n"
        b"X-Spam-Status: Yes, score=3.2 required=3.0 tests=none\r\n"
        + HAM.replace(b"Subject: Lunch", b"Subject: [SPAM] Lunch")
    )


def test_uncheckedIsNeverHam() -> None:
    """
    spamd failing under the deliver policy: X-Spam-Status says unchecked and
    why, there is no X-Spam-Flag or X-Spam-Score (forged ones are removed) and
    no prefix; under tempfail the client is asked to come back later.
    """
    refused = ConnectionRefusedError("Connection refused")
    tag, _ = withFake(refused)
    raw = b"X-Spam-Flag: NO\r\nX-Spam-Score: -5\r\n" + HAM
    verdict = judge(tag, raw)
    assert output(verdict, raw) == (
        b"X-Spam-Status: unchecked (spamd refused the connection)\r\n" + HAM
    )
    assert verdict.note == "spam unchecked: spamd refused the connection"
    strict, _ = withFake(refused, on_failure="tempfail")
    assert judge(strict, raw) == TempFail(
        "spam check unavailable (spamd refused the connection), try again later",
        note="spam check failed: spamd refused the connection",
    )


def test_oversizeAndPartialMessagesAreNotScored() -> None:
    """
    A message over max_size, or a TOP preview, is not sent to spamd and is
    marked unchecked, whatever the failure policy: retrying would not help.
    """
    tag, fake = withFake(SpamdAnswer(False, 0.0, 5.0), max_size=100, on_failure="tempfail")
    verdict = judge(tag, HAM)
    assert output(verdict, HAM) == (
        f"X-Spam-Status: unchecked ({len(HAM)} octets, over max_size 100)\r\n".encode() + HAM
    )
    assert verdict.note == f"spam unchecked: {len(HAM)} octets, over max_size 100"
    preview = judge(tag, HAM, partial=True)
    assert output(preview, HAM) == b"X-Spam-Status: unchecked (partial message)\r\n" + HAM
    assert fake.checked == []


# spamd: the real one, through a real reactor in a child process.

RUNNER = r"""
import base64, json, sys
from pathlib import Path
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from popproxy._plugins import loadFilter
from popproxy.interfaces import FilterContext, Rewrite, TempFail
from popproxy.message import Message

async def main(reactor):
    job = json.load(sys.stdin)
    tag = loadFilter("tag", job["settings"], Path("."), (), reactor)
    results = []
    for encoded in job["messages"]:
        raw = base64.b64decode(encoded)
        context = FilterContext(
            command="RETR", index=1, user="alice", client="127.0.0.1:40000",
            upstream="tcp:127.0.0.1:110", session="s1",
        )
        started = reactor.seconds()
        verdict = await tag.filterMessage(Message.fromBytes(raw), context)
        out = verdict.message.toBytes() if isinstance(verdict, Rewrite) else raw
        results.append({
            "kind": type(verdict).__name__,
            "note": verdict.note,
            "reason": getattr(verdict, "reason", None),
            "output": None if isinstance(verdict, TempFail) else base64.b64encode(out).decode(),
            "seconds": reactor.seconds() - started,
        })
    print(json.dumps(results))

task.react(lambda reactor: ensureDeferred(main(reactor)))
"""


def runWithSpamd(settings: dict[str, Any], *messages: bytes) -> list[dict[str, Any]]:
    """
    Load the tag plugin with C{settings} in a child process running the real
    reactor and return, for each message, its verdict's kind, note, reason,
    the delivered bytes (C{output}) and the seconds it took.
    """
    job = {
        "settings": {"headers": {}, **settings},
        "messages": [base64.b64encode(message).decode() for message in messages],
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    for result in results:
        if result["output"] is not None:
            result["output"] = base64.b64decode(result["output"])
    return results


def splitAdded(out: bytes, original: bytes) -> Message:
    """The header fields added on top of C{original} (which C{out} must end with)."""
    assert out.endswith(original)
    return Message.fromBytes(out[: len(out) - len(original)] + b"\r\n")


def test_gtubeIsSpamAndNormalMailIsNot(spamdServer: SpamdServer) -> None:
    """
    The real spamd scores GTUBE as spam: X-Spam-Flag YES, a score over 1000,
    GTUBE among the tests and the [SPAM] prefix.  Normal mail is not: flag NO,
    no prefix.  In both, the added fields are the only change besides the
    prefix.
    """
    spam, ham = runWithSpamd({"spamd": spamdServer.endpoint}, SPAM, HAM)
    assert spam["kind"] == "Rewrite"
    added = splitAdded(spam["output"], SPAM.replace(b"Subject: Offer", b"Subject: [SPAM] Offer"))
    assert added.headers.names() == ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Status")
    assert added.headers.get("X-Spam-Flag") == "YES"
    assert float(added.headers.get("X-Spam-Score") or "0") >= 1000
    status = added.headers.get("X-Spam-Status") or ""
    assert re.fullmatch(r"Yes, score=\d+\.\d required=5\.0 tests=[A-Z0-9_,]+", status), status
    assert "GTUBE" in status.partition("tests=")[2].split(",")
    assert spam["note"].startswith("spam (") and spam["note"].endswith("; subject [SPAM]")

    assert ham["kind"] == "Rewrite"
    added = splitAdded(ham["output"], HAM)
    assert added.headers.get("X-Spam-Flag") == "NO"
    assert float(added.headers.get("X-Spam-Score") or "99") < 5
    assert (added.headers.get("X-Spam-Status") or "").startswith("No, score=")
    assert ham["note"].startswith("not spam (")


def test_overMaxSizeIsNotSentToSpamd(spamdServer: SpamdServer) -> None:
    """
    With the real spamd up, a message over max_size is delivered unscored,
    marked unchecked with its size, never with an X-Spam-Flag.
    """
    (result,) = runWithSpamd({"spamd": spamdServer.endpoint, "max_size": 200}, SPAM)
    assert result["output"] == (
        f"X-Spam-Status: unchecked ({len(SPAM)} octets, over max_size 200)\r\n".encode() + SPAM
    )


def test_spamdDownFollowsThePolicy() -> None:
    """
    Nothing listening where spamd should be: "deliver" delivers unchecked (not
    ham) at once; "tempfail" asks the client to retry.
    """
    address = f"tcp:127.0.0.1:{freePort()}"
    deliver, tempfail = (
        runWithSpamd({"spamd": address, "on_failure": policy}, HAM)[0]
        for policy in ("deliver", "tempfail")
    )
    assert deliver["output"] == b"X-Spam-Status: unchecked (spamd refused the connection)\r\n" + HAM
    assert tempfail["kind"] == "TempFail"
    assert tempfail["reason"] == (
        "spam check unavailable (spamd refused the connection), try again later"
    )


@pytest.fixture
def stalledSpamd() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"tcp:127.0.0.1:{listener.getsockname()[1]}"


def test_stalledSpamdTimesOut(stalledSpamd: str) -> None:
    """
    A spamd that accepts but never answers costs the configured timeout, no
    more, and the message is delivered unchecked.
    """
    started = time.monotonic()
    (result,) = runWithSpamd({"spamd": stalledSpamd, "timeout": 0.5}, HAM)
    assert (
        result["output"]
        == b"X-Spam-Status: unchecked (no answer from spamd within 0.5 s)\r\n" + HAM
    )
    assert 0.5 <= result["seconds"] < 2.0
    assert time.monotonic() - started < 10
