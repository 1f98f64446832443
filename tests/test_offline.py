"""
Tests for popproxy._offline (popproxy-filter) and popproxy.__main__: the
runner is called in-process with an InlineReactor on a configuration using
the example plugin, over .eml files and a Maildir; the lines, the summary,
the written outputs, the in-memory quarantine and the exit statuses are
checked.  One test runs C{python -m popproxy filter} as a child process to
prove the real-reactor path (threads, real timeouts).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from popproxy import __main__ as entry
from popproxy._chain import QUARANTINE_HEADER
from popproxy._offline import main
from popproxy._quarantine import DirectoryQuarantine
from popproxy.testing import InlineReactor, attachmentPart, buildMessage

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "attachment_count.py"

PDF = attachmentPart(b"%PDF-1.4", "invoice.pdf")
ZIP = attachmentPart(b"PK\x03\x04", "photos.zip")

NOTICE = b"Subject: held\r\n\r\nThe message was held.\r\n"

# A plugin whose verdict the Subject chooses, to reach every outcome.
POLICY = """
from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Deliver, Replace, Rewrite, TempFail
from popproxy.message import Message

NOTICE = {NOTICE!r}

@implementer(IMessageFilter)
class Policy:
    name = "policy"

    async def filterMessage(self, message, context):
        subject = message.headers.get("Subject") or ""
        if "strip" in subject:
            part = message.root.children[-1]
            start, end = part.range
            await maybeDeferred(
                context.quarantine.store, message.toBytes()[start:end], context, "an exe", self.name
            )
            return Rewrite(message.withPartRemoved(part), note="removed " + part.filename)
        if "virus" in subject:
            return Replace(Message.fromBytes(NOTICE), "EICAR signature", note="EICAR")
        if "busy" in subject:
            return TempFail("scanner busy")
        if "crash" in subject:
            raise ValueError("boom")
        if "hang" in subject:
            return await Deferred()
        return Deliver()

def makeFilter(settings):
    return Policy()
""".replace("{NOTICE!r}", repr(NOTICE))


def message(subject: str, *parts: bytes) -> bytes:
    headers = (("From", "alice@example.com"), ("Subject", subject))
    return buildMessage(*parts, headers=headers)


def writeConfig(directory: Path, policy: str = "", quarantine: bool = True) -> Path:
    """
    A twistd.conf: the example plugin (by path, min = 1), then the test
    policy from plugins/ with the given extra keys.
    """
    (directory / "plugins").mkdir(exist_ok=True)
    (directory / "plugins" / "policy.py").write_text(POLICY)
    config = directory / "twistd.conf"
    config.write_text(
        ('[chain]\nquarantine = "quarantine"\n' if quarantine else "")
        + f'[[filter]]\nplugin = "{EXAMPLE}"\nname = "count"\nsettings = {{ min = 1 }}\n'
        + f'[[filter]]\nplugin = "policy"\ntimeout = 5\n{policy}\n'
    )
    return config


def run(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], reactor=InlineReactor(), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """
    Two .eml files and a Maildir with one new and one seen message.
    """
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "a-two.eml").write_bytes(message("report", PDF, ZIP))
    (mail / "b-plain.eml").write_bytes(message("hello"))
    (mail / "notes.txt").write_text("not a message")
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1700000000.M1P1.host").write_bytes(message("fresh", PDF))
    (box / "cur" / "1600000000.M1P1.host:2,S").write_bytes(message("seen"))
    return tmp_path


def test_filesAndMaildir(corpus: Path) -> None:
    """
    Every message of the .eml directory and of the Maildir (new/ then
    cur/) gets one line with its size, each filter's verdict and note and
    the change in size; the summary counts them; exit status 0.
    """
    config = writeConfig(corpus)
    status, out, err = run("--config", config, corpus / "mail", corpus / "Maildir")
    assert status == 0, err
    lines = out.splitlines()
    two = message("report", PDF, ZIP)
    tagged = len(two) + len(b"X-Attachment-Count: 2\r\n")
    assert lines[0] == (
        f'{corpus}/mail/a-two.eml: {len(two)} bytes | count: Rewrite "2 attachment(s)" '
        f"| policy: Deliver | changed, {len(two)} -> {tagged} bytes"
    )
    assert lines[1] == (
        f"{corpus}/mail/b-plain.eml: {len(message('hello'))} bytes | count: Deliver "
        "| policy: Deliver | unchanged"
    )
    assert lines[2].startswith(f"{corpus}/Maildir/new/1700000000.M1P1.host: ")
    assert '| count: Rewrite "1 attachment(s)" |' in lines[2]
    assert lines[3].startswith(f"{corpus}/Maildir/cur/1600000000.M1P1.host:2,S: ")
    assert lines[3].endswith("| unchanged")
    assert lines[4:] == [
        "--",
        "4 message(s): 2 unchanged, 2 changed, 0 temporary failure(s), 0 unreadable, 0 failed",
        "  count: Deliver 2, Rewrite 2",
        "  policy: Deliver 4",
    ]
    assert err == ""


def test_outputWritten(corpus: Path) -> None:
    """
    With --output every delivered message is written under its own file
    name, as the client would receive it; same names get a suffix.
    """
    config = writeConfig(corpus)
    (corpus / "other").mkdir()
    (corpus / "other" / "a-two.eml").write_bytes(message("again"))
    target = corpus / "out"
    status, out, _ = run(
        "-c", config, corpus / "mail" / "a-two.eml", corpus / "other" / "a-two.eml", "-o", target
    )
    assert status == 0
    raw = message("report", PDF, ZIP)
    assert (target / "a-two.eml").read_bytes() == b"X-Attachment-Count: 2\r\n" + raw
    assert (target / "a-two.eml~2").read_bytes() == message("again")
    assert out.splitlines()[-1] == f"2 message(s) written to {target}"


def test_outputIntoInputRefused(corpus: Path) -> None:
    """
    --output naming a directory the messages come from is a usage error:
    the inputs are never overwritten.
    """
    config = writeConfig(corpus)
    before = (corpus / "mail" / "a-two.eml").read_bytes()
    status, out, err = run("-c", config, corpus / "mail", "-o", corpus / "mail")
    assert status == 2 and out == ""
    assert err == f"popproxy-filter: --output {corpus}/mail: would overwrite the input messages\n"
    assert (corpus / "mail" / "a-two.eml").read_bytes() == before


def test_tempFail(corpus: Path) -> None:
    """
    A TempFail verdict shows its reason, nothing is written for that
    message, and the exit status is 1.
    """
    config = writeConfig(corpus)
    busy = corpus / "busy.eml"
    busy.write_bytes(message("busy now"))
    status, out, _ = run("-c", config, busy, corpus / "mail" / "b-plain.eml", "-o", corpus / "o")
    assert status == 1
    first = out.splitlines()[0]
    assert first.endswith(
        '| count: Deliver | policy: TempFail "scanner busy" | temporary failure: scanner busy'
    )
    assert "1 unchanged, 0 changed, 1 temporary failure(s)" in out
    assert sorted(p.name for p in (corpus / "o").iterdir()) == ["b-plain.eml"]


def test_replaceIsNotQuarantinedByDefault(corpus: Path) -> None:
    """
    A Replace is shown with the in-memory quarantine id the notice carries;
    the configured quarantine directory is not even created.
    """
    config = writeConfig(corpus)
    virus = corpus / "virus.eml"
    virus.write_bytes(message("a virus"))
    status, out, _ = run("-c", config, virus, "-o", corpus / "o")
    assert status == 0
    found = re.search(r"would quarantine (m[0-9a-f]{31}) ", out)
    assert found is not None, out
    notice = QUARANTINE_HEADER.encode() + b": " + found[1].encode() + b"\r\n" + NOTICE
    assert out.splitlines()[0].endswith(
        '| policy: Replace "EICAR" | replaced by a notice, '
        f"{len(message('a virus'))} -> {len(notice)} bytes "
        f"| would quarantine {found[1]} (policy: EICAR signature)"
    )
    assert "1 quarantined item(s) would be kept in" in out and "nothing was written there" in out
    assert (corpus / "o" / "virus.eml").read_bytes() == notice
    assert not (corpus / "quarantine").exists()


def test_replaceQuarantinedOnRequest(corpus: Path) -> None:
    """
    With --quarantine the original is stored in the configured directory,
    exactly, and the line names the real id: the one the run without
    --quarantine showed.  Running it again keeps the one record.
    """
    config = writeConfig(corpus)
    virus = corpus / "virus.eml"
    virus.write_bytes(message("a virus"))
    _, preview, _ = run("-c", config, virus)
    status, out, _ = run("-c", config, virus, "--quarantine")
    assert status == 0
    assert run("-c", config, virus, "--quarantine")[1] == out
    quarantine = DirectoryQuarantine(corpus / "quarantine")
    records = list(quarantine.records())
    assert f"| would quarantine {records[0].id} (policy: EICAR signature)" in preview
    assert [quarantine.original(record) for record in records] == [message("a virus")]
    assert (records[0].plugin, records[0].reason) == ("policy", "EICAR signature")
    assert f"| quarantined {records[0].id} (policy: EICAR signature)" in out
    assert f"stored in {corpus}/quarantine" in out


def test_removedPartsListed(corpus: Path) -> None:
    """
    A part a filter stores through its context's quarantine before removing
    it is listed with the filter's name and reason, not stored for real.
    """
    config = writeConfig(corpus)
    strip = corpus / "strip.eml"
    strip.write_bytes(message("strip", PDF, ZIP))
    status, out, _ = run("-c", config, strip)
    assert status == 0
    line = out.splitlines()[0]
    assert '| count: Rewrite "2 attachment(s)" | policy: Rewrite "removed photos.zip" |' in line
    assert re.search(r"\| would quarantine m[0-9a-f]{31} \(policy: an exe\)$", line), line
    assert "| changed, " in line
    assert not (corpus / "quarantine").exists()


def test_replaceWithoutQuarantineBecomesTempFail(corpus: Path) -> None:
    """
    As in the daemon, a Replace without a configured quarantine is a
    temporary failure; --quarantine is then a usage error.
    """
    config = writeConfig(corpus, quarantine=False)
    virus = corpus / "virus.eml"
    virus.write_bytes(message("a virus"))
    status, out, _ = run("-c", config, virus)
    assert status == 1
    assert '| policy: Replace "EICAR" | temporary failure: filter policy would replace' in out
    status, _, err = run("-c", config, virus, "--quarantine")
    assert status == 2
    assert err == f"popproxy-filter: --quarantine: {config} has no [chain] quarantine\n"


def test_filterErrorsUnderEachPolicy(corpus: Path) -> None:
    """
    A raising filter is shown with its error: under on_error = "deliver"
    the message goes on with the unchecked header, under "tempfail" it is a
    temporary failure; either way the exit status is 1.
    """
    crash = corpus / "crash.eml"
    crash.write_bytes(message("crash"))
    config = writeConfig(corpus, 'on_error = "deliver"')
    status, out, _ = run("-c", config, crash, "-o", corpus / "o")
    assert status == 1
    shown = re.search(
        r"\| policy: error \(ValueError: boom; on_error=deliver; error id ([0-9a-f]{10})\) "
        r"\| changed, ",
        out,
    )
    assert shown, out
    assert "filter errors: policy 1" in out
    delivered = (corpus / "o" / "crash.eml").read_bytes()
    # The id on the line is the one the recipient's header gives.
    assert delivered.startswith(
        b"X-Popproxy-Unchecked: policy failed; error id " + shown.group(1).encode() + b"\r\nFrom: "
    )
    assert b"boom" not in delivered
    config = writeConfig(corpus)
    status, out, _ = run("-c", config, crash)
    assert status == 1
    assert (
        re.search(
            r"\| policy: error \(ValueError: boom; on_error=tempfail; error id ([0-9a-f]{10})\) "
            r"\| temporary failure: filter policy failed \(error id \1\)",
            out,
        )
        is not None
    ), out


def test_hangingFilterTimesOut(corpus: Path) -> None:
    """
    A filter that never answers is cut off at its timeout and handled by
    its policy.
    """
    hang = corpus / "hang.eml"
    hang.write_bytes(message("hang"))
    status, out, _ = run("-c", writeConfig(corpus), hang)
    assert status == 1
    assert "| policy: error (no verdict within 5 s; on_error=tempfail; error id " in out


def test_unreadableMessage(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A message that cannot be read is reported and counted; the others are
    still filtered; exit status 1.
    """
    locked = corpus / "mail" / "a-two.eml"
    readBytes = Path.read_bytes

    def refuse(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return readBytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    status, out, _ = run("-c", writeConfig(corpus), corpus / "mail")
    assert status == 1
    assert out.splitlines()[0] == f"{locked}: cannot read: Permission denied"
    assert out.splitlines()[1].endswith("| unchanged")
    assert "2 message(s): 1 unchanged, 0 changed, 0 temporary failure(s), 1 unreadable" in out


def test_missingPathAndMaildirOddities(corpus: Path) -> None:
    """
    A named file that does not exist is a usage error; a directory inside
    a Maildir folder is not taken for a message.
    """
    config = writeConfig(corpus)
    (corpus / "Maildir" / "cur" / "subdir").mkdir()
    gone = corpus / "gone.eml"
    gone.write_bytes(message("x"))
    paths = [gone, corpus / "Maildir"]
    gone.unlink()
    status, out, err = run("-c", config, *paths)
    assert status == 2
    assert err == f"popproxy-filter: {gone}: no such file or directory\n"
    gone.write_bytes(message("x"))
    status, out, _ = run("-c", config, *paths)
    assert status == 0
    assert len([line for line in out.splitlines() if line.startswith(str(corpus))]) == 3


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "the following arguments are required: PATH, -c/--config"),
        (["m.eml"], "the following arguments are required: -c/--config"),
        (["-c", "{dir}/twistd.conf", "{dir}/nowhere"], "{dir}/nowhere: no such file or directory"),
        (
            ["-c", "{dir}/twistd.conf", "{dir}/empty"],
            "{dir}/empty: no .eml files, and not a Maildir (no new/ or cur/)",
        ),
        (["-c", "{dir}/missing.conf", "{dir}/m.eml"], "{dir}/missing.conf: cannot read: "),
        (["-c", "{dir}/bad.conf", "{dir}/m.eml"], "{dir}/bad.conf: [filter #1] plugin: "),
        (["-c", "{dir}/twistd.conf", "{dir}/m.eml", "--frobnicate"], "unrecognized arguments"),
    ],
)
def test_usageAndConfigErrors(tmp_path: Path, argv: list[str], expected: str) -> None:
    """
    Usage and configuration errors (a plugin that rejects its settings
    included) exit with status 2 and one line on stderr, no traceback.
    """
    writeConfig(tmp_path)
    (tmp_path / "m.eml").write_bytes(message("x"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.conf").write_text(
        f'[[filter]]\nplugin = "{EXAMPLE}"\nsettings = {{ min = -1 }}\n'
    )
    status, out, err = run(*[a.format(dir=tmp_path) for a in argv])
    assert status == 2
    assert out == ""
    assert err.startswith("popproxy-filter: ") and err.count("\n") == 1
    assert expected.format(dir=tmp_path) in err
    assert "Traceback" not in err


def test_help() -> None:
    """
    --help prints the usage on stdout and exits 0.
    """
    status, out, err = run("--help")
    assert status == 0 and err == ""
    assert out.startswith("usage: popproxy-filter ")
    assert "--quarantine" in out


def test_progressLine(corpus: Path) -> None:
    """
    --progress draws a progress line on stderr, wiped before each result
    line; the result lines on stdout are unaffected.
    """
    mail = corpus / "mail"
    for number in range(5):
        (mail / f"m{number}.eml").write_bytes(message(f"n{number}"))
    status, out, err = run("-c", writeConfig(corpus), mail, "--progress")
    assert status == 0
    assert "\r[" + "." * 30 + "] 0/7" in err
    assert "\r[" + "#" * 25 + "....." + "] 6/7" in err
    assert err.endswith("\r")
    assert len(out.splitlines()) == 7 + 4
    status, out, err = run("-c", writeConfig(corpus), mail)
    assert err == ""


def test_logOption(corpus: Path) -> None:
    """
    --log shows the chain's log events (here: a filter's note) on stderr.
    """
    status, _, err = run("-c", writeConfig(corpus), corpus / "mail" / "a-two.eml", "--log")
    assert status == 0
    assert "filter count on RETR 1 (UIDL a-two.eml): 2 attachment(s)" in err


def test_moduleEntryPoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """
    python -m popproxy dispatches "filter" to the runner under its own
    name, and refuses anything else with status 2.
    """
    assert entry.main(["filter", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m popproxy filter ")
    (tmp_path / "bad.conf").write_text("[[filter]\n")
    (tmp_path / "m.eml").write_bytes(message("x"))
    assert entry.main(["filter", "-c", str(tmp_path / "bad.conf"), str(tmp_path / "m.eml")]) == 2
    assert capsys.readouterr().err.startswith(
        f"python -m popproxy filter: {tmp_path}/bad.conf: not valid TOML"
    )
    assert entry.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert entry.main([]) == 2
    assert entry.main(["--help"]) == 0
    assert "filter" in capsys.readouterr().out


THREADED = """
from twisted.internet.threads import deferToThread
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Rewrite

@implementer(IMessageFilter)
class Threaded:
    name = "threaded"

    async def filterMessage(self, message, context):
        size = await deferToThread(lambda: len(message.toBytes()))
        return Rewrite(message.withHeaderAdded("X-Size", str(size)))

def makeFilter(settings):
    return Threaded()
"""


def test_realReactor(corpus: Path) -> None:
    """
    Run as a command, the runner uses the real reactor: a filter awaiting
    deferToThread answers, and a hanging one times out after its real
    timeout.
    """
    (corpus / "plugins").mkdir()
    (corpus / "plugins" / "threaded.py").write_text(THREADED)
    (corpus / "plugins" / "policy.py").write_text(POLICY)
    (corpus / "twistd.conf").write_text(
        '[[filter]]\nplugin = "threaded"\n'
        '[[filter]]\nplugin = "policy"\ntimeout = 0.2\non_error = "deliver"\n'
    )
    (corpus / "hang.eml").write_bytes(message("hang"))
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "popproxy", "filter", "-c", "twistd.conf", "mail", "hang.eml"],
        cwd=corpus,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    size = len(message("report", PDF, ZIP))
    assert lines[0] == (
        f"mail/a-two.eml: {size} bytes | threaded: Rewrite | policy: Deliver "
        f"| changed, {size} -> {size + len(f'X-Size: {size}') + 2} bytes"
    )
    assert "| policy: error (no verdict within 0.2 s; on_error=deliver; error id " in lines[2]
    assert done.stderr == ""
