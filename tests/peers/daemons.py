"""
What every private test daemon (Dovecot, clamd, spamd) needs: dying with
the test run, skipping or failing when it cannot run, watching its process
group, reading its log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, NoReturn

import pytest

__all__ = [
    "TailLogReporter",
    "forgetGroup",
    "liveGroupMembers",
    "logSince",
    "logSize",
    "readText",
    "reapWithRun",
    "terminateWithParent",
    "unavailable",
]


def terminateWithParent() -> None:
    """
    Ask Linux to send SIGTERM to this (forked, not yet exec'd) process when
    its parent dies (use as C{preexec_fn}): a test run killed with SIGKILL
    runs no teardown and no atexit handler, and must still leave no daemon.

    Linux forgets the request when the process changes its user or group
    (spamd does, and so does a PostgreSQL started through runuser), and it
    never covers what the process forks: L{reapWithRun} does.
    """
    prSetPdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(prSetPdeathsig, signal.SIGTERM)


#: The reaper: reads "+ GROUP" and "- GROUP" lines until the test run's end
#: of the pipe closes (the run ended, however it ended), then sends SIGTERM to
#: the process groups still registered and SIGKILL to what is left after 5 s.
_REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    verb, group = line.split()
    (groups.add if verb == "+" else groups.discard)(int(group))
def alive(group):
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
for number in (signal.SIGTERM, signal.SIGKILL):
    for group in [group for group in groups if alive(group)]:
        try:
            os.killpg(group, number)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    while any(alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
"""

_reaperLock = threading.Lock()
_reaperPipe: IO[bytes] | None = None
_reaper: subprocess.Popen[bytes] | None = None


def _tellReaper(line: bytes, start: bool = True) -> None:
    global _reaper, _reaperPipe
    with _reaperLock:
        if _reaperPipe is None:
            if not start:
                return
            _reaper = subprocess.Popen(
                [sys.executable, "-c", _REAPER],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            assert _reaper.stdin is not None
            _reaperPipe = _reaper.stdin
        _reaperPipe.write(line)
        _reaperPipe.flush()


def reapWithRun(group: int) -> None:
    """
    Make sure process group C{group} (a daemon started with
    C{start_new_session}, and whatever it forked) does not outlive the test
    run, even one killed with SIGKILL: one reaper process per run, in its own
    session, is told about the group and kills what is still registered when
    the run's end of its pipe closes.  Call L{forgetGroup} once the group is
    stopped.
    """
    _tellReaper(b"+ %d\n" % group)


def forgetGroup(group: int) -> None:
    """
    The test run stopped process group C{group} itself: the reaper leaves it be.
    """
    _tellReaper(b"- %d\n" % group, start=False)


def unavailable(reason: str) -> NoReturn:
    """
    Skip when a peer cannot run here, but fail in CI, where a skip would
    hide it.
    """
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def liveGroupMembers(group: int) -> list[int]:
    """
    The pids of the processes of process group C{group} that are not
    zombies (once a master is gone, init reaps its children on its own
    schedule; they hold no socket or file any more).
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def readText(path: Path) -> str:
    """
    A log or output file's text so far; empty if it does not exist yet.
    """
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def logSize(path: Path) -> int:
    """
    The current length of a log: an offset for L{logSince}.
    """
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def logSince(path: Path, offset: int) -> str:
    """
    What was logged from octet C{offset} on.
    """
    try:
        with path.open("rb") as logFile:
            logFile.seek(offset)
            return logFile.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class TailLogReporter:
    """
    A pytest plugin that adds the tail of a daemon's log to the report of
    a failed test that used its session fixture.
    """

    def __init__(self, name: str, fixture: str, log: Callable[[], str], lines: int = 100) -> None:
        self.name = name
        self.fixture = fixture
        self.log = log
        self.lines = lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and self.fixture in getattr(item, "fixturenames", ()):
            tail = "\n".join(self.log().splitlines()[-self.lines :])
            report.sections.append((f"{self.name} log (tail)", tail))
        return report
