"""
popproxy under test: C{twistd -n popproxy} as administrators run it.

By default the C{popproxy} installed for C{sys.executable} is measured (the
C{twistd} script next to it, started from an empty directory so the source
tree is not imported by accident); C{source} points at a checkout instead,
which is how before/after figures of an optimization are taken without
reinstalling.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._process import LOOPBACK, ManagedProcess, freePort, waitForPort


class PopproxyError(RuntimeError):
    """
    popproxy is not installed or did not start.
    """


def twistdCommand() -> str:
    """
    The C{twistd} script of the running Python (a virtualenv's own).
    """
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise PopproxyError("twistd is not installed (pip install twisted)")
    return found


class PopproxyProcess:
    """
    One C{twistd -n popproxy} process relaying to one upstream.

    @param config: a TOML file (for example with a filter chain); C{--listen}
        and C{--upstream} given on the command line override its own.
    @param behindBalancer: listen with C{haproxy:} (every connection starts
        with a PROXY header) instead of plain C{tcp:}.
    """

    def __init__(
        self,
        upstreamPort: int,
        *,
        config: Path | None = None,
        source: Path | None = None,
        label: str = "popproxy",
        behindBalancer: bool = False,
    ) -> None:
        self.upstreamPort = upstreamPort
        self.config = config
        self.source = source
        self.label = label
        self.behindBalancer = behindBalancer
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-twistd-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.port = 0
        self._process: ManagedProcess | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source.resolve())
        return env

    def whichPopproxy(self) -> str:
        """
        Where the measured popproxy package is imported from.
        """
        result = subprocess.run(
            [sys.executable, "-c", "import popproxy; print(popproxy.__file__)"],
            cwd=self.directory,
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise PopproxyError(
                "popproxy is not importable; install it with `pip install .`\n" + result.stderr
            )
        return str(Path(result.stdout.strip()).parent)

    def command(self) -> list[str]:
        argv = [
            twistdCommand(),
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.directory / "twistd.log"),
        ]
        argv += ["popproxy"]
        if self.config is not None:
            argv += ["--config", str(self.config.resolve())]
        wrapper = "haproxy:" if self.behindBalancer else ""
        argv += ["--listen", f"{wrapper}tcp:{self.port}:interface={LOOPBACK}"]
        argv += ["--upstream", f"tcp:{LOOPBACK}:{self.upstreamPort}"]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.port = freePort()
        self._process = ManagedProcess(
            self.label,
            self.command(),
            cwd=self.directory,
            logPath=self.directory / "twistd.out",
            env=self._environment(),
        )
        self._process.start()
        try:
            waitForPort(self.port, timeout)
        except TimeoutError as e:
            raise PopproxyError(f"{e}\n{self._process.output()}\n{self.log()}") from None
        if not self._process.running:
            raise PopproxyError(f"popproxy exited at start-up:\n{self._process.output()}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def log(self, lines: int = 30) -> str:
        try:
            text = (self.directory / "twistd.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def sessionsQuit(self) -> int:
        """
        How many sessions ended with the client's QUIT so far, from the log
        (a balancer's health checks never QUIT).
        """
        try:
            text = (self.directory / "twistd.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return 0
        return text.count(" closed: client quit;")

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)
