"""
Test support for the bench scripts' own tests: run a script until it
says a line, interrupt it as Ctrl-C would, and check what it left running.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def alive(pid: int) -> bool:
    """
    Whether C{pid} is a live process (a zombie is not).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def interruptAfter(
    process: subprocess.Popen[str],
    awaited: Callable[[str], bool],
    seconds: float,
    pause: float = 0.0,
) -> list[str]:
    """
    The lines C{process} writes to its standard error up to the first one
    C{awaited} accepts, read within C{seconds} (a script gone silent is
    killed then: its output ends and the caller's assertions say what was
    seen); C{pause} seconds later it gets SIGINT, as Ctrl-C sends, and
    must exit 130.  It does not outlive the call.
    """
    assert process.stderr is not None
    watchdog = threading.Timer(seconds, process.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        for line in process.stderr:
            seen.append(line)
            if awaited(line):
                break
        watchdog.cancel()
        assert seen and awaited(seen[-1]), seen
        time.sleep(pause)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return seen
