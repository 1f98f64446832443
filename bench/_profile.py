"""
Sample a running popproxy with py-spy and name its hottest functions.

L{SpyRecorder} attaches C{py-spy record} (raw "collapsed stacks" output) to a
process for as long as a load runs; L{hottest} reads those stacks back and
ranks functions by samples spent in the function itself ("self") and in it
or anything it called ("total").  py-spy leaves out idle samples (a reactor
waiting in C{epoll}), and so does L{hottest} for threads of a thread pool
waiting for work, so percentages are shares of busy time.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


class ProfilerMissing(RuntimeError):
    """
    py-spy is not installed (C{pip install py-spy}).
    """


@dataclass(frozen=True)
class HotFunction:
    name: str
    selfPercent: float
    totalPercent: float


class SpyRecorder:
    """
    C{py-spy record} attached to one process until L{stop}.
    """

    def __init__(self, pid: int, output: Path, rate: int = 200) -> None:
        binary = shutil.which("py-spy")
        if binary is None:
            raise ProfilerMissing("py-spy is not installed (pip install py-spy)")
        self.output = output
        self._process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate), "--function"]
            + ["--format", "raw", "--output", str(output)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 30.0) -> str:
        """
        Stop sampling (py-spy writes its file on SIGINT); return its output.
        """
        process = self._process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            printed, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            printed, _ = process.communicate(timeout=timeout)
        return printed.decode("utf-8", "replace")


_SITE = re.compile(r"^.*?/(site-packages|dist-packages|lib/python3\.\d+)/")


def _shorten(frame: str) -> str:
    """
    C{"dataReceived (/…/site-packages/popproxy/_session.py:300)"} becomes
    C{"dataReceived (popproxy/_session.py:300)"}.
    """
    name, _, where = frame.partition(" (")
    return f"{name} ({_SITE.sub('', where)}" if where else name


def _waiting(frame: str) -> bool:
    """
    Whether a stack ends in a thread pool's idle wait, which py-spy does
    not always recognise as idle (a lock acquired with the GIL released).
    """
    return "(threading.py:" in frame or "(queue.py:" in frame


def _count(collapsed: Path) -> tuple[int, Counter[str], Counter[str]]:
    """
    Busy samples, and samples per function: as the innermost frame (self)
    and anywhere on the stack (total).
    """
    selfCounts: Counter[str] = Counter()
    totalCounts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text("utf-8", "replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        number = int(count)
        frames = [_shorten(frame) for frame in stack.split(";") if frame]
        if not frames or _waiting(frames[-1]):
            continue
        samples += number
        selfCounts[frames[-1]] += number
        for frame in set(frames):
            totalCounts[frame] += number
    return samples, selfCounts, totalCounts


def hottest(collapsed: Path, top: int = 15) -> tuple[int, list[HotFunction]]:
    """
    The number of busy samples and the C{top} functions by self time, each
    with its self and total share.
    """
    samples, selfCounts, totalCounts = _count(collapsed)
    if not samples:
        return 0, []
    return samples, [
        HotFunction(name, 100.0 * count / samples, 100.0 * totalCounts[name] / samples)
        for name, count in selfCounts.most_common(top)
    ]


def hottestInclusive(collapsed: Path, marker: str, top: int = 15) -> list[HotFunction]:
    """
    The C{top} functions whose file path contains C{marker} (for example
    C{"popproxy/"}) by total time: where the project's own code spends it.
    """
    samples, selfCounts, totalCounts = _count(collapsed)
    if not samples:
        return []
    own = sorted(
        ((name, count) for name, count in totalCounts.items() if f"({marker}" in name),
        key=lambda item: -item[1],
    )
    return [
        HotFunction(name, 100.0 * selfCounts[name] / samples, 100.0 * count / samples)
        for name, count in own[:top]
    ]
