"""
Tests for popproxy._memorytrim: freed memory goes back to the system a
short delay after sessions end, once for many sessions, never while
nothing ends; and the proxy's sessions trigger it when they close.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from popproxy import _assembly
from popproxy._config import Config
from popproxy._memorytrim import TRIM_DELAY, MemoryTrimmer, glibcTrim
from tests.sessionharness import Harness


class _Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def __call__(self) -> None:
        self.calls.append(self.clock.seconds())


def test_trimsOnceAfterTheDelay() -> None:
    """
    Sessions ending within the delay share one trim, which runs the delay
    after the first of them ended; a session ending later gets its own.
    """
    clock = Clock()
    trim = _Recorder(clock)
    trimmer = MemoryTrimmer(clock, trim, delay=2.0)
    trimmer.sessionClosed()
    clock.advance(1.5)
    trimmer.sessionClosed()
    trimmer.sessionClosed()
    assert trim.calls == []
    clock.advance(0.5)
    assert trim.calls == [2.0]
    clock.advance(100)
    assert trim.calls == [2.0]
    trimmer.sessionClosed()
    clock.advance(2.0)
    assert trim.calls == [2.0, 104.0]
    assert trimmer.trims == 2


def test_nothingScheduledWithoutTrim() -> None:
    """
    Where the C library has no malloc_trim, ending sessions schedules
    nothing at all.
    """
    clock = Clock()
    trimmer = MemoryTrimmer(clock, None)
    trimmer.sessionClosed()
    assert clock.getDelayedCalls() == []
    assert trimmer.trims == 0


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_glibcTrimReturnsFreedHeapMemory() -> None:
    """
    On glibc, memory freed in the middle of the heap (what finished
    sessions leave between what lives on) stays resident until the trim
    gives it back: here more than 30 MB of 64 MB freed.
    """
    trim = glibcTrim()
    assert trim is not None
    trim()
    # 64 KiB buffers come from the heap (below glibc's mmap threshold);
    # keeping every 16th pins the heap so freeing the rest cannot shrink it.
    buffers = [bytearray(64 * 1024) for _ in range(1024)]
    for buffer in buffers:
        buffer[::4096] = b"x" * len(buffer[::4096])  # touch every page
    kept = buffers[::16]
    del buffers
    before = _rss()
    trim()
    after = _rss()
    assert before - after > 30 * 1024 * 1024
    assert len(kept) == 64


def test_sessionEndCallsTheHook() -> None:
    """
    A session tells the proxy when it has ended, after dropping what it
    held, whether the client quit or the connection was lost.
    """
    ended: list[str] = []
    h = Harness(sessionClosed=lambda: ended.append("closed"))
    h.login()
    assert ended == []
    h.send(b"QUIT\r\n")
    h.upstream.reply(b"+OK bye\r\n")
    h.settle()
    assert ended == ["closed"]


def test_proxySessionsTrimAfterClosing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The proxy's session factories (main process and workers alike) trim
    memory TRIM_DELAY seconds after a session ends.
    """
    clock = Clock()
    trim = _Recorder(clock)
    monkeypatch.setattr(_assembly, "glibcTrim", lambda: trim)
    factory, secure, _ = _assembly.sessionFactories(Config(upstream="tcp:127.0.0.1:110"), clock)
    assert factory.settings.sessionClosed is not None
    factory.settings.sessionClosed()
    secure.settings.sessionClosed()  # type: ignore[misc]
    clock.advance(TRIM_DELAY)
    assert trim.calls == [TRIM_DELAY]
