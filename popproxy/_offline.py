"""
The offline runner, C{popproxy-filter}: run the filter chain of a
configuration file over messages on disk and show what each filter did.

    popproxy-filter --config twistd.conf [--output DIR] PATH...

PATH is a message file (C{.eml}), a directory of C{.eml} files, or a
Maildir (its C{new/} and C{cur/}).  Each message goes through the daemon's
own chain as a C{RETR}; one line per message names the file, its size,
each filter's verdict and note, and what the client would receive.  With
C{--output} the delivered messages are written to DIR.  The configured
quarantine is not written to unless C{--quarantine} is given: what filters
would put there (replaced originals, removed parts) is only listed.

Exit status: 0 when every message went through, 1 when a message could not
be read, a filter failed (raised, timed out, answered garbage; whatever its
C{on_error} policy) or a message ended in a temporary failure, 2 for a
usage or configuration error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy._config import Config, ConfigError, loadConfig
from popproxy._testkit import (
    ChainResult,
    InlineReactor,
    ObservedChain,
    loadObservedChain,
    settle,
)
from popproxy._version import versionLine
from popproxy.interfaces import FilterContext, Replace, TempFail

#: From this many messages on, a progress line is shown on a terminal.
PROGRESS_FROM = 20


class UsageError(Exception):
    """
    The command line or the configuration cannot be used; one line for the
    administrator.
    """


class _Parser(argparse.ArgumentParser):
    """
    argparse (options may follow the paths), with its errors as
    L{UsageError} and its help written where the caller says.
    """

    def __init__(self, out: TextIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._out = out

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def print_help(self, file: Any = None) -> None:
        super().print_help(file or self._out)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _parser(prog: str, out: TextIO) -> _Parser:
    parser = _Parser(
        out,
        prog=prog,
        description=(
            "Run the filter chain of a popproxy configuration over messages on disk and "
            "show each filter's verdict and what changed. Nothing is sent anywhere, and "
            "the configured quarantine is not written to unless --quarantine is given."
        ),
    )
    parser.add_argument("--version", action="version", version=versionLine("popproxy-filter"))
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a message file (.eml), a directory of .eml files, or a Maildir",
    )
    parser.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the configuration (twistd.conf)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="write each delivered message to DIR/<its file name>",
    )
    parser.add_argument(
        "--quarantine",
        action="store_true",
        help="really store replaced originals and removed parts in the configured "
        "[chain] quarantine (default: only list them)",
    )
    parser.add_argument(
        "--user",
        default="offline",
        help="the user name filters see in their context (default: offline)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"show a progress line on stderr (default: on a terminal, from "
        f"{PROGRESS_FROM} messages)",
    )
    parser.add_argument(
        "--log", action="store_true", help="show the filters' and the chain's log events on stderr"
    )
    return parser


# Finding the messages.


@dataclass(frozen=True)
class MessageFile:
    """
    A message on disk and the name it is shown and written under.
    """

    path: Path
    shown: str


def findMessages(paths: Sequence[str]) -> list[MessageFile]:
    """
    The message files PATHs name, in order: a file as such; a Maildir's
    C{new/} then C{cur/} (or one of them named on its own), and a
    directory's C{*.eml}, each sorted by name.

    @raise UsageError: a path does not exist, or a directory holds no
        message and is not a Maildir.
    """
    found: list[MessageFile] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(MessageFile(path, given))
        elif path.is_dir():
            boxes = [path / "new", path / "cur"]
            if _isMaildirFolder(path):
                boxes = [path]
            if any(box.is_dir() for box in boxes):
                found.extend(
                    MessageFile(file, str(file))
                    for box in boxes
                    if box.is_dir()
                    for file in sorted(box.iterdir())
                    if file.is_file() and not file.name.startswith(".")
                )
                continue
            files = sorted(
                file for file in path.iterdir() if file.is_file() and file.suffix.lower() == ".eml"
            )
            if not files:
                raise UsageError(f"{given}: no .eml files, and not a Maildir (no new/ or cur/)")
            found.extend(MessageFile(file, str(file)) for file in files)
        else:
            raise UsageError(f"{given}: no such file or directory")
    if not found:
        raise UsageError("no messages found in " + ", ".join(paths))
    return found


def _isMaildirFolder(path: Path) -> bool:
    """
    Is C{path} the C{new/} or C{cur/} of a Maildir (named on its own)?
    """
    siblings = {"new", "cur", "tmp"} - {path.name}
    return path.name in ("new", "cur") and all((path.parent / s).is_dir() for s in siblings)


def _sourceDirectories(messages: Sequence[MessageFile]) -> set[Path]:
    return {message.path.parent.resolve() for message in messages}


# Reporting.


class ProgressLine:
    """
    C{[#####.....]  50/100} on one terminal line, redrawn in place and
    wiped before each result line is printed.
    """

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int, enabled: bool) -> None:
        self._stream = stream
        self._total = total
        self._enabled = enabled
        self._shown = False

    def show(self, done: int) -> None:
        if not self._enabled:
            return
        filled = self.WIDTH * done // self._total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(f"\r[{bar}] {done:>{len(str(self._total))}}/{self._total}")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r" + " " * (self.WIDTH + 4 + 2 * len(str(self._total))) + "\r")
            self._stream.flush()
            self._shown = False


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def describe(message: MessageFile, result: ChainResult, stored: str) -> str:
    """
    The line for one message: file, size, each filter's verdict and note,
    and what the client would receive.

    @param stored: how what filters remove is kept (C{"would quarantine"}
        or C{"quarantined"}).
    """
    fields = [f"{message.shown}: {len(result.original)} bytes"]
    for outcome in result.filters:
        if outcome.verdict is None:
            errorId = f"; error id {outcome.errorId}" if outcome.errorId else ""
            fields.append(
                f"{outcome.name}: error ({outcome.error}; on_error={outcome.onError}{errorId})"
            )
        else:
            said = [outcome.note] if outcome.note else []
            if isinstance(outcome.verdict, TempFail) and outcome.verdict.reason != outcome.note:
                said.append(outcome.verdict.reason)
            fields.append(" ".join([f"{outcome.name}: {outcome.kind}", *map(_quoted, said)]))
    kept = [f"{kept.identifier} ({kept.plugin}: {kept.reason})" for kept in result.quarantined]
    replaced = any(isinstance(outcome.verdict, Replace) for outcome in result.filters)
    if result.output is None:
        fields.append(f"temporary failure: {result.tempFailReason}")
    elif not result.changed:
        fields.append("unchanged")
    else:
        how = "replaced by a notice" if replaced else "changed"
        fields.append(f"{how}, {len(result.original)} -> {len(result.output)} bytes")
    if kept:
        fields.append(f"{stored} " + ", ".join(kept))
    return " | ".join(fields)


@dataclass
class Summary:
    """
    The counts printed at the end.
    """

    messages: int = 0
    unchanged: int = 0
    changed: int = 0
    tempFailed: int = 0
    unreadable: int = 0
    failed: int = 0
    quarantined: int = 0
    written: int = 0
    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    filterErrors: Counter[str] = field(default_factory=Counter)

    def add(self, result: ChainResult) -> None:
        self.messages += 1
        if result.output is None:
            self.tempFailed += 1
        elif result.changed:
            self.changed += 1
        else:
            self.unchanged += 1
        self.quarantined += len(result.quarantined)
        for outcome in result.filters:
            self.verdicts.setdefault(outcome.name, Counter())[outcome.kind] += 1
            if outcome.verdict is None:
                self.filterErrors[outcome.name] += 1

    @property
    def ok(self) -> bool:
        return not (self.unreadable or self.failed or self.tempFailed or self.filterErrors)

    def lines(self, names: Sequence[str], quarantineNote: str) -> list[str]:
        total = self.messages + self.unreadable + self.failed
        lines = [
            f"{total} message(s): {self.unchanged} unchanged, {self.changed} changed, "
            f"{self.tempFailed} temporary failure(s), {self.unreadable} unreadable, "
            f"{self.failed} failed"
        ]
        for name in names:
            counts = self.verdicts.get(name, Counter())
            shown = ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
            lines.append(f"  {name}: {shown or 'did not run'}")
        if self.filterErrors:
            errors = ", ".join(f"{name} {count}" for name, count in self.filterErrors.items())
            lines.append(f"filter errors: {errors}")
        if self.quarantined:
            lines.append(f"{self.quarantined} quarantined item(s) {quarantineNote}")
        return lines


# Running.


@dataclass(frozen=True)
class _Run:
    chain: ObservedChain
    messages: list[MessageFile]
    output: Path | None
    user: str
    upstream: str
    storedVerb: str
    out: TextIO
    progress: ProgressLine


async def _filterAll(run: _Run) -> Summary:
    summary = Summary()
    used: set[str] = set()
    for number, message in enumerate(run.messages, 1):
        run.progress.show(number - 1)
        line = await _filterOne(run, number, message, summary, used)
        run.progress.clear()
        run.out.write(line + "\n")
        run.out.flush()
    run.progress.clear()
    return summary


async def _filterOne(
    run: _Run, number: int, message: MessageFile, summary: Summary, used: set[str]
) -> str:
    try:
        raw = message.path.read_bytes()
    except OSError as e:
        summary.unreadable += 1
        return f"{message.shown}: cannot read: {e.strerror}"
    context = FilterContext(
        command="RETR",
        index=number,
        uidl=message.path.name,
        user=run.user,
        client="offline",
        upstream=run.upstream,
        session=f"offline-{number}",
    )
    try:
        result = await run.chain.run(raw, context)
    except Exception as e:
        summary.failed += 1
        return f"{message.shown}: {len(raw)} bytes | failed: {type(e).__name__}: {e}"
    summary.add(result)
    line = describe(message, result, run.storedVerb)
    if run.output is not None and result.output is not None:
        target = run.output / _uniqueName(message.path.name, used)
        try:
            target.write_bytes(result.output)
        except OSError as e:
            summary.failed += 1
            return f"{line} | cannot write {target}: {e.strerror}"
        summary.written += 1
    return line


def _uniqueName(name: str, used: set[str]) -> str:
    candidate, number = name, 1
    while candidate in used:
        number += 1
        candidate = f"{name}~{number}"
    used.add(candidate)
    return candidate


@implementer(ILogObserver)
class _LogLines:
    """
    Log events as plain lines on a stream (for C{--log}).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: LogEvent) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if isinstance(failure, Failure):
            text += f": {failure.getErrorMessage()}"
        self._stream.write(f"[{event.get('log_namespace', '-')}] {text}\n")


def main(
    argv: Sequence[str] | None = None,
    *,
    reactor: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    prog: str = "popproxy-filter",
) -> int:
    """
    Run C{popproxy-filter}; return the exit status.

    @param reactor: runs the chain (its clock and threads): by default the
        global reactor, started here so filters can do real I/O (clamd,
        spamd); tests pass an L{InlineReactor}.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        setup = _setUp(sys.argv[1:] if argv is None else list(argv), prog, out, reactor)
    except _Exit as e:
        return e.status
    except (UsageError, ConfigError) as e:
        err.write(f"{prog}: {e}\n")
        return 2
    except OSError as e:
        err.write(f"{prog}: {e.filename}: {e.strerror}\n")
        return 2
    summary = _filterAllLogged(setup, out, err)
    if summary is None:
        err.write(f"{prog}: interrupted\n")
        return 1
    out.write("--\n")
    for line in summary.lines(setup.chain.names, _quarantineNote(setup)):
        out.write(line + "\n")
    if setup.output is not None:
        out.write(f"{summary.written} message(s) written to {setup.output}\n")
    return 0 if summary.ok else 1


@dataclass(frozen=True)
class _Setup:
    """
    What the command line asks for, checked: the messages, the output
    directory, the configuration, its chain and the reactor that runs it.
    """

    options: argparse.Namespace
    messages: list[MessageFile]
    output: Path | None
    config: Config
    chain: ObservedChain
    reactor: Any


def _setUp(argv: list[str], prog: str, out: TextIO, reactor: Any) -> _Setup:
    """
    Read and check the command line, load the configuration and build its
    chain, and create the output directory.

    @raise _Exit: for C{--help}.
    @raise UsageError: for a command line that cannot be used.
    @raise ConfigError: for a configuration that cannot be used.
    @raise OSError: for a file or directory that cannot be read or made.
    """
    options = _parser(prog, out).parse_args(argv)
    messages = findMessages(options.paths)
    configPath = Path(options.config)
    output = Path(options.output) if options.output else None
    if output is not None:
        if output.exists() and not output.is_dir():
            raise UsageError(f"--output {output}: not a directory")
        if output.resolve() in _sourceDirectories(messages):
            raise UsageError(f"--output {output}: would overwrite the input messages")
    config = loadConfig(configPath)
    if options.quarantine and config.chain.quarantine is None:
        raise UsageError(f"--quarantine: {configPath} has no [chain] quarantine")
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    chain = loadObservedChain(config, reactor, "configured" if options.quarantine else "memory")
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    return _Setup(options, messages, output, config, chain, reactor)


def _quarantineNote(setup: _Setup) -> str:
    """
    What the summary says about the quarantined items: where they went,
    or that nothing was written.
    """
    quarantine = setup.config.chain.quarantine
    if quarantine is None:
        return "(but no [chain] quarantine is configured)"
    if setup.options.quarantine:
        return f"stored in {quarantine}"
    return (
        f"would be kept in {quarantine} (offline: nothing was written there; --quarantine writes)"
    )


def _filterAllLogged(setup: _Setup, out: TextIO, err: TextIO) -> Summary | None:
    """
    Filter every message, with the progress line and (for C{--log}) the
    log on C{err}; C{None} if the reactor was stopped first.
    """
    options, messages, reactor = setup.options, setup.messages, setup.reactor
    progress = ProgressLine(
        err,
        len(messages),
        options.progress
        if options.progress is not None
        else len(messages) >= PROGRESS_FROM and err.isatty(),
    )
    run = _Run(
        setup.chain,
        messages,
        setup.output,
        options.user,
        setup.config.upstream or "offline",
        "quarantined" if options.quarantine else "would quarantine",
        out,
        progress,
    )
    observer = _LogLines(err)
    if options.log:
        globalLogPublisher.addObserver(observer)
    try:
        if isinstance(reactor, InlineReactor):
            return settle(ensureDeferred(_filterAll(run)), reactor, what="the chain")
        return _runOnReactor(reactor, lambda: ensureDeferred(_filterAll(run)))
    finally:
        if options.log:
            globalLogPublisher.removeObserver(observer)


def _runOnReactor(reactor: Any, work: Callable[[], Deferred[Summary]]) -> Summary | None:
    """
    Run the reactor until C{work} is done; C{None} if it was stopped first
    (Ctrl-C).
    """
    results: list[Summary | Failure] = []

    def start() -> None:
        running = work()
        running.addBoth(results.append)
        running.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if not results:
        return None
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, Summary)
    return result
