"""
Run popproxy the way administrators do, `twistd -n popproxy --config FILE`,
as a subprocess on loopback ports, for end-to-end tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.daemons import forgetGroup, reapWithRun, terminateWithParent
from tests.peers.ports import freePort, waitForPort

__all__ = [
    "ProxyProcess",
    "popproxyFactory",
    "startInOwnSession",
    "stopGracefully",
    "twistdCommand",
]


def twistdCommand() -> str:
    """
    The C{twistd} script of the Python running the tests (a virtualenv's
    own, in CI), the command administrators run.
    """
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("twistd is not installed")
    return found


def stopGracefully(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """
    Stop a process started in its own session: SIGTERM, as an init system
    would, then SIGKILL to its whole group if it hangs; return its status
    (and tell the run's reaper it has nothing left to do for it).
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    forgetGroup(process.pid)
    return process.returncode


def startInOwnSession(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """
    Start C{command} in a session of its own (a signal to its group reaches
    its workers too) that does not outlive the test run, even one killed with
    SIGKILL: Linux sends it SIGTERM when the run dies, and the run's reaper
    takes its group; stop it with L{stopGracefully}.
    """
    process = subprocess.Popen(
        command, start_new_session=True, preexec_fn=terminateWithParent, **options
    )
    reapWithRun(process.pid)
    return process


class ProxyProcess:
    """
    One `twistd -n popproxy` process.

    @ivar port: the loopback port the proxy listens on.
    """

    def __init__(self, workdir: Path, config: str, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or freePort()
        self.configPath = workdir / "popproxy.conf"
        self.logPath = workdir / "twistd.log"
        #: The configuration to write again with another port if the one picked
        #: was taken before twistd bound it (None: the caller chose the port).
        self._template = None if port else config
        self.configPath.write_text(config.replace("{PORT}", str(self.port)), encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            twistdCommand(),
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.logPath),
            "popproxy",
            "--config",
            str(self.configPath),
        ]

    def start(self, timeout: float = 20.0, attempts: int = 3) -> None:
        """
        Start twistd and return once it listens on C{self.port}: the port
        accepts connections and the log says twistd itself started listening
        there (not someone else who took the port).  A port picked here and
        taken by someone else before twistd bound it is retried with another
        one, up to C{attempts} times.
        """
        for attempt in range(1, attempts + 1):
            self._process = startInOwnSession(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if self._listening(timeout):
                return
            output = self.output()
            taken = "Address already in use" in output and self._template is not None
            if not taken or attempt == attempts:
                raise RuntimeError(f"popproxy exited at start-up:\n{output}")
            self.stop()
            self.logPath.unlink(missing_ok=True)
            assert self._template is not None
            self.port = freePort()
            self.configPath.write_text(
                self._template.replace("{PORT}", str(self.port)), encoding="utf-8"
            )

    def _listening(self, timeout: float) -> bool:
        """
        Wait until twistd listens on C{self.port}; False if it exited first.

        @raise RuntimeError: if it still did not listen after C{timeout} seconds.
        """
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                waitForPort("127.0.0.1", self.port, 0.2)
            except TimeoutError:
                continue
            if f" starting on {self.port}\n" in self.log():
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"popproxy did not listen within {timeout}s:\n{self.output()}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def rss(self, field: str = "VmRSS") -> int:
        """
        Resident memory of the proxy process now (or its peak, with
        C{field="VmHWM"}), in bytes.
        """
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field}")

    def output(self) -> str:
        """
        What the process printed (after it ended) and its log file.
        """
        printed = b""
        if self._process is not None and self._process.poll() is not None and self._process.stdout:
            printed = self._process.stdout.read()
        log = self.logPath.read_text("utf-8", "replace") if self.logPath.exists() else ""
        return printed.decode("utf-8", "replace") + log

    def log(self) -> str:
        return self.logPath.read_text("utf-8", "replace") if self.logPath.exists() else ""

    def waitForExit(self, timeout: float) -> int:
        """
        Wait (at most C{timeout} seconds) for the process to end by itself,
        after a signal the test sent; return its status.
        """
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """
        SIGTERM, as an init system would; SIGKILL the group if it hangs.
        """
        if self._process is None:
            return None
        returncode = stopGracefully(self._process, timeout)
        if self._process.stdout:
            self._process.stdout.close()
        return returncode


@pytest.fixture
def popproxyFactory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[type[ProxyProcess] | object]:
    """
    Start popproxy processes from configuration text (C{{PORT}} is replaced
    by a free port); all are stopped at teardown, their log printed if the
    test failed.
    """
    started: list[ProxyProcess] = []

    def start(config: str) -> ProxyProcess:
        workdir = tmp_path / f"popproxy{len(started)}"
        workdir.mkdir()
        proxy = ProxyProcess(workdir, config)
        started.append(proxy)
        proxy.start()
        return proxy

    yield start
    failed = getattr(request.node, "rep_call", None)
    for proxy in started:
        proxy.stop()
        if failed is not None and failed.failed:
            print(f"--- popproxy log ({proxy.workdir}) ---\n{proxy.log()}")
