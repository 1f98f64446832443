"""
Tests for what plugin authors are given: docs/writing-plugins.md, its
example plugin docs/examples/attachment_count.py, and the runners of
popproxy.testing (popproxy._testkit).  The example is loaded exactly as a
configuration loads it and run on messages; the tutorial embeds it
verbatim; every code block of the tutorial runs, and the tests it shows
pass in a project laid out as it describes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from zope.interface import Invalid, implementer

from popproxy._config import parseConfig
from popproxy._plugins import PluginError, loadFilter
from popproxy.interfaces import Deliver, FilterContext, IMessageFilter, Replace, Rewrite, TempFail
from popproxy.message import Message
from popproxy.testing import (
    VerdictPending,
    attachmentPart,
    buildMessage,
    makeContext,
    runChain,
    runFilter,
    runInline,
    textPart,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "attachment_count.py"
TUTORIAL = ROOT / "docs" / "writing-plugins.md"

PDF = attachmentPart(b"%PDF-1.4 invoice", "invoice.pdf", contentType="application/pdf")
ZIP = attachmentPart(b"PK\x03\x04", "photos.zip")
PNG = attachmentPart(b"\x89PNG\r\n\x1a\n", "logo.png", contentType="image/png")


def loadExample(**settings: Any) -> Any:
    """
    The example filter, loaded as C{plugin = "docs/examples/attachment_count.py"}
    in a configuration at the root of the checkout would load it.
    """
    return loadFilter("docs/examples/attachment_count.py", settings, ROOT)


@pytest.mark.parametrize(
    "parts, count",
    [((), 0), ((PDF,), 1), ((PDF, ZIP, PNG), 3)],
    ids=["none", "one", "three"],
)
def test_countsAndTagsByteForByte(parts: tuple[bytes, ...], count: int) -> None:
    """
    With default settings every message gets the header with its count,
    added above the others; every other byte is exactly as it arrived.
    """
    raw = buildMessage(*parts)
    result = runFilter(loadExample(), raw)
    assert result.output == b"X-Attachment-Count: %d\r\n" % count + raw
    assert result.verdict.note == f"{count} attachment(s)"


def test_minimumAndHeaderSettings() -> None:
    """
    Below C{min} the message is delivered untouched (the same bytes); at
    C{min} the configured header name is used.
    """
    countFilter = loadExample(min=3, header="X-Parts")
    oneAttachment = buildMessage(PDF)
    result = runFilter(countFilter, oneAttachment)
    assert type(result.verdict).__name__ == "Deliver"
    assert result.output is oneAttachment
    three = buildMessage(PDF, ZIP, PNG)
    assert runFilter(countFilter, three).output == b"X-Parts: 3\r\n" + three


def test_countingRules() -> None:
    """
    Inline parts with a file name count, text parts without one do not,
    and an attached message counts once whatever it contains.
    """
    inlineNamed = textPart("see logo", filename="readme.txt").replace(b"attachment", b"inline")
    forwarded = (
        b"Content-Type: message/rfc822\r\n"
        b"Content-Disposition: attachment\r\n\r\n" + buildMessage(PDF, ZIP, boundary="inner")
    )
    raw = buildMessage(textPart("hello"), inlineNamed, forwarded)
    result = runFilter(loadExample(), raw)
    assert result.message is not None
    assert result.message.headers.get("X-Attachment-Count") == "2"


def test_forgedHeaderNeverPasses() -> None:
    """
    A count the sender wrote is replaced in place when tagging, and removed
    when the message is below the minimum.
    """
    raw = b"X-Attachment-Count: 99\r\n" + buildMessage(PDF)
    assert runFilter(loadExample(), raw).output == b"X-Attachment-Count: 1\r\n" + buildMessage(PDF)
    below = runFilter(loadExample(min=5), raw)
    assert below.output == buildMessage(PDF)
    assert below.verdict.note == "removed a forged X-Attachment-Count"


def test_partialPreviewLeftAlone() -> None:
    """
    A TOP preview filtered as partial is delivered unchanged.
    """
    raw = buildMessage(PDF)
    result = runFilter(loadExample(), raw, makeContext(command="TOP", partial=True))
    assert result.output is raw


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"min": -1}, "min must be a whole number"),
        ({"min": "three"}, "min must be a whole number"),
        ({"min": True}, "min must be a whole number"),
        ({"header": "Bad Header:"}, "header must be a header field name"),
        ({"header": 7}, "header must be a header field name"),
        ({"minimum": 1}, "unknown setting 'minimum'"),
    ],
)
def test_badSettingsRefusedAtLoad(settings: dict[str, Any], expected: str) -> None:
    """
    Wrong settings stop loading with a PluginError naming the problem, as
    they stop popproxy at start-up.
    """
    with pytest.raises(PluginError, match="rejects its settings: " + re.escape(expected)):
        loadExample(**settings)


def pythonBlocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_tutorialEmbedsTheExampleVerbatim() -> None:
    """
    The tutorial shows the example file exactly as it is, as one block.
    """
    assert EXAMPLE.read_text(encoding="utf-8") in pythonBlocks(TUTORIAL.read_text(encoding="utf-8"))


def test_tutorialConfigurationsParse() -> None:
    """
    Every TOML block of the tutorial is a valid configuration.
    """
    blocks = re.findall(
        r"^```toml\n(.*?)^```$", TUTORIAL.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )
    assert blocks
    for block in blocks:
        parseConfig(block, "tutorial", ROOT)


@pytest.fixture
def tutorialProject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """
    A project laid out as the tutorial says: the example in plugins/, and
    every block whose first line names a file (C{# plugins/x.py}) written
    to that file; plugins/ on the Python path; the project is the current
    directory.
    """
    text = TUTORIAL.read_text(encoding="utf-8")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "attachment_count.py").write_text(EXAMPLE.read_text())
    blocks = re.findall(r"^```(?:python|toml)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    for block in blocks:
        first = block.split("\n", 1)[0]
        if re.fullmatch(r"# [\w/.-]+\.(py|conf)", first):
            target = tmp_path / first[2:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("body_digest", None)


def test_tutorialBlocksRun(tutorialProject: Path) -> None:
    """
    Every Python block of the tutorial runs (imports resolve, definitions
    are valid), so a reader copying one gets working code.
    """
    for number, block in enumerate(pythonBlocks(TUTORIAL.read_text(encoding="utf-8")), 1):
        namespace = {"__name__": "block", "__file__": str(tutorialProject / "block.py")}
        named = re.match(r"# ([\w/.-]+\.py)\n", block)
        if named:
            namespace["__file__"] = str(tutorialProject / named.group(1))
        exec(compile(block, f"writing-plugins.md block {number}", "exec"), namespace)


def test_tutorialTestsPass(tutorialProject: Path) -> None:
    """
    The tests the tutorial shows pass against its plugins and its
    twistd.conf, and so does its hypothesis example.
    """
    testFile = tutorialProject / "tests" / "test_plugins.py"
    spec = importlib.util.spec_from_file_location("tutorial_tests", testFile)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [name for name in dir(module) if name.startswith("test_")]
    assert len(tests) == 7
    for name in tests:
        getattr(module, name)()
    hypothesisBlock = next(b for b in pythonBlocks(TUTORIAL.read_text()) if "@given" in b)
    namespace: dict[str, Any] = {"__name__": "hypothesis_block"}
    exec(compile(hypothesisBlock, "hypothesis block", "exec"), namespace)
    namespace["test_neverCrashes"]()


def test_noticeBlockBuildsANotice(tutorialProject: Path) -> None:
    """
    The tutorial's notice keeps the original's identifying headers and the
    chain accepts the Replace verdict it builds.
    """
    block = next(b for b in pythonBlocks(TUTORIAL.read_text()) if "def noticeFor" in b)
    namespace: dict[str, Any] = {"__name__": "notice_block"}
    exec(compile(block, "notice block", "exec"), namespace)
    original = Message.fromBytes(buildMessage(ZIP))
    verdict = namespace["replaceWithNotice"](original, makeContext())
    notice = verdict.notice
    assert notice.headers.get("Subject") == "[held] test message"
    assert notice.headers.get("Message-ID") == "<test@example.com>"
    assert "This message was held: it contained a virus." in notice.root.text()


def test_runChainOnConfigurationUsingTheExample(tmp_path: Path) -> None:
    """
    runChain loads a twistd.conf naming the example by path, with its
    settings, and runs the whole chain: tagged output, the outcome of each
    filter, nothing written to the configured quarantine.
    """
    config = tmp_path / "twistd.conf"
    config.write_text(
        f"""
[chain]
quarantine = "quarantine"

[[filter]]
plugin = "{EXAMPLE}"
name = "count"
settings = {{ min = 1, header = "X-Count" }}
"""
    )
    raw = buildMessage(PDF, ZIP)
    result = runChain(config, raw)
    assert result.output == b"X-Count: 2\r\n" + raw
    assert [(f.name, f.kind, f.note) for f in result.filters] == [
        ("count", "Rewrite", "2 attachment(s)")
    ]
    assert result.tempFailReason is None and result.changed
    untouched = buildMessage()
    assert runChain(config, untouched).output is untouched
    assert not (tmp_path / "quarantine").exists()


# The runners plugin authors get from popproxy.testing.


@implementer(IMessageFilter)
class Answering:
    """
    A filter answering with whatever C{answer(message)} gives.
    """

    name = "answering"

    def __init__(self, answer: Callable[[Message], Any]) -> None:
        self._answer = answer

    def filterMessage(self, message: Message, context: FilterContext) -> Any:
        return self._answer(message)


def test_runFilterWaitsForDeferredsAndCoroutines() -> None:
    """
    runFilter takes a verdict given directly, through a fired Deferred or
    from a coroutine, and computes the output each verdict delivers.
    """
    raw = buildMessage()

    async def later(message: Message) -> Rewrite:
        return Rewrite(message.withHeaderAdded("X-Later", "1"))

    assert runFilter(Answering(later), raw).output == b"X-Later: 1\r\n" + raw
    deferred = Answering(lambda m: succeed(Deliver(note="fine")))
    assert runFilter(deferred, raw).output is raw
    notice = Message.fromBytes(b"Subject: held\r\n\r\nheld\r\n")
    assert runFilter(Answering(lambda m: Replace(notice, "why")), raw).output == notice.raw
    tempFail = runFilter(Answering(lambda m: TempFail("later")), raw)
    assert tempFail.output is None and tempFail.message is None


def test_runFilterReportsProblems() -> None:
    """
    A pending answer raises VerdictPending (and is cancelled), an exception
    propagates as itself, garbage is a TypeError, and an object that does
    not provide IMessageFilter is refused as loading would refuse it.
    """
    pending: Deferred[Any] = Deferred()
    with pytest.raises(VerdictPending):
        runFilter(Answering(lambda m: pending), buildMessage())
    assert pending.called

    def boom(message: Message) -> Any:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        runFilter(Answering(boom), buildMessage())
    with pytest.raises(TypeError, match="returned bytes, not a verdict"):
        runFilter(Answering(lambda m: m.raw), buildMessage())
    with pytest.raises(Invalid):
        runFilter(object(), buildMessage())


def test_runFilterWithInlineThreads() -> None:
    """
    runInline stands in for deferToThread: the work runs at once.
    """

    async def threaded(message: Message) -> Deliver:
        size = await runInline(len, message.raw)
        return Deliver(note=str(size))

    raw = buildMessage()
    assert runFilter(Answering(threaded), raw).verdict.note == str(len(raw))


def test_runChainOutcomes(tmp_path: Path) -> None:
    """
    runChain reports a TempFail with its reason and stops the chain there,
    cuts off a filter that never answers at its timeout and applies its
    policy, and keeps what Replace quarantines in memory.
    """
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "pick.py").write_text(
        "from twisted.internet.defer import Deferred\n"
        "from zope.interface import implementer\n"
        "from popproxy.interfaces import IMessageFilter, Replace, TempFail\n"
        "from popproxy.message import Message\n"
        "@implementer(IMessageFilter)\n"
        "class Pick:\n"
        "    name = 'pick'\n"
        "    def filterMessage(self, message, context):\n"
        "        subject = message.headers.get('Subject')\n"
        "        if subject == 'busy':\n"
        "            return TempFail('busy')\n"
        "        if subject == 'hang':\n"
        "            return Deferred()\n"
        "        return Replace(Message.fromBytes(b'Subject: held\\r\\n\\r\\n'), 'bad')\n"
        "def makeFilter(settings):\n"
        "    return Pick()\n"
    )
    config = tmp_path / "twistd.conf"
    config.write_text(
        '[chain]\nquarantine = "q"\n'
        '[[filter]]\nplugin = "pick"\ntimeout = 3\non_error = "deliver"\n'
        f'[[filter]]\nplugin = "{EXAMPLE}"\nname = "count"\n'
    )

    def mail(subject: str) -> bytes:
        return buildMessage(headers=[("Subject", subject)])

    busy = runChain(config, mail("busy"))
    assert (busy.output, busy.tempFailReason) == (None, "busy")
    assert [f.kind for f in busy.filters] == ["TempFail"]
    hung = runChain(config, mail("hang"))
    assert hung.filters[0].error == "no verdict within 3 s"
    errorId = hung.filters[0].errorId
    assert errorId is not None and len(errorId) == 10
    assert hung.output is not None
    assert (
        b"X-Popproxy-Unchecked: pick timed out; error id %s\r\n" % errorId.encode() in hung.output
    )
    replaced = runChain(config, mail("spam"), makeContext(user="bob"))
    [kept] = replaced.quarantined
    assert (kept.reason, kept.context.user, kept.original) == ("bad", "bob", mail("spam"))
    assert replaced.output == (
        b"X-Attachment-Count: 0\r\nX-Popproxy-Quarantine-Id: "
        + kept.identifier.encode()
        + b"\r\nSubject: held\r\n\r\n"
    )
    # The id is the one the daemon's quarantine would give, the same on a retry.
    retried = runChain(config, mail("spam"), makeContext(user="bob"))
    assert retried.output == replaced.output
    assert not (tmp_path / "q").exists()


def test_synchronousFilterGetsQuarantineIdsDirectly(tmp_path: Path) -> None:
    """
    A plain def filterMessage that keeps something with context.quarantine
    gets the id itself, not a Deferred, under runChain and runFilter as in
    the daemon (where the store is done on the reactor thread for it).
    """
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "keep.py").write_text(
        "from zope.interface import implementer\n"
        "from popproxy.interfaces import IMessageFilter, RemovedPart, Rewrite\n"
        "@implementer(IMessageFilter)\n"
        "class Keep:\n"
        "    name = 'keep'\n"
        "    def filterMessage(self, message, context):\n"
        "        whole = context.quarantine.store(message.raw, context, 'kept', self.name)\n"
        "        [part] = context.quarantine.storeParts(\n"
        "            message.raw, [RemovedPart(b'x', (1,), 'part')], context, self.name)\n"
        "        return Rewrite(message.withHeaderAdded('X-Kept', whole + ' ' + part))\n"
        "def makeFilter(settings):\n"
        "    return Keep()\n"
    )
    config = tmp_path / "twistd.conf"
    config.write_text('[chain]\nquarantine = "q"\n[[filter]]\nplugin = "keep"\n')
    raw = buildMessage()
    result = runChain(config, raw)
    ids = [kept.identifier for kept in result.quarantined]
    assert result.output == b"X-Kept: " + " ".join(ids).encode() + b"\r\n" + raw
    assert [kept.reason for kept in result.quarantined] == ["kept", "part"]
    alone = runFilter(loadFilter("plugins/keep.py", {}, tmp_path), raw)
    assert alone.output is not None and alone.output.startswith(b"X-Kept: m")


def test_packagePluginOfTheTutorialLoadsAndRuns(tmp_path: Path) -> None:
    """
    The package plugin the tutorial shows ("A plugin of several modules"), written out file
    by file, loads by its bare name from plugins/, its modules importing each other
    relatively, and refuses what it says it refuses.
    """
    text = TUTORIAL.read_text(encoding="utf-8")
    blocks = re.findall(r"^```py\n(# plugins/word_filter/[\w.]+\n.*?)^```$", text, re.M | re.S)
    assert len(blocks) == 2
    for block in blocks:
        target = tmp_path / block.split("\n", 1)[0][2:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block)
    found = loadFilter("word_filter", {"words": ["Prize"]}, tmp_path, (tmp_path / "plugins",))
    spam = buildMessage(headers=[("Subject", "Your PRIZE awaits")])
    assert isinstance(runFilter(found, spam).verdict, TempFail)
    assert isinstance(runFilter(found, buildMessage(headers=[("Subject", "hi")])).verdict, Deliver)
