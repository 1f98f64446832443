"""
Tests for popproxy._metrics: what a session, its logins, its retrievals,
the filter chain and the quarantine count, read the way Prometheus reads
it (the text format, parsed by prometheus_client's parser), with exact
counts; the bounded label values; and that nothing is recorded before the
metrics are begun.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer

from popproxy._chain import ChainEntry, FilterChain
from popproxy._framing import stuff
from popproxy._metrics import (
    NO_METRICS,
    RETRIEVAL_OUTCOMES,
    SESSION_ENDINGS,
    Metrics,
    endingKind,
    retrievalOutcome,
)
from popproxy._outcome import ChainOutcome, OverLimit
from popproxy._quarantine import DirectoryQuarantine
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    RemovedPart,
    Replace,
    Rewrite,
    TempFail,
)
from popproxy.message import Message
from popproxy.testing import MemoryQuarantine
from tests.metricsamples import family, scrape, value
from tests.sessionharness import Harness

SESSION_SOURCE = Path(__file__).resolve().parents[1] / "popproxy" / "_session.py"
RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = FilterContext("RETR", 3, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")
NOTICE = Message.fromBytes(b"Subject: removed\r\n\r\nThe message was removed.\r\n")


def begun() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics()
    metrics.begin(registry, None)
    return metrics, registry


class Conversation:
    """
    A client of a L{Harness} session that keeps every octet it sent and
    received, to compare with the byte counters.
    """

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.sent = 0
        self.received = len(h.received())

    def send(self, line: bytes) -> None:
        self.sent += len(line)
        self.h.send(line)

    def take(self) -> bytes:
        data = self.h.received()
        self.received += len(data)
        return data


def test_nothingRecordedBeforeBegin() -> None:
    """
    A Metrics not begun (and the shared NO_METRICS, which cannot be begun)
    takes every event without recording anything.
    """
    metrics = Metrics()
    assert not metrics.recording
    metrics.sessionOpened("x")
    metrics.sessionClosed("x", "client quit", 1, 2)
    metrics.loginEnded("user", "ok")
    metrics.retrieved("RETR", "relayed")
    metrics.quarantineStored("part", 2)
    with pytest.raises(TypeError):
        NO_METRICS.begin(CollectorRegistry(), None)
    assert not NO_METRICS.recording


def test_sessionCounted() -> None:
    """
    A session with a failed and a good USER/PASS login, one RETR relayed
    without a chain and QUIT: open while it runs, then one session ended
    by quit, the two logins by result, the relayed RETR, and exactly the
    octets the client sent and received.
    """
    metrics, registry = begun()
    c = Conversation(Harness(metrics=metrics))
    assert value(scrape(registry), "popproxy_sessions_open", listener="test") == 1
    c.send(b"USER alice\r\n")
    c.h.upstream.reply(b"+OK\r\n")
    c.send(b"PASS wrong\r\n")
    c.h.upstream.reply(b"-ERR [AUTH] wrong password\r\n")
    c.h.settle()
    c.send(b"USER alice\r\n")
    c.h.upstream.reply(b"+OK\r\n")
    c.send(b"PASS secret\r\n")
    c.h.upstream.reply(b"+OK logged in\r\n")
    c.send(b"RETR 1\r\n")
    c.h.upstream.reply(b"+OK 6 octets\r\n" + stuff(b"hello\r\n"))
    c.send(b"QUIT\r\n")
    c.h.upstream.reply(b"+OK bye\r\n")
    c.take()
    c.h.settle()
    samples = scrape(registry)
    assert value(samples, "popproxy_sessions_open", listener="test") == 0
    assert family(samples, "popproxy_sessions_total") == {
        frozenset({("listener", "test"), ("ending", "quit")}): 1
    }
    assert family(samples, "popproxy_logins_total") == {
        frozenset({("method", "user"), ("result", "failed")}): 1,
        frozenset({("method", "user"), ("result", "ok")}): 1,
    }
    assert family(samples, "popproxy_retrievals_total") == {
        frozenset({("command", "RETR"), ("outcome", "relayed")}): 1
    }
    assert value(samples, "popproxy_client_received_bytes_total", listener="test") == c.sent
    assert value(samples, "popproxy_client_sent_bytes_total", listener="test") == c.received


def test_unreachableUpstreamCounted() -> None:
    """
    An upstream that refuses connections is counted by kind, once for the
    eager connect at the greeting and once for the USER that retries; the
    USER ends as an unavailable login.
    """
    metrics, registry = begun()
    h = Harness(metrics=metrics, refuse={"tcp:upstream:110"})
    h.send(b"USER alice\r\n")
    assert h.received().endswith(b"-ERR [SYS/TEMP] the mail server refused the connection\r\n")
    samples = scrape(registry)
    assert family(samples, "popproxy_upstream_errors_total") == {
        frozenset({("kind", "refused")}): 2
    }
    assert family(samples, "popproxy_logins_total") == {
        frozenset({("method", "user"), ("result", "unavailable")}): 1
    }


def test_lostUpstreamAndIdleTimeout() -> None:
    """
    An upstream lost mid-session is an upstream error of kind lost and
    ends the session as upstream_lost; an idle client ends as
    idle_timeout.
    """
    metrics, registry = begun()
    h = Harness(metrics=metrics)
    h.login()
    h.upstream.die()
    h.settle()
    idle = Harness(metrics=metrics, idleTimeout=30)
    idle.clock.advance(31)
    idle.settle()
    samples = scrape(registry)
    assert family(samples, "popproxy_upstream_errors_total") == {frozenset({("kind", "lost")}): 1}
    assert family(samples, "popproxy_sessions_total") == {
        frozenset({("listener", "test"), ("ending", "upstream_lost")}): 1,
        frozenset({("listener", "test"), ("ending", "idle_timeout")}): 1,
    }


def endingTexts(node: ast.expr) -> list[str]:
    """
    The texts an ending expression of the session can give: string
    literals, both branches of a conditional, f-strings with "3" for each
    value.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return endingTexts(node.body) + endingTexts(node.orelse)
    if isinstance(node, ast.JoinedStr):
        parts = [part.value if isinstance(part, ast.Constant) else "3" for part in node.values]
        return ["".join(str(part) for part in parts)]
    return []


def sessionEndings() -> list[str]:
    """
    Every reason _session.py ends a session with: the first argument of
    _end and _hangUp, and what it assigns to _ending.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(SESSION_SOURCE.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("_end", "_hangUp")
            and node.args
        ):
            found += endingTexts(node.args[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "_ending" for t in targets):
                assert node.value is not None
                found += endingTexts(node.value)
    return found


def test_everySessionEndingHasAKind() -> None:
    """
    Each way the session code ends a session maps to a named ending label,
    not "other" (a new ending needs its line in SESSION_ENDINGS).
    """
    endings = sessionEndings()
    assert len(endings) >= 10
    unmapped = [reason for reason in endings if endingKind(reason) == "other"]
    assert unmapped == []
    assert endingKind("3 failed logins") == "failed_logins"
    assert endingKind("proxy stopping") == "stopping"
    assert endingKind("proxy stopping: cut when the grace period ended") == "stop_cut"
    assert endingKind("something new") == "other"
    assert {kind for _, kind in SESSION_ENDINGS} >= {"quit", "idle_timeout", "upstream_lost"}


@implementer(IMessageFilter)
class Answering:
    """
    A filter that answers with a given verdict, after C{delay} seconds of
    C{clock} if given.
    """

    def __init__(self, name: str, answer: Any, clock: Clock | None = None, delay: float = 0):
        self.name = name
        self._answer = answer
        self._clock = clock
        self._delay = delay

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        answer = self._answer(message) if callable(self._answer) else self._answer
        if self._clock is None:
            return answer
        return deferLater(self._clock, self._delay, lambda: answer)


def runChain(chain: FilterChain, clock: Clock, context: FilterContext = CONTEXT) -> list[Any]:
    results: list[Any] = []
    running: Deferred[bytes] = chain.processMessage(context, RAW)
    running.addBoth(results.append)
    while not results and clock.getDelayedCalls():
        clock.advance(min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds())
    assert results
    return results


def test_chainVerdictsAndTimings() -> None:
    """
    One RETR through a filter that takes 2 seconds to deliver and one that
    rewrites: one verdict each, the slow filter's 2 s and the chain's 2 s
    in their histograms (in the 2.5 s bucket, not the 1 s one), and the
    retrieval counted as rewritten.
    """
    metrics, registry = begun()
    clock = Clock()
    tagged = Rewrite(Message.fromBytes(RAW).withHeaderAdded("X-Tag", "yes"))
    chain = FilterChain(
        [
            ChainEntry("slow", Answering("slow", Deliver(), clock, 2.0)),
            ChainEntry("tagger", Answering("tagger", tagged)),
        ],
        clock,
        metrics=metrics,
    )
    runChain(chain, clock)
    samples = scrape(registry)
    assert family(samples, "popproxy_filter_verdicts_total") == {
        frozenset({("filter", "slow"), ("verdict", "deliver")}): 1,
        frozenset({("filter", "tagger"), ("verdict", "rewrite")}): 1,
    }
    assert value(samples, "popproxy_filter_seconds_sum", filter="slow") == 2.0
    assert value(samples, "popproxy_filter_seconds_sum", filter="tagger") == 0.0
    assert value(samples, "popproxy_filter_seconds_count", filter="slow") == 1
    assert value(samples, "popproxy_chain_seconds_sum") == 2.0
    assert value(samples, "popproxy_chain_seconds_bucket", le="1.0") == 0
    assert value(samples, "popproxy_chain_seconds_bucket", le="2.5") == 1
    assert family(samples, "popproxy_retrievals_total") == {
        frozenset({("command", "RETR"), ("outcome", "rewritten")}): 1
    }


def test_chainOutcomesAndFailures() -> None:
    """
    Unchanged, replaced (original quarantined), tempfailed, a filter that
    raises (delivered with a header, on_error deliver) and one that times
    out: each retrieval and verdict counted under its own label.
    """
    metrics, registry = begun()
    clock = Clock()

    def chainOf(*entries: ChainEntry) -> FilterChain:
        return FilterChain(list(entries), clock, MemoryQuarantine(), metrics=metrics)

    def boom(message: Message) -> Any:
        raise RuntimeError("scanner exploded")

    runChain(chainOf(ChainEntry("pass", Answering("pass", Deliver()))), clock)
    replacing = Answering("virus", Replace(NOTICE, "virus found"))
    runChain(chainOf(ChainEntry("virus", replacing)), clock)
    runChain(chainOf(ChainEntry("busy", Answering("busy", TempFail("later")))), clock)
    runChain(chainOf(ChainEntry("broken", Answering("broken", boom), onError="deliver")), clock)
    hanging = Answering("hang", Deliver(), clock, 100.0)
    top = FilterContext("TOP", 3, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3", lines=0)
    runChain(chainOf(ChainEntry("hang", hanging, timeout=5.0)), clock, top)
    samples = scrape(registry)
    assert family(samples, "popproxy_retrievals_total") == {
        frozenset({("command", "RETR"), ("outcome", "filtered_unchanged")}): 1,
        frozenset({("command", "RETR"), ("outcome", "replaced")}): 1,
        frozenset({("command", "RETR"), ("outcome", "tempfail")}): 1,
        frozenset({("command", "RETR"), ("outcome", "rewritten")}): 1,
        frozenset({("command", "TOP"), ("outcome", "tempfail")}): 1,
    }
    assert family(samples, "popproxy_filter_verdicts_total") == {
        frozenset({("filter", "pass"), ("verdict", "deliver")}): 1,
        frozenset({("filter", "virus"), ("verdict", "replace")}): 1,
        frozenset({("filter", "busy"), ("verdict", "tempfail")}): 1,
        frozenset({("filter", "broken"), ("verdict", "error")}): 1,
        frozenset({("filter", "hang"), ("verdict", "timeout")}): 1,
    }
    assert value(samples, "popproxy_filter_seconds_sum", filter="hang") == 5.0


def test_overLimitOutcomes() -> None:
    """
    A message over a parse limit counts as over_limits when delivered or
    replaced by a notice, as tempfail when the quarantine failed it.
    """
    delivered = ChainOutcome(True, b"x", None, (), OverLimit("too deep", "deliver"))
    failed = ChainOutcome(False, None, "no room", (), OverLimit("too deep", "quarantine"))
    assert retrievalOutcome(delivered) == "over_limits"
    assert retrievalOutcome(failed) == "tempfail"


def serveRetr(h: Harness, index: int, answer: bytes) -> None:
    """
    Play the upstream for the UID look-up (UIDL n, the whole listing, or
    none once the listing is known) and the RETR n the proxy sends.
    """
    request = h.upstream.received()
    if request == b"UIDL\r\n":
        h.upstream.reply(b"+OK\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n")
        request = h.upstream.received()
    elif request == b"UIDL %d\r\n" % index:
        h.upstream.reply(b"+OK %d uid-%d\r\n" % (index, index))
        request = h.upstream.received()
    assert request == b"RETR %d\r\n" % index
    h.upstream.reply(answer)


def test_retrievalFlowOutcomes() -> None:
    """
    Through an active chain: a message filtered unchanged, the same one
    again from the session's cache, one the upstream refuses and one over
    max_size, each counted once under its outcome.
    """
    metrics, registry = begun()
    clock = Clock()
    chain = FilterChain([ChainEntry("pass", Answering("pass", Deliver()))], clock, metrics=metrics)
    h = Harness(metrics=metrics, hook=chain, chain={"maxSize": 100})
    h.login()
    h.send(b"RETR 1\r\n")
    serveRetr(h, 1, b"+OK\r\n" + stuff(RAW))
    h.send(b"RETR 1\r\n")
    h.send(b"RETR 2\r\n")
    serveRetr(h, 2, b"-ERR no such message\r\n")
    h.send(b"RETR 3\r\n")
    serveRetr(h, 3, b"+OK\r\n" + stuff(RAW + b"x" * 200 + b"\r\n"))
    h.settle()
    samples = scrape(registry)
    assert family(samples, "popproxy_retrievals_total") == {
        frozenset({("command", "RETR"), ("outcome", outcome)}): 1
        for outcome in ("filtered_unchanged", "cached", "upstream_refused", "oversize")
    }


def test_quarantineStoresAndFailures(tmp_path: Path) -> None:
    """
    The directory quarantine counts a whole message and two parts it kept,
    and a store it could not write (its records directory is a file).
    """
    metrics, registry = begun()
    quarantine = DirectoryQuarantine(tmp_path / "q", metrics=metrics)
    results: list[Any] = []
    quarantine.store(RAW, CONTEXT, "virus", "scan").addBoth(results.append)
    parts = [RemovedPart(b"part one", (1,), "exe"), RemovedPart(b"part two", (2,), "exe")]
    quarantine.storeParts(RAW, parts, CONTEXT, "strip").addBoth(results.append)
    broken = DirectoryQuarantine(tmp_path / "broken", metrics=metrics)
    (tmp_path / "broken" / "records").rmdir()
    (tmp_path / "broken" / "records").write_bytes(b"not a directory")
    broken.store(b"other", CONTEXT, "virus", "scan").addErrback(results.append)
    assert len(results) == 3
    samples = scrape(registry)
    assert family(samples, "popproxy_quarantine_stored_total") == {
        frozenset({("kind", "message")}): 1,
        frozenset({("kind", "part")}): 2,
    }
    assert family(samples, "popproxy_quarantine_failures_total") == {
        frozenset({("kind", "message")}): 1
    }


def test_namesFollowConventions() -> None:
    """
    Every metric is popproxy_ prefixed; counters end in _total; timings
    are in seconds and octets in bytes; no label is a user or an address.
    """
    metrics, registry = begun()
    metrics.sessionOpened("proxy.listen[0]")
    names = {metric.name for metric in registry.collect()}
    assert all(name.startswith("popproxy_") for name in names)
    for metric in registry.collect():
        if metric.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in metric.samples)
        if metric.type == "histogram":
            assert metric.name.endswith("_seconds")
    labels = {label for metric in registry.collect() for s in metric.samples for label in s.labels}
    assert labels <= {"listener", "ending", "method", "result", "kind", "command", "outcome"} | {
        "reason",
        "filter",
        "verdict",
        "le",
    }


def test_everyMetricDocumented() -> None:
    """
    docs/operations.md lists every metric the proxy serves, the scanner
    and quarantine store gauges included, and every retrieval outcome and session ending.
    """
    docs = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    _, registry = begun()
    names = {
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in registry.collect()
    }
    names |= {"popproxy_scanner_reachable", "popproxy_scanner_last_change_timestamp_seconds"}
    names |= {
        "popproxy_quarantine_store_reachable",
        "popproxy_quarantine_store_last_change_timestamp_seconds",
    }
    assert len(names) == 23
    assert [name for name in names if f"`{name}`" not in docs] == []
    words = {kind for _, kind in SESSION_ENDINGS} | set(RETRIEVAL_OUTCOMES)
    assert [word for word in words if f"`{word}`" not in docs] == []


def test_watchGetsVerdictsAndBlocksUnbegun() -> None:
    """
    A watched Metrics hands each chain run's verdicts (in chain order,
    with their times) and each block to its watch, even when not begun
    (the console works without [metrics]).
    """
    from popproxy._activity import ActivityWatch, FilterRun, LoginBlock

    runs: list[tuple[FilterRun, ...]] = []
    blocks: list[LoginBlock] = []
    metrics = Metrics()
    metrics.watch(ActivityWatch(runs.append, blocks.append))
    clock = Clock()
    tagged = Rewrite(Message.fromBytes(RAW).withHeaderAdded("X-Tag", "yes"))
    chain = FilterChain(
        [
            ChainEntry("slow", Answering("slow", Deliver(), clock, 2.0)),
            ChainEntry("tagger", Answering("tagger", tagged)),
        ],
        clock,
        metrics=metrics,
    )
    runChain(chain, clock)
    assert runs == [(FilterRun("slow", "deliver", 2.0), FilterRun("tagger", "rewrite", 0.0))]
    metrics.loginBlocked(LoginBlock("192.0.2.1", "bob", 1.0, 901.0))
    assert blocks == [LoginBlock("192.0.2.1", "bob", 1.0, 901.0)]
    with pytest.raises(TypeError):
        NO_METRICS.watch(ActivityWatch(runs.append, blocks.append))
