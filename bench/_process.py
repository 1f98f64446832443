"""
Child processes of the benchmark, and what /proc says about them.

Every server the benchmark starts (Dovecot, nginx, twistd, the auth_http
responder) runs in its own process group, is registered with C{atexit} and
is stopped with its whole group, so an interrupted run leaves nothing
behind.  Memory and CPU figures come from C{/proc/PID/status} and
C{/proc/PID/stat}.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def waitForPort(port: int, timeout: float) -> None:
    """
    Return once 127.0.0.1:C{port} accepts a connection.

    @raise TimeoutError: nothing accepted one within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {LOOPBACK}:{port} after {timeout}s"
                ) from None
            time.sleep(0.05)


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's open-file limit (inherited by every child) to at
    least C{wanted} if the hard limit allows it (root may raise that too);
    return the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard < wanted and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    soft = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _dieWithParent() -> None:
    """
    In the forked child: ask Linux for SIGTERM when the benchmark dies, so
    even a SIGKILLed run (no atexit) does not leave servers behind.
    """
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """
    One server process, leader of its own process group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        logPath: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.logPath = logPath
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.logPath.open("ab") as output:
            self._process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_dieWithParent if sys.platform == "linux" else None,
            )
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.name} was not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def output(self) -> str:
        """
        The last lines the process printed, for error messages.
        """
        try:
            text = self.logPath.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-40:])

    def stop(self, timeout: float = 10.0) -> None:
        """
        SIGTERM the whole group, SIGKILL what is left after C{timeout}
        seconds; safe to call twice and from C{atexit}.
        """
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        group = process.pid
        _signalGroup(group, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signalGroup(group, signal.SIGKILL)
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while groupMembers(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        if groupMembers(group):
            _signalGroup(group, signal.SIGKILL)


def _signalGroup(group: int, number: int) -> None:
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        pass


def _statFields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid pgrp ...": the command may hold spaces.
    return stat[stat.rindex(")") + 2 :].split()


def groupMembers(group: int) -> list[int]:
    """
    The live (non-zombie) processes of process group C{group}.
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _statFields(int(entry.name))
        if fields is not None and int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def childrenOf(pid: int) -> list[int]:
    """
    The live direct children of C{pid} (nginx's workers).
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _statFields(int(entry.name))
        if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def descendantsOf(pid: int) -> list[int]:
    """
    The live children of C{pid}, their children, and so on (popproxy's
    worker processes).
    """
    found: list[int] = []
    waiting = [pid]
    while waiting:
        children = childrenOf(waiting.pop())
        found += children
        waiting += children
    return found


def memory(pid: int) -> dict[str, int]:
    """
    C{VmRSS} and C{VmHWM} (peak RSS) of C{pid}, in bytes; zeros if it is gone.
    """
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0]) * 1024
    return values


def resetPeak(pid: int) -> bool:
    """
    Reset C{VmHWM} to the current RSS (Linux: C{5 > /proc/PID/clear_refs}),
    so the next peak belongs to the next measurement; C{False} if the
    kernel refused.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpuTimes(pid: int) -> tuple[float, float]:
    """
    User and system CPU seconds C{pid} has used so far (zeros if it is gone).
    """
    fields = _statFields(pid)
    if fields is None:
        return 0.0, 0.0
    # utime and stime are fields 14 and 15 of /proc/PID/stat.
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def reapedCpuSeconds(pid: int) -> float:
    """
    CPU seconds (user and system) of the children C{pid} has waited for
    (C{cutime} and C{cstime}: Dovecot's finished pop3 processes); 0 if gone.
    """
    fields = _statFields(pid)
    if fields is None:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS


def openDescriptors(pid: int) -> int:
    """
    How many file descriptors C{pid} holds open (0 if it is gone).
    """
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def fileLimit(pid: int) -> int | None:
    """
    The soft open-file limit of C{pid} (C{/proc/PID/limits}); C{None} if
    it is gone or unlimited.
    """
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return int(soft) if soft.isdigit() else None
    return None
