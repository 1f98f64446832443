"""
Tests for popproxy._chain.FilterChain and plugin loading: order, every
verdict, sync/Deferred/async filters, timeouts (task.Clock), errors under
each policy, garbage verdicts, the quarantine seam.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from zope.interface import implementer

from popproxy._chain import QUARANTINE_HEADER, UNCHECKED_HEADER, ChainEntry, FilterChain
from popproxy._plugins import PluginError, loadFilter
from popproxy._quarantine import DirectoryQuarantine
from popproxy._retrieval import TemporaryFailure
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    IStartable,
    Replace,
    Rewrite,
    TempFail,
)
from popproxy.message import Message, ParseLimits
from popproxy.testing import runChain

RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = FilterContext("RETR", 3, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")


@implementer(IMessageFilter)
class Recorder:
    """
    A filter that records what it saw and answers with a given function.
    """

    def __init__(self, name: str, answer: Any) -> None:
        self.name = name
        self._answer = answer
        self.seen: list[tuple[Message, FilterContext]] = []

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        self.seen.append((message, context))
        return self._answer(message, context)


def run(chain: FilterChain, raw: bytes = RAW) -> list[Any]:
    results: list[Any] = []
    chain.processMessage(CONTEXT, raw).addBoth(results.append)
    return results


def chainOf(*filters: Recorder, clock: Clock | None = None, **options: Any) -> FilterChain:
    entries = [
        ChainEntry(
            f.name,
            f,
            options.pop(f"timeout_{f.name}", 30.0),
            options.pop(f"onError_{f.name}", "tempfail"),
        )
        for f in filters
    ]
    return FilterChain(entries, clock or Clock(), **options)


def test_untouchedMessageIsTheSameObject() -> None:
    """
    When every filter delivers unchanged, the chain returns the very bytes
    it was given (no copy, no re-serialization).
    """
    results = run(
        chainOf(Recorder("a", lambda m, c: Deliver()), Recorder("b", lambda m, c: Deliver()))
    )
    assert results[0] is RAW


def test_orderAndRewrite() -> None:
    """
    Filters run in configured order; each sees the previous one's rewrite
    and the notes of those before it; the context carries the UIDL and user.
    """
    first = Recorder(
        "first", lambda m, c: Rewrite(m.withHeaderAdded("X-First", "1"), note="tagged")
    )
    second = Recorder("second", lambda m, c: Rewrite(m.withHeaderAdded("X-Second", "2")))
    results = run(chainOf(first, second))
    out = results[0]
    assert isinstance(out, bytes)
    assert out.index(b"X-Second: 2") < out.index(b"X-First: 1") < out.index(b"From:")
    assert out.endswith(b"Subject: hello\r\n\r\nbody\r\n")
    message, context = second.seen[0]
    assert message.headers.get("X-First") == "1"
    assert context.notes == (("first", "tagged"),)
    assert (context.uidl, context.user, context.command, context.index) == (
        "uid-3",
        "alice",
        "RETR",
        3,
    )


def test_filtersSeeTheRetrievalsOwnContext() -> None:
    """
    The context a filter gets is the one the retrieval made (every field,
    a TOP's line count included) with the chain's own quarantine and thread
    runner and the filter's own logger, whatever the caller's context held.
    """
    quarantine = object()
    seen = Recorder("seen", lambda m, c: Deliver())
    chain = chainOf(seen, quarantine=quarantine)
    retrieval = FilterContext(
        "TOP",
        2,
        "bob",
        "c:1",
        "up",
        "s9",
        uidl="u-2",
        partial=True,
        lines=5,
        notes=(("x", "y"),),
        quarantine="not this one",
        runInThread="nor this",
    )
    results: list[Any] = []
    chain.processMessage(retrieval, RAW).addBoth(results.append)
    assert results == [RAW]
    ((_, context),) = seen.seen
    assert context == replace(retrieval, notes=())
    assert context.lines == 5
    assert context.quarantine is quarantine
    assert context.runInThread is chain._runInThread
    assert context.log is chain._loggers["seen"]


def test_deferredAndCoroutineFilters() -> None:
    """
    A filter may answer synchronously, with a Deferred or from a coroutine.
    """

    async def later(message: Message, context: FilterContext) -> Rewrite:
        return Rewrite(message.withHeaderAdded("X-Async", "yes"))

    deferred = Recorder("d", lambda m, c: succeed(Rewrite(m.withHeaderAdded("X-Deferred", "yes"))))
    coroutine = Recorder("c", later)
    out = run(chainOf(deferred, coroutine))[0]
    assert b"X-Deferred: yes" in out and b"X-Async: yes" in out


def test_tempFailVerdict() -> None:
    """
    TempFail stops the chain with TemporaryFailure carrying its reason.
    """
    after = Recorder("after", lambda m, c: Deliver())
    results = run(chainOf(Recorder("t", lambda m, c: TempFail("scanner busy")), after))
    assert results[0].check(TemporaryFailure)
    assert str(results[0].value) == "scanner busy"
    assert after.seen == []


def test_raisingFilterUnderEachPolicy() -> None:
    """
    A filter that raises is logged once, with its name, the UIDL, an error
    id and the traceback; under 'tempfail' the message is not delivered and
    the client is told that id, under 'deliver' it goes out marked as
    unchecked with a fixed phrase and the id (the exception's text,
    internal details, stays out of the recipient's mail) and the chain
    goes on.
    """

    def boom(message: Message, context: FilterContext) -> Any:
        raise ValueError("broken plugin /srv/secret/path")

    ids = iter(["0123456789", "abcdef0123"])
    with capturedLogs() as events:
        results = run(chainOf(Recorder("boom", boom), errorIds=lambda: next(ids)))
    assert results[0].check(TemporaryFailure)
    assert str(results[0].value) == "filter boom failed (error id 0123456789), try again later"
    [logged] = [e for e in events if "boom" in formatEvent(e)]
    assert formatEvent(logged) == (
        "filter boom failed on RETR 3 (UIDL uid-3), error id 0123456789: "
        "ValueError: broken plugin /srv/secret/path"
    )
    assert logged["log_failure"].check(ValueError)
    assert "in boom" in logged["log_failure"].getTraceback()

    after = Recorder("after", lambda m, c: Deliver())
    with capturedLogs() as events:
        chain = chainOf(
            Recorder("boom", boom), after, onError_boom="deliver", errorIds=lambda: next(ids)
        )
        out = run(chain)[0]
    assert out == UNCHECKED_HEADER.encode() + b": boom failed; error id abcdef0123\r\n" + RAW
    [logged] = [e for e in events if "boom" in formatEvent(e)]
    assert "error id abcdef0123" in formatEvent(logged)
    assert len(after.seen) == 1


def test_errorIdsDifferAndMatchTheirLogLine() -> None:
    """
    With the default ids, each failure gets its own short id, and the id the
    recipient's header shows is the one in the log line with the traceback.
    """

    def boom(message: Message, context: FilterContext) -> Any:
        raise RuntimeError("internal")

    shown, logged = [], []
    for _ in range(3):
        with capturedLogs() as events:
            out = run(chainOf(Recorder("boom", boom), onError_boom="deliver"))[0]
        header = Message.fromBytes(out).headers.get(UNCHECKED_HEADER)
        assert header is not None and header.startswith("boom failed; error id ")
        shown.append(header.rsplit(" ", 1)[1])
        [event] = [e for e in events if e.get("log_failure") is not None]
        logged.append(event["errorId"])
    assert shown == logged
    assert len(set(shown)) == 3
    assert all(len(i) == 10 and int(i, 16) >= 0 for i in shown)


def test_garbageVerdict() -> None:
    """
    A filter returning something that is not a verdict counts as failed.
    """
    results = run(chainOf(Recorder("junk", lambda m, c: "deliver please")))
    assert results[0].check(TemporaryFailure)
    results = run(chainOf(Recorder("junk", lambda m, c: Rewrite(b"not a Message"))))  # type: ignore[arg-type]
    assert results[0].check(TemporaryFailure)


def test_timeout() -> None:
    """
    A filter that does not answer within its timeout fails by its policy.
    """
    clock = Clock()
    hanging = Recorder("slow", lambda m, c: Deferred())
    results = run(chainOf(hanging, clock=clock, timeout_slow=5.0))
    assert results == []
    clock.advance(5)
    assert results[0].check(TemporaryFailure)
    assert "slow" in str(results[0].value)
    assert results[0].value.__cause__ is not None
    assert "no verdict within 5 s" in str(results[0].value.__cause__)


def test_timeoutUnderDeliverSaysTimedOut() -> None:
    """
    Under 'deliver', a filter that hangs past its timeout marks the message
    with a fixed phrase saying it timed out, and the chain goes on.
    """
    clock = Clock()
    hanging = Recorder("slow", lambda m, c: Deferred())
    results = run(chainOf(hanging, clock=clock, timeout_slow=5.0, onError_slow="deliver"))
    clock.advance(5)
    [out] = results
    assert out.startswith(UNCHECKED_HEADER.encode() + b": slow timed out; error id ")
    assert out.endswith(b"\r\n" + RAW)


def test_replaceNeedsQuarantine(tmp_path: Path) -> None:
    """
    Replace keeps the original in the quarantine (exact bytes plus
    metadata) and delivers the notice with the quarantine id; without a
    quarantine it is a temporary failure, never a silent loss.
    """

    def notice(message: Message, context: FilterContext) -> Replace:
        return Replace(
            Message.fromBytes(b"Subject: removed\r\n\r\nA message was removed.\r\n"),
            reason="virus Eicar",
        )

    results = run(chainOf(Recorder("scan", notice)))
    assert results[0].check(TemporaryFailure)

    quarantine = DirectoryQuarantine(tmp_path / "q")
    out = run(chainOf(Recorder("scan", notice), quarantine=quarantine))[0]
    assert out.startswith(QUARANTINE_HEADER.encode() + b": ")
    identifier = out.split(b"\r\n", 1)[0].split(b": ", 1)[1].decode()
    record = quarantine.get(identifier)
    assert quarantine.original(record) == RAW
    assert (record.reason, record.uidl, record.user, record.plugin) == (
        "virus Eicar",
        "uid-3",
        "alice",
        "scan",
    )
    metadata = json.loads((tmp_path / "q" / "records" / f"{identifier}.json").read_text())
    assert metadata["headers"] == "From: a@example.com\r\nSubject: hello"
    assert b"A message was removed." in out


def test_loadFromFileAndModule(tmp_path: Path) -> None:
    """
    Plugins load from a plugin directory by name, from a .py path, and from
    module:object; settings reach the factory.
    """
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "mark.py").write_text(
        "from zope.interface import implementer\n"
        "from popproxy.interfaces import IMessageFilter, Deliver\n"
        "@implementer(IMessageFilter)\n"
        "class Mark:\n"
        "    name = 'mark'\n"
        "    def __init__(self, level): self.level = level\n"
        "    def filterMessage(self, message, context): return Deliver()\n"
        "def makeFilter(settings):\n"
        "    return Mark(int(settings.get('level', 1)))\n"
    )
    found = loadFilter("mark", {"level": 3}, tmp_path, (tmp_path / "plugins",))
    assert found.name == "mark" and found.level == 3
    assert loadFilter("plugins/mark.py", {}, tmp_path).level == 1


@pytest.mark.parametrize(
    ("source", "settings", "expected"),
    [
        (
            "def makeFilter(settings):\n    raise ValueError('level must be a number')\n",
            {},
            "rejects its settings: level must be a number",
        ),
        ("def makeFilter(settings):\n    return object()\n", {}, "does not provide IMessageFilter"),
        ("x = 1\n", {}, "does not define makeFilter"),
        ("import nonexistent_module_xyz\n", {}, "fails to load: ModuleNotFoundError"),
        ("syntax error here\n", {}, "fails to load: SyntaxError"),
    ],
)
def test_badPlugins(tmp_path: Path, source: str, settings: dict[str, Any], expected: str) -> None:
    """
    A plugin that cannot be loaded, rejects its settings or does not provide
    the interface stops start-up with a clear reason.
    """
    (tmp_path / "bad.py").write_text(source)
    with pytest.raises(PluginError, match=expected):
        loadFilter("bad.py", settings, tmp_path)


def test_unknownPluginName(tmp_path: Path) -> None:
    """
    An unknown bare name says where it was looked for.
    """
    with pytest.raises(PluginError, match="no plugin named 'nosuch'"):
        loadFilter("nosuch", {}, tmp_path, (tmp_path,))


def test_missingMethodCaughtAtLoad(tmp_path: Path) -> None:
    """
    A filter declaring the interface but lacking filterMessage (a typo) is
    caught by verifyObject at load time.
    """
    (tmp_path / "typo.py").write_text(
        "from zope.interface import implementer\n"
        "from popproxy.interfaces import IMessageFilter\n"
        "@implementer(IMessageFilter)\n"
        "class Typo:\n"
        "    name = 'typo'\n"
        "    def filterMesage(self, message, context): pass\n"
        "def makeFilter(settings):\n"
        "    return Typo()\n"
    )
    with pytest.raises(PluginError, match="filterMessage"):
        loadFilter("typo.py", {}, tmp_path)


def test_replacedMessageRetriedIsKeptOnce(tmp_path: Path) -> None:
    """
    A message replaced by a notice whose retrieval then fails in a later
    filter is kept once however often the client retries: the retries
    find the record of the first run (its time unchanged) and deliver the
    same notice with the same id.  The same octets under another UIDL are
    another message, kept in a record of their own.
    """

    def notice(message: Message, context: FilterContext) -> Replace:
        return Replace(
            Message.fromBytes(b"Subject: removed\r\n\r\nA message was removed.\r\n"),
            reason="virus Eicar",
        )

    attempts: list[str | None] = []

    def busyOnce(message: Message, context: FilterContext) -> Any:
        attempts.append(context.uidl)
        return TempFail("spamd busy") if len(attempts) == 1 else Deliver()

    quarantine = DirectoryQuarantine(tmp_path / "q")
    chain = chainOf(Recorder("scan", notice), Recorder("spam", busyOnce), quarantine=quarantine)
    [failed] = run(chain)
    assert failed.check(TemporaryFailure)
    [record] = quarantine.records()
    first, again = run(chain)[0], run(chain)[0]
    assert first == again
    assert first.startswith(f"{QUARANTINE_HEADER}: {record.id}\r\n".encode())
    assert list(quarantine.records()) == [record]
    assert len(list((tmp_path / "q" / "records").iterdir())) == 1

    other: list[Any] = []
    chain.processMessage(replace(CONTEXT, uidl="uid-4"), RAW).addBoth(other.append)
    records = list(quarantine.records())
    assert len(records) == 2 and records[0] == record
    assert [(r.uidl, quarantine.original(r)) for r in records] == [("uid-3", RAW), ("uid-4", RAW)]
    assert other[0].startswith(f"{QUARANTINE_HEADER}: {records[1].id}\r\n".encode())


# Messages over the parse limits (the over_limits policy).

SHIPPED_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def manyParts(count: int) -> bytes:
    parts = b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count)
    )
    return (
        b"From: a@example.com\r\nSubject: many\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    )


OVER_LIMITS = [
    pytest.param(manyParts(4), ParseLimits(maxParts=3), "max_parts (3)", id="parts"),
    pytest.param(
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nhi\r\n",
        ParseLimits(maxDepth=1),
        "max_depth (1)",
        id="depth",
    ),
    pytest.param(
        b"A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n",
        ParseLimits(maxHeaderFields=2),
        "max_header_fields (2)",
        id="fields",
    ),
    pytest.param(
        manyParts(4),
        ParseLimits(maxTotalHeaderFields=6),
        "max_total_header_fields (6)",
        id="total-fields",
    ),
    pytest.param(
        b"Content-Type: text/plain; a=1; b=2; c=3\r\n\r\nbody\r\n",
        ParseLimits(maxParameters=2),
        "max_parameters (2)",
        id="parameters",
    ),
    pytest.param(
        b"Content-Disposition: attachment; filename*0=a; filename*1=b; filename*2=c\r\n\r\n",
        ParseLimits(maxContinuations=2),
        "max_continuations (2)",
        id="continuations",
    ),
    pytest.param(
        b"Subject: =?utf-8?q?a?= =?utf-8?q?b?= =?utf-8?q?c?=\r\n\r\nbody\r\n",
        ParseLimits(maxEncodedWords=2),
        "max_encoded_words (2)",
        id="encoded-words",
    ),
]


@pytest.mark.parametrize("threadThreshold", [1_000_000, 0], ids=["inline", "in-thread"])
@pytest.mark.parametrize("raw, limits, reason", OVER_LIMITS)
def test_overLimitsDeliverUnchecked(
    raw: bytes, limits: ParseLimits, reason: str, threadThreshold: int
) -> None:
    """
    By default a message over any parse limit reaches no filter and is
    delivered untouched below a header naming the limit, with a warning in
    the log; whether it was parsed in a thread or not.
    """
    seen = Recorder("strip", lambda m, c: Deliver())
    chain = chainOf(seen, limits=limits, threadThreshold=threadThreshold)
    with capturedLogs() as events:
        results = run(chain, raw)
    assert results == [
        f"{UNCHECKED_HEADER}: message exceeds parse limit {reason}\r\n".encode() + raw
    ]
    assert seen.seen == []
    (logged,) = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert f"RETR 3 (UIDL uid-3) not filtered: message exceeds parse limit {reason}" in logged
    assert logged.endswith("over_limits: deliver")


def test_withinLimitsIsFiltered() -> None:
    """
    A message exactly at every limit is filtered as usual and, unchanged,
    delivered as the very bytes received.
    """
    raw = manyParts(3)
    seen = Recorder("strip", lambda m, c: Deliver())
    limits = ParseLimits(maxParts=3, maxHeaderFields=3, maxTotalHeaderFields=6)
    assert run(chainOf(seen, limits=limits), raw) == [raw]
    assert len(seen.seen) == 1


@pytest.mark.parametrize("raw, limits, reason", OVER_LIMITS)
def test_overLimitsQuarantine(tmp_path: Path, raw: bytes, limits: ParseLimits, reason: str) -> None:
    """
    With over_limits = "quarantine" the original is kept whole and the
    client gets a notice naming the limit and carrying the quarantine id;
    no filter runs and nothing is a temporary failure.
    """
    quarantine = DirectoryQuarantine(tmp_path / "q")
    seen = Recorder("strip", lambda m, c: Deliver())
    chain = chainOf(seen, limits=limits, overLimits="quarantine", quarantine=quarantine)
    (out,) = run(chain, raw)
    assert isinstance(out, bytes)
    assert seen.seen == []
    notice = Message.fromBytes(out)
    identifier = notice.headers.get(QUARANTINE_HEADER)
    assert identifier is not None
    record = quarantine.get(identifier)
    assert quarantine.original(record) == raw
    assert (record.reason, record.plugin, record.uidl) == (
        f"message exceeds parse limit {reason}",
        "parse-limits",
        "uid-3",
    )
    assert f"parse limit {reason}" in notice.root.text()
    assert "quarantine" in notice.root.text()


def test_overLimitsQuarantineRetriedIsKeptOnce(tmp_path: Path) -> None:
    """
    A message over the parse limits retrieved again (a client retrying)
    gets the same notice with the same quarantine id, and the quarantine
    still holds one record of it.
    """
    quarantine = DirectoryQuarantine(tmp_path / "q")
    chain = chainOf(limits=ParseLimits(maxParts=3), overLimits="quarantine", quarantine=quarantine)
    [first] = run(chain, manyParts(4))
    [again] = run(chain, manyParts(4))
    assert first == again
    [record] = quarantine.records()
    assert Message.fromBytes(first).headers.get(QUARANTINE_HEADER) == record.id
    assert quarantine.original(record) == manyParts(4)


def test_overLimitsNoticeKeepsIdentifyingHeaders(tmp_path: Path) -> None:
    """
    The notice keeps the original's From and Subject, so the user can tell
    which message it stands for.
    """
    chain = chainOf(
        limits=ParseLimits(maxParts=3),
        overLimits="quarantine",
        quarantine=DirectoryQuarantine(tmp_path / "q"),
    )
    (out,) = run(chain, manyParts(4))
    notice = Message.fromBytes(out)
    assert (notice.headers.get("From"), notice.headers.get("Subject")) == (
        "a@example.com",
        "many",
    )


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"overLimits": "quarantine"}, "needs a quarantine"),
        ({"overLimits": "tempfail"}, "overLimits must be one of"),
    ],
)
def test_overLimitsPolicyChecked(options: dict[str, Any], problem: str) -> None:
    """
    A policy that could end in a temporary failure (quarantine without a
    quarantine, or tempfail) is refused when the chain is built.
    """
    with pytest.raises(ValueError, match=problem):
        chainOf(**options)


def shippedChain(tmp_path: Path, chain: str) -> Path:
    config = tmp_path / "twistd.conf"
    config.write_text(
        f"""
[chain]
plugin_dirs = ["{SHIPPED_PLUGINS}"]
quarantine = "quarantine"
{chain}

[[filter]]
plugin = "strip"

[[filter]]
plugin = "scan"
on_error = "tempfail"
settings = {{ address = "unix:{tmp_path}/no-clamd.sock", on_failure = "tempfail" }}
"""
    )
    return config


@pytest.mark.timeout(120)
def test_hundredThousandPartsThroughTheShippedChain(tmp_path: Path) -> None:
    """
    The 4 MB message of 100,000 small parts, which made scan stream every
    part to clamd and could never be fetched, is answered at once under
    the default limits, no filter having seen it (scan would have failed
    without a clamd) and no temporary failure: with a quarantine (the
    default policy then) the original is kept whole and a notice delivered;
    with over_limits = "deliver" it arrives untouched below the Unchecked
    header.
    """
    raw = manyParts(100_000)
    assert len(raw) > 4_000_000
    result = runChain(shippedChain(tmp_path, ""), raw)
    assert result.tempFailReason is None
    assert result.filters == ()
    assert [(q.original, q.reason) for q in result.quarantined] == [
        (raw, "message exceeds parse limit max_parts (1000)")
    ]
    assert result.output is not None and b"X-Popproxy-Quarantine-Id: " in result.output
    delivered = runChain(shippedChain(tmp_path, 'over_limits = "deliver"'), raw)
    assert delivered.tempFailReason is None
    assert delivered.filters == ()
    assert (
        delivered.output
        == b"X-Popproxy-Unchecked: message exceeds parse limit max_parts (1000)\r\n" + raw
    )


@pytest.mark.timeout(120)
def test_partsOfTinyFieldsThroughTheShippedChain(tmp_path: Path) -> None:
    """
    A 6 MB message of 1,000 parts of 1,000 six-octet header fields each,
    inside every per-block limit, goes over max_total_header_fields: with
    over_limits = "deliver" it is delivered at once, untouched, with the
    Unchecked header, no filter having seen it and no temporary failure.
    """
    block = b"X: v\r\n" * 1_000
    parts = b"".join(b"--b\r\n" + block + b"\r\nx\r\n" for _ in range(1_000))
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    assert len(raw) > 6_000_000
    result = runChain(shippedChain(tmp_path, 'over_limits = "deliver"'), raw)
    assert result.tempFailReason is None
    assert result.filters == ()
    assert result.output == (
        b"X-Popproxy-Unchecked: message exceeds parse limit max_total_header_fields\r\n"
        b" (10000)\r\n" + raw
    )


def test_totalHeaderFieldsQuarantineThroughTheConfiguration(tmp_path: Path) -> None:
    """
    [chain] max_total_header_fields from the file reaches the chain the
    daemon runs: a message with more fields over all its parts is
    quarantined whole under that limit's name, one with as many is
    filtered.
    """
    config = shippedChain(tmp_path, 'max_total_header_fields = 6\nover_limits = "quarantine"')
    raw = manyParts(4)
    result = runChain(config, raw)
    assert result.filters == ()
    assert [(q.original, q.reason) for q in result.quarantined] == [
        (raw, "message exceeds parse limit max_total_header_fields (6)")
    ]
    assert [f.name for f in runChain(config, manyParts(3)).filters] == ["strip", "scan"]


def test_overLimitsQuarantineThroughTheConfiguration(tmp_path: Path) -> None:
    """
    [chain] max_parts and over_limits = "quarantine" from the file reach
    the chain the daemon runs: the original goes to the quarantine whole,
    the client gets the notice, no filter runs.
    """
    config = shippedChain(tmp_path, 'max_parts = 3\nover_limits = "quarantine"')
    raw = manyParts(4)
    result = runChain(config, raw)
    assert result.filters == ()
    assert [(q.original, q.reason, q.plugin) for q in result.quarantined] == [
        (raw, "message exceeds parse limit max_parts (3)", "parse-limits")
    ]
    assert result.message is not None
    assert result.message.headers.get(QUARANTINE_HEADER) == result.quarantined[0].identifier
    within = manyParts(3)
    assert [f.name for f in runChain(config, within).filters] == ["strip", "scan"]


@implementer(IMessageFilter, IStartable)
class Starting:
    """A filter that counts its starts, or raises when started."""

    def __init__(self, name: str, broken: bool = False) -> None:
        self.name = name
        self.broken = broken
        self.started = 0

    def startFilter(self) -> None:
        self.started += 1
        if self.broken:
            raise OSError("no such socket")

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        return Deliver()


def test_startStartsStartableFiltersOnce() -> None:
    """
    Starting the chain starts each filter providing IStartable, once however often the
    chain is started; one that raises is logged with its name and the others start all
    the same; filters without the hook are left alone.
    """
    first, broken, last = Starting("a"), Starting("b", broken=True), Starting("c")
    plain = Recorder("plain", lambda m, c: Deliver())
    chain = FilterChain(
        [ChainEntry(f.name, f) for f in (first, broken, plain, last)],
        Clock(),
    )
    with capturedLogs() as events:
        chain.start()
        chain.start()
    assert (first.started, broken.started, last.started) == (1, 1, 1)
    [event] = events
    assert formatEvent(event) == "filter b failed to start"
    assert event["log_failure"].check(OSError)
    assert run(chain) == [RAW]
