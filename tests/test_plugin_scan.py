"""
The shipped scan plugin's filter and factory (plugins/scan/_filter.py, _factory.py): the
filter's policies with a fake scanner, and the plugin loaded exactly as the configuration
loads it, run through the filter chain against a real
private clamd (TCP and UNIX socket), a clamd that is down and one that never answers.

The real-clamd tests need a running reactor: each runs the daemon's own FilterChain with a
DirectoryQuarantine in a short-lived subprocess (RUNNER, under twisted.internet.task.react),
which gets the cases as JSON on stdin and answers with what a client would have received.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from popproxy._plugins import PluginError, _loadFile, loadFilter
from popproxy._quarantine import DirectoryQuarantine, Record
from popproxy.interfaces import (
    IQuarantine,
    IScannerStatus,
    IStartable,
    Replace,
    Rewrite,
    ScannerStatus,
    TempFail,
)
from popproxy.message import Message
from popproxy.testing import (
    MemoryQuarantine,
    attachmentPart,
    buildMessage,
    makeContext,
    runFilter,
    textPart,
)
from tests.peers.clamd import EICAR_SIGNATURE, ClamdPeer, StallingServer, eicar

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "scan"

# The plugin module itself (the very module object the loader uses), for its protocol parts.
scan: Any = _loadFile(PLUGIN)

HEADER = b"X-Virus-Scanned: popproxy/clamd; "
TEXT = textPart("Hello, the report is attached.\n")
PDF = attachmentPart(b"%PDF-1.4 harmless " * 300, "report.pdf", contentType="application/pdf")


def splitStamp(output: bytes | None) -> tuple[str, bytes]:
    """
    The value of the X-Virus-Scanned field on top of C{output}, and the octets below it.
    """
    assert output is not None
    stamped = Message.fromBytes(output)
    [(start, end)] = stamped.headers.fieldRanges("X-Virus-Scanned")
    assert start == 0
    value = stamped.headers.get("X-Virus-Scanned")
    assert value is not None
    return value, output[end:]


def stampOf(output: bytes | None, raw: bytes) -> str:
    """
    The X-Virus-Scanned value of C{output}, checking that this one field, added on top, is
    all that differs from C{raw}.
    """
    value, rest = splitStamp(output)
    assert rest == raw
    return value


def eicarAttachment() -> bytes:
    """A base64 attachment holding the EICAR test string."""
    return attachmentPart(eicar(), "invoice.com")


def eicarBody() -> bytes:
    """A single-part message whose body is the EICAR test string."""
    return (
        b"From: Mallory <mallory@example.com>\r\nTo: bob@example.net\r\n"
        b"Subject: see this\r\nMessage-ID: <eicar@example.com>\r\n\r\n" + eicar() + b"\r\n"
    )


# The filter's policies, with a fake scanner and no reactor.


@dataclass
class FakeScanner:
    """Answers each scan from a function of the scanned octets, and each PING with pong."""

    answer: Any
    scanned: list[bytes]
    pong: Any = None
    sessions: int = 0
    closed: int = 0

    def scan(self, data: bytes) -> Deferred[Any]:
        self.scanned.append(data)
        return self._settled(self.answer(data))

    def session(self) -> FakeScanner:
        self.sessions += 1
        return self

    def close(self) -> Deferred[None]:
        self.closed += 1
        return succeed(None)

    def ping(self) -> Deferred[None]:
        return self._settled(self.pong)

    def _settled(self, outcome: Any) -> Deferred[Any]:
        if isinstance(outcome, BaseException):
            return fail(outcome)
        if isinstance(outcome, Deferred):
            return outcome
        return succeed(outcome)


def fakeFilter(
    answer: Any, clock: Clock | None = None, pong: Any = None, **settings: Any
) -> tuple[Any, FakeScanner]:
    scanner = FakeScanner(answer, [], pong)
    return scan.VirusScan(scanner, clock or Clock(), scan.parseSettings(settings)), scanner


def findEicar(data: bytes) -> Any:
    return scan.ScanResult(("Test.EICAR",) if eicar() in data else ())


def test_partsModeScansDecodedLeavesOnly() -> None:
    """
    In parts mode clamd gets each leaf part's decoded payload (the EICAR octets themselves,
    not their base64) and never the multipart containers.
    """
    virusScan, scanner = fakeFilter(findEicar)
    raw = buildMessage(TEXT, PDF, eicarAttachment())
    result = runFilter(virusScan, raw)
    assert eicar() in scanner.scanned
    assert len(scanner.scanned) == 3
    assert isinstance(result.verdict, Rewrite)


def test_infectedAttachedMessageIsReplacedWhole() -> None:
    """
    EICAR as the body of an attached message (message/rfc822): the whole attached message
    part is quarantined and replaced, not just its body, and the other parts are untouched.
    """
    attached = (
        b"Content-Type: message/rfc822\r\n\r\n"
        b"From: mallory@example.com\r\nSubject: fwd\r\n\r\n" + eicar() + b"\r\n"
    )
    virusScan, _ = fakeFilter(findEicar)
    raw = buildMessage(TEXT, attached)
    context = makeContext()
    result = runFilter(virusScan, raw, context)
    start, end = Message.fromBytes(raw).partAt((1,)).range
    [stored] = context.quarantine.stored
    assert stored.original == raw[start:end]
    assert isinstance(result.verdict, Rewrite)
    rest = splitStamp(result.output)[1]
    assert rest.startswith(raw[:start]) and rest.endswith(raw[end:])
    assert Message.fromBytes(rest).partAt((1,)).contentType == "text/plain"


def test_partialPreviewIsNeverCalledClean() -> None:
    """
    A TOP preview filtered as partial is marked unchecked, not clean.
    """
    virusScan, _ = fakeFilter(findEicar)
    raw = buildMessage(PDF)
    context = makeContext(command="TOP", partial=True)
    result = runFilter(virusScan, raw, context)
    assert result.output == HEADER + b"unchecked (partial message)\r\n" + raw


def test_stampCleanOffDeliversUntouched() -> None:
    """
    With stamp_clean off a clean message is delivered as the very bytes received.
    """
    virusScan, _ = fakeFilter(findEicar, stamp_clean=False)
    raw = buildMessage(PDF)
    assert runFilter(virusScan, raw).output is raw


def test_infectedPartWithoutQuarantineTempfails() -> None:
    """
    Without a quarantine an infected part cannot be removed (it would be lost): TempFail.
    """
    virusScan, _ = fakeFilter(findEicar)
    result = runFilter(virusScan, buildMessage(eicarAttachment()), makeContext(quarantine=None))
    assert isinstance(result.verdict, TempFail)
    assert "no quarantine" in result.verdict.reason


def test_quarantineFailureTempfails() -> None:
    """
    A quarantine that cannot store the part makes the message a temporary failure.
    """

    class BrokenQuarantine(MemoryQuarantine):
        def store(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

        def storeParts(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

    virusScan, _ = fakeFilter(findEicar)
    context = makeContext(quarantine=BrokenQuarantine())
    result = runFilter(virusScan, buildMessage(eicarAttachment()), context)
    assert isinstance(result.verdict, TempFail)
    assert result.verdict.note == "virus Test.EICAR, quarantine failed"


def infectedTwice() -> bytes:
    """A message with two infected attachments (one inside a nested multipart) among clean parts."""
    nested = (
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
        b"--inner\r\n" + attachmentPart(eicar(), "second.com") + b"\r\n--inner--\r\n"
    )
    return buildMessage(TEXT, eicarAttachment(), PDF, nested)


def test_infectedPartsRetriedAreKeptOnce(tmp_path: Path) -> None:
    """
    The infected parts of a message are kept in one batch, a record each, and replaced by
    notices naming their ids; scanning the same message (same UIDL) again, as a retry does,
    delivers the same octets and finds the records kept (nothing rewritten).  The same
    message under another UIDL gets records of its own.
    """
    virusScan, _ = fakeFilter(findEicar)
    quarantine = DirectoryQuarantine(tmp_path / "q")
    raw = infectedTwice()
    first = runFilter(virusScan, raw, makeContext(quarantine=quarantine))
    records = {record.id: record for record in quarantine.records()}
    message = Message.fromBytes(raw)
    originals = [message.partAt(path) for path in ((1,), (3, 0))]
    assert sorted(quarantine.original(r) for r in records.values()) == sorted(
        raw[slice(*part.range)] for part in originals
    )
    assert sorted(r.data["path"] for r in records.values()) == [[1], [3, 0]]
    assert first.output is not None and eicar() not in first.output
    stamp, rest = splitStamp(first.output)
    assert stamp == "popproxy/clamd; infected parts replaced (Test.EICAR)"
    delivered = Message.fromBytes(rest)
    for record in records.values():
        assert record.id in delivered.partAt(tuple(record.data["path"])).text()
    assert rest.startswith(raw[: originals[0].range[0]])
    assert rest.endswith(raw[originals[1].range[1] :])

    again = runFilter(virusScan, raw, makeContext(quarantine=quarantine))
    assert again.output == first.output
    assert {record.id: record for record in quarantine.records()} == records

    other = runFilter(virusScan, raw, makeContext(quarantine=quarantine, uidl="uidl-2"))
    assert other.output != first.output
    assert len(list(quarantine.records())) == 4
    assert not list((tmp_path / "q").rglob("*.tmp"))


def test_quarantineWithoutBatchesKeepsPartsOneByOne() -> None:
    """
    A quarantine offering only store (no storeParts) still keeps every infected part, one
    call each, and the notices name the ids it gave.
    """

    @implementer(IQuarantine)
    class OneByOne:
        def __init__(self) -> None:
            self.kept: list[tuple[bytes, str, str]] = []

        def store(self, original: bytes, context: Any, reason: str, plugin: str = "") -> str:
            self.kept.append((original, reason, plugin))
            return f"one-{len(self.kept)}"

    virusScan, _ = fakeFilter(findEicar)
    quarantine = OneByOne()
    raw = infectedTwice()
    result = runFilter(virusScan, raw, makeContext(quarantine=quarantine))
    message = Message.fromBytes(raw)
    assert quarantine.kept == [
        (raw[slice(*message.partAt(path).range)], "virus found: Test.EICAR", "scan")
        for path in ((1,), (3, 0))
    ]
    delivered = Message.fromBytes(splitStamp(result.output)[1])
    assert "one-1" in delivered.partAt((1,)).text()
    assert "one-2" in delivered.partAt((3, 0)).text()


def test_bothModeScansWhatWouldBeDelivered() -> None:
    """
    In both mode the message that would be delivered (infected part already replaced) is
    scanned whole too; if clamd still finds something there, the whole message is replaced.
    """
    virusScan, scanner = fakeFilter(findEicar, mode="both")
    raw = buildMessage(eicarAttachment())
    result = runFilter(virusScan, raw)
    assert isinstance(result.verdict, Rewrite)
    assert eicar() not in scanner.scanned[-1] and scanner.scanned[-1].startswith(b"From:")

    virusScan, scanner = fakeFilter(
        lambda data: scan.ScanResult(("Whole",) if data.startswith(b"From:") else ()),
        mode="both",
    )
    result = runFilter(virusScan, raw)
    assert isinstance(result.verdict, Replace)
    assert result.verdict.reason == "virus found: Whole"


def test_clamdErrorFollowsTheFailurePolicy() -> None:
    """
    An ERROR answer is a failure: tempfail by default, or delivered marked unchecked.
    """
    answer = lambda data: scan.ClamdError("clamd: Can't allocate memory ERROR")  # noqa: E731
    virusScan, _ = fakeFilter(answer)
    assert isinstance(runFilter(virusScan, buildMessage(PDF)).verdict, TempFail)
    virusScan, _ = fakeFilter(answer, on_failure="deliver")
    raw = buildMessage(PDF)
    stamp = stampOf(runFilter(virusScan, raw).output, raw)
    assert stamp == "popproxy/clamd; unchecked (clamd: Can't allocate memory ERROR)"


# Reachability: what the filter says about clamd, and how often.

ADDRESS = "tcp:127.0.0.1:3310"


def logLines(events: Sequence[LogEvent]) -> list[tuple[str, str, str]]:
    return [(e["log_namespace"], e["log_level"].name, formatEvent(e)) for e in events]


def test_providesScannerStatusAndStartable() -> None:
    """
    The filter, loaded as the configuration loads it, reports clamd's status (nothing known
    before any attempt) and can be started.
    """
    virusScan = loadFilter("scan", {"address": ADDRESS}, Path("."), (), Clock())
    verifyObject(IScannerStatus, virusScan)
    verifyObject(IStartable, virusScan)
    assert virusScan.scannerStatus() == ScannerStatus("clamd", ADDRESS)


@pytest.mark.parametrize(
    ("pong", "reachable", "logged"),
    [
        (None, True, ("info", f"clamd at {ADDRESS} is reachable")),
        (
            scan.ClamdUnavailable("cannot reach clamd: Connection was refused by other side"),
            False,
            (
                "warn",
                f"clamd at {ADDRESS} cannot be reached: Connection was refused by other side",
            ),
        ),
        (
            Deferred(),
            False,
            ("warn", f"clamd at {ADDRESS} cannot be reached: no answer to PING within 20 s"),
        ),
        (scan.ClamdError("clamd answered PING with 'UNKNOWN COMMAND'"), True, None),
    ],
    ids=["pong", "refused", "silent", "odd-answer"],
)
def test_startUpProbeSaysOnceWhatItFound(pong: Any, reachable: bool, logged: Any) -> None:
    """
    Started, the filter PINGs clamd without waiting for it; the answer (or none within the
    filter's timeout) sets the status and is logged once. An odd answer still means clamd
    is there.
    """
    clock = Clock()
    clock.advance(500)
    virusScan, _ = fakeFilter(findEicar, clock, pong, address=ADDRESS)
    with capturedLogs() as events:
        assert virusScan.startFilter() is None
        clock.advance(20)
    status = virusScan.scannerStatus()
    assert status.reachable is reachable
    assert status.since == (520.0 if isinstance(pong, Deferred) else 500.0)
    lines = [(level, text) for _, level, text in logLines(events)]
    if logged is None:
        assert lines == [("info", f"clamd at {ADDRESS} is reachable")]
    else:
        assert lines == [logged]
        assert events[0]["log_namespace"] == "popproxy.scanner.clamd"


def test_unreachableClamdWarnsOncePerMinuteAndComesBack() -> None:
    """
    Five messages while clamd cannot be reached: each is delivered unchecked (policy
    deliver), the change is logged once and the per-message warning once, not five
    times; the status says why. When clamd answers again, that is logged once, with the
    number of warnings held back, and the status is current again.
    """
    clock = Clock()
    down = scan.ClamdUnavailable("cannot reach clamd: Connection was refused by other side")
    answers = [down] * 5 + [scan.ScanResult()]
    virusScan, _ = fakeFilter(lambda data: answers.pop(0), clock, on_failure="deliver")
    raw = buildMessage(PDF)
    with capturedLogs() as events:
        stamps = []
        for _ in range(5):
            stamps.append(stampOf(runFilter(virusScan, raw).output, raw))
            clock.advance(5)
        status = virusScan.scannerStatus()
        assert stampOf(runFilter(virusScan, raw).output, raw) == "popproxy/clamd; clean"
    assert stamps == ["popproxy/clamd; unchecked (clamd unreachable)"] * 5
    assert (status.reachable, status.since) == (False, 0.0)
    assert status.detail == "Connection was refused by other side"
    assert [line for line in logLines(events) if line[1] != "info" or "clamd at" in line[2]] == [
        (
            "popproxy.scanner.clamd",
            "warn",
            "clamd at unix:/run/clamav/clamd.ctl cannot be reached: "
            "Connection was refused by other side",
        ),
        ("popproxy._verdicts", "warn", "RETR 1 (UIDL uidl-1) not scanned: clamd unreachable"),
        (
            "popproxy.scanner.clamd",
            "info",
            "clamd at unix:/run/clamav/clamd.ctl is reachable again "
            "(4 warnings about it were not logged meanwhile)",
        ),
    ]
    assert virusScan.scannerStatus() == ScannerStatus(
        "clamd", "unix:/run/clamav/clamd.ctl", True, 25.0, ""
    )


def test_fileNamesCannotInjectHeaderLines() -> None:
    """
    A part named with encoded line breaks (RFC 2231) ends up in the unchecked reason on one
    line: it cannot add a header field of its own.
    """
    evil = (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''a%0D%0AX-Injected%3A%20yes.bin\r\n"
        b"\r\nsome data\r\n"
    )
    virusScan, _ = fakeFilter(findEicar, max_stream=5)
    raw = buildMessage(evil)
    stamp = stampOf(runFilter(virusScan, raw).output, raw)
    assert stamp.startswith("popproxy/clamd; unchecked (part 1 (a  X-Injected: yes.bin) too large")


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"mode": "all"}, "mode must be one of"),
        ({"on_failure": "ignore"}, "on_failure must be"),
        ({"max_stream": 0}, "max_stream must be"),
        ({"max_connections": True}, "max_connections must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"header": "X Virus"}, "header must be"),
        ({"notice": "{virus} {password}"}, "notice may use"),
        ({"adress": "tcp:127.0.0.1:3310"}, "unknown setting 'adress'"),
        ({"address": "clamd.example.com"}, "address must be"),
    ],
)
def test_badSettingsStopStartUp(settings: Mapping[str, Any], complaint: str) -> None:
    """
    Each unusable setting is refused when the plugin is loaded, naming the setting.
    """
    with pytest.raises(PluginError, match=complaint):
        loadFilter("scan", settings, Path("."), (), Clock())


# Through the filter chain against real clamd, in a subprocess with a running reactor.

RUNNER = r"""
import base64, json, sys, time
from pathlib import Path

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, textFileLogObserver

from popproxy._chain import ChainEntry, FilterChain
from popproxy._plugins import loadFilter
from popproxy._quarantine import DirectoryQuarantine
from popproxy._retrieval import TemporaryFailure
from popproxy.interfaces import FilterContext


async def runCase(reactor, case):
    scanFilter = loadFilter("scan", case["settings"], Path("."), (), reactor)
    quarantine = DirectoryQuarantine(Path(case["quarantine"])) if case["quarantine"] else None
    entry = ChainEntry(scanFilter.name, scanFilter, timeout=case["chainTimeout"])
    chain = FilterChain([entry], reactor, quarantine)

    async def one(index, raw):
        retrieval = FilterContext(
            "RETR", index, "alice", "127.0.0.1:50000", "tcp:127.0.0.1:110", "test",
            f"uidl-{index}",
        )
        started = time.monotonic()
        try:
            output = await chain.run(retrieval, raw)
        except TemporaryFailure as e:
            return {"tempfail": str(e), "elapsed": time.monotonic() - started}
        return {
            "output": base64.b64encode(output).decode(),
            "elapsed": time.monotonic() - started,
        }

    messages = [base64.b64decode(m) for m in case["messages"]]
    return await defer.gatherResults(
        [defer.ensureDeferred(one(i + 1, raw)) for i, raw in enumerate(messages)]
    )


async def main(reactor):
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    cases = json.load(sys.stdin)
    results = [await runCase(reactor, case) for case in cases]
    sys.stdout.write(json.dumps(results))


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


@dataclass(frozen=True)
class Delivery:
    """What a client would get for one message: the octets, or a temporary failure."""

    output: bytes | None
    tempfail: str | None
    elapsed: float


@dataclass(frozen=True)
class Case:
    """Messages run, concurrently, through a chain holding the scan plugin with settings."""

    settings: Mapping[str, Any]
    messages: tuple[bytes, ...]
    quarantine: Path | None = None
    chainTimeout: float = 30.0


def runChains(*cases: Case, timeout: float = 25.0) -> list[list[Delivery]]:
    """
    Run each case in a fresh subprocess with the real reactor; return the deliveries per case.
    """
    spec = [
        {
            "settings": dict(case.settings),
            "messages": [base64.b64encode(raw).decode() for raw in case.messages],
            "quarantine": None if case.quarantine is None else str(case.quarantine),
            "chainTimeout": case.chainTimeout,
        }
        for case in cases
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
        env=environment,
        check=False,
    )
    log = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        pytest.fail(f"the chain runner failed ({done.returncode}):\n{log}")
    print(log)  # shown in the report of a failing test
    return [
        [
            Delivery(
                None if "output" not in item else base64.b64decode(item["output"]),
                item.get("tempfail"),
                item["elapsed"],
            )
            for item in deliveries
        ]
        for deliveries in json.loads(done.stdout)
    ]


def quarantined(directory: Path) -> dict[str, tuple[bytes, Record]]:
    """The originals in a DirectoryQuarantine with their records, by id (none if it is empty)."""
    if not directory.exists():
        return {}
    quarantine = DirectoryQuarantine(directory, create=False)
    return {record.id: (quarantine.original(record), record) for record in quarantine.records()}


def test_eicarAttachmentIsReplacedAndQuarantined(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    Real clamd over TCP finds EICAR in a base64 attachment: that part alone is replaced by a
    notice naming the signature and the quarantine id, the quarantine holds the part's exact
    octets, and every other octet of the message is as it arrived.
    """
    raw = buildMessage(TEXT, PDF, eicarAttachment())
    infected = Message.fromBytes(raw).partAt((2,))
    start, end = infected.range
    [[delivery]] = runChains(Case({"address": clamd.tcpAddress}, (raw,), quarantine=tmp_path / "q"))
    assert delivery.output is not None, delivery.tempfail
    [(identifier, (original, record))] = quarantined(tmp_path / "q").items()
    assert original == raw[start:end]
    stamp, rest = splitStamp(delivery.output)
    assert stamp == f"popproxy/clamd; infected parts replaced ({EICAR_SIGNATURE}.UNOFFICIAL)"
    assert rest.startswith(raw[:start]) and rest.endswith(raw[end:])
    notice = Message.fromBytes(rest).partAt((2,))
    assert notice.contentType == "text/plain"
    assert f"{EICAR_SIGNATURE}.UNOFFICIAL" in notice.text()
    assert identifier in notice.text() and "invoice.com" in notice.text()
    assert eicar() not in delivery.output
    assert record.plugin == "scan" and EICAR_SIGNATURE in record.reason
    assert "instream" in clamd.log() and "FOUND" in clamd.log()


def test_eicarBodyReplacesTheWholeMessage(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    EICAR as the body of a single-part message: the client gets a notice instead (with the
    sender and subject, the signature, the quarantine id header) and the quarantine holds the
    original message byte for byte.
    """
    raw = eicarBody()
    [[delivery]] = runChains(Case({"address": clamd.tcpAddress}, (raw,), quarantine=tmp_path / "q"))
    assert delivery.output is not None, delivery.tempfail
    [(identifier, (original, record))] = quarantined(tmp_path / "q").items()
    assert original == raw and record.plugin == "scan"
    notice = Message.fromBytes(delivery.output)
    assert notice.headers.get("X-Popproxy-Quarantine-Id") == identifier
    assert notice.headers.get("Subject") == "[VIRUS] see this"
    assert notice.headers.get("Message-ID") == "<eicar@example.com>"
    assert f"{EICAR_SIGNATURE}.UNOFFICIAL" in notice.root.text()
    assert eicar() not in delivery.output


def test_infectedPartsRetriedAgainstRealClamdAreKeptOnce(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    Real clamd finds EICAR in two parts of a message; retrieving it again (another chain
    run on the same quarantine, same UIDL) delivers the same octets and leaves the same two
    records, while the same octets under another UIDL get two records of their own.
    """
    raw = infectedTwice()
    q = tmp_path / "q"
    [[first]], [[again, other]] = (
        runChains(Case({"address": clamd.tcpAddress}, (raw,), quarantine=q)),
        runChains(Case({"address": clamd.tcpAddress}, (raw, raw), quarantine=q)),
    )
    assert first.output is not None, first.tempfail
    assert again.output == first.output
    assert other.output is not None and other.output != first.output
    kept = quarantined(q)
    assert sorted((record.uidl, record.data["path"]) for _, record in kept.values()) == [
        ("uidl-1", [1]),
        ("uidl-1", [3, 0]),
        ("uidl-2", [1]),
        ("uidl-2", [3, 0]),
    ]
    delivered = Message.fromBytes(splitStamp(first.output)[1])
    for identifier, (original, record) in kept.items():
        if record.uidl == "uidl-1":
            assert identifier in delivered.partAt(tuple(record.data["path"])).text()
            assert eicar() in base64.b64decode(original.split(b"\r\n\r\n", 1)[1])


def test_cleanMessagesAreStampedAndOtherwiseUntouched(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    Clean messages (several at once through two connections, one with a part of 900 kB
    streamed in many chunks) get the clean header above their unchanged octets, over TCP and
    over clamd's UNIX socket alike; EICAR is found over the UNIX socket too.
    """
    large = attachmentPart(os.urandom(900_000), "photos.tar")
    clean = [buildMessage(textPart(f"Message {number}.\n"), PDF) for number in range(5)]
    clean.append(buildMessage(TEXT, large))
    infected = buildMessage(eicarAttachment())
    tcp, unix = runChains(
        Case({"address": clamd.tcpAddress, "max_connections": 2}, tuple(clean)),
        Case({"address": clamd.unixAddress}, (clean[-1], infected), quarantine=tmp_path / "q"),
    )
    for raw, delivery in zip([*clean, clean[-1]], [*tcp, unix[0]], strict=True):
        assert delivery.output == HEADER + b"clean\r\n" + raw
    assert splitStamp(unix[1].output)[0].startswith("popproxy/clamd; infected parts replaced")
    assert len(quarantined(tmp_path / "q")) == 1
    # Every leaf part was really scanned: two per clean message, the UNIX ones as "local".
    assert clamd.log().count(": OK") == 2 * 7
    assert clamd.log().count("instream(local)") == 3


def test_messageModeLetsClamdDecodeTheMime(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    In message mode the raw message goes to clamd, which decodes the base64 attachment
    itself; an infected message is replaced whole.
    """
    raw = buildMessage(TEXT, PDF, eicarAttachment())
    [[delivery]] = runChains(
        Case({"address": clamd.tcpAddress, "mode": "message"}, (raw,), quarantine=tmp_path / "q")
    )
    assert delivery.output is not None, delivery.tempfail
    assert Message.fromBytes(delivery.output).headers.get("X-Popproxy-Quarantine-Id")
    assert [original for original, _ in quarantined(tmp_path / "q").values()] == [raw]


def test_clamdDownFollowsThePolicy(clamdUnreachable: str, tmp_path: Path) -> None:
    """
    With nothing listening: by default a temporary failure saying the scanner is unreachable;
    with on_failure = "deliver" the message arrives marked unchecked, never clean.
    """
    raw = buildMessage(PDF)
    [[refused], [delivered]] = runChains(
        Case({"address": clamdUnreachable}, (raw,)),
        Case({"address": clamdUnreachable, "on_failure": "deliver"}, (raw,)),
    )
    assert refused.output is None
    assert refused.tempfail == "the virus scanner is unreachable, try again later"
    assert delivered.output == HEADER + b"unchecked (clamd unreachable)\r\n" + raw


def test_stallingClamdTimesOutWithinBounds(clamdStalling: StallingServer) -> None:
    """
    clamd accepting and never answering: after the plugin's timeout (1 s here, well inside
    the chain's own 10 s) the policy applies, tempfail or deliver-unchecked.
    """
    raw = buildMessage(PDF)
    settings = {"address": clamdStalling.address, "timeout": 1}
    [[refused], [delivered]] = runChains(
        Case(settings, (raw,), chainTimeout=10),
        Case({**settings, "on_failure": "deliver"}, (raw,), chainTimeout=10),
    )
    assert refused.tempfail == "the virus scanner did not answer in time, try again later"
    assert delivered.output == HEADER + b"unchecked (clamd timed out after 1 s)\r\n" + raw
    for delivery in (refused, delivered):
        assert 0.9 <= delivery.elapsed < 3.0
    assert clamdStalling.accepted >= 2


def test_oversizedPartsAreNeverCalledClean(clamd: ClamdPeer, tmp_path: Path) -> None:
    """
    A part over max_stream is not sent (delivered unchecked by default, or tempfailed); one
    within max_stream but over clamd's StreamMaxLength is refused by clamd, which the plugin
    reads as oversize too. The small parts are still scanned, and EICAR beside a big part is
    still removed.
    """
    big = attachmentPart(os.urandom(clamd.streamMaxLength + 100_000), "big.bin")
    raw = buildMessage(TEXT, big)
    withEicar = buildMessage(TEXT, big, eicarAttachment())
    limited = {"address": clamd.tcpAddress, "max_stream": clamd.streamMaxLength}
    [ours], [tempfailed], [theirs] = runChains(
        Case(limited, (withEicar,), quarantine=tmp_path / "q"),
        Case({**limited, "on_oversize": "tempfail"}, (raw,)),
        Case({"address": clamd.tcpAddress, "max_stream": 8 * 1024 * 1024}, (raw,)),
    )
    assert splitStamp(ours.output)[0] == (
        "popproxy/clamd; unchecked (part 2 (big.bin) too large: "
        f"{clamd.streamMaxLength + 100_000} octets > max_stream {clamd.streamMaxLength}); "
        f"infected parts replaced ({EICAR_SIGNATURE}.UNOFFICIAL)"
    )
    assert ours.output is not None and eicar() not in ours.output
    assert len(quarantined(tmp_path / "q")) == 1
    assert tempfailed.tempfail == "the message is too large for the virus scanner, try again later"
    assert stampOf(theirs.output, raw) == (
        "popproxy/clamd; unchecked (part 2 (big.bin) too large for clamd's StreamMaxLength "
        f"({clamd.streamMaxLength + 100_000} octets))"
    )
    assert "size limit" in clamd.log().lower()
