"""
Tests for popproxy._chain.FilterChain and plugin loading: order, every
verdict, sync/Deferred/async filters, timeouts (task.Clock), errors under
each policy, garbage verdicts, the quarantine seam.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from zope.interface import implementer

from popproxy._chain import QUARANTINE_HEADER, UNCHECKED_HEADER, ChainEntry, FilterChain
from popproxy._plugins import PluginError, loadFilter
from popproxy._quarantine import DirectoryQuarantine
from popproxy._retrieval import RetrievalContext, TemporaryFailure
from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    Replace,
    Rewrite,
    TempFail,
)
from popproxy.message import Message

RAW = b"From: a@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
CONTEXT = RetrievalContext("RETR", 3, None, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-3")


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
    A filter that raises is logged with its name, the UIDL and the
    traceback; under 'tempfail' the message is not delivered, under
    'deliver' it goes out marked as unchecked with a fixed phrase (the
    exception's text, internal details, stays out of the recipient's mail)
    and the chain goes on.
    """

    def boom(message: Message, context: FilterContext) -> Any:
        raise ValueError("broken plugin /srv/secret/path")

    with capturedLogs() as events:
        results = run(chainOf(Recorder("boom", boom)))
    assert results[0].check(TemporaryFailure)
    assert "secret" not in str(results[0].value)
    [logged] = [e for e in events if "boom" in formatEvent(e)]
    assert "uid-3" in formatEvent(logged) and "broken plugin" in formatEvent(logged)
    assert logged["log_failure"].check(ValueError)
    assert "in boom" in logged["log_failure"].getTraceback()

    after = Recorder("after", lambda m, c: Deliver())
    with capturedLogs():
        out = run(chainOf(Recorder("boom", boom), after, onError_boom="deliver"))[0]
    assert out.startswith(UNCHECKED_HEADER.encode() + b": boom failed\r\nFrom: ")
    assert b"secret" not in out
    assert len(after.seen) == 1


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
    assert results == [UNCHECKED_HEADER.encode() + b": slow timed out\r\n" + RAW]


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
