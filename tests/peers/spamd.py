"""Run a private SpamAssassin spamd on loopback, local tests only, shared by the test session."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.daemons import (
    TailLogReporter,
    forgetGroup,
    liveGroupMembers,
    readText,
    reapWithRun,
    terminateWithParent,
    unavailable,
)
from tests.peers.ports import freePort

__all__ = ["spamdServer"]

#: The site configuration of the private spamd: no network tests at all
#: (with C{-L}), no learning, nothing kept between runs.
SITE_CONFIG = """\
# Written by popproxy's test suite for one private spamd; not for production.
dns_available no
skip_rbl_checks 1
use_bayes 0
bayes_auto_learn 0
"""

#: Where Debian keeps the C{.pre} files that load SpamAssassin's plugins;
#: without them (v320.pre loads the Check plugin) spamd cannot scan at all.
DEBIAN_SITE_CONFIG = Path("/etc/spamassassin")

#: spamd drops to this user for its children.
SPAMD_USER = "nobody"

_LOG_TAIL_LINES = 100


class SpamdStartError(RuntimeError):
    """spamd could not be started; the message carries its output and log."""


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether spamd at C{host}:C{port} answers C{PING SPAMC/1.5} with C{PONG}."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING SPAMC/1.5\r\n\r\n")
            answer = b""
            while b"\n" not in answer:
                chunk = connection.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"SPAMD/") and b" 0 PONG" in answer


class SpamdServer:
    """
    One private spamd in its own directory: its own site configuration (copied C{.pre}
    files plus L{SITE_CONFIG}), C{-L} (local tests only), C{-x} (no per-user
    configuration), listening on a free loopback port, logging to C{spamd.log}.

    It runs as the leader of a new process group, so L{stop} takes its children too, and so
    does the run's reaper if the test run dies first (spamd loses the death signal Linux was
    asked for: seen surviving a test run killed with SIGKILL, with its children).
    """

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", maxChildren: int = 2) -> None:
        self.directory = directory
        self.host = host
        self.maxChildren = maxChildren
        self.port = 0
        self.siteConfig = directory / "site"
        self.logPath = directory / "spamd.log"
        self.outputPath = directory / "spamd.out"
        self.pidPath = directory / "spamd.pid"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The Twisted client endpoint string for this spamd (the tag plugin's C{spamd})."""
        return f"tcp:{self.host}:{self.port}"

    def _writeSiteConfig(self) -> None:
        self.siteConfig.mkdir(exist_ok=True)
        for pre in sorted(DEBIAN_SITE_CONFIG.glob("*.pre")):
            shutil.copyfile(pre, self.siteConfig / pre.name)
        (self.siteConfig / "local.cf").write_text(SITE_CONFIG)

    def command(self) -> list[str]:
        """The spamd command line."""
        binary = shutil.which("spamd") or "/usr/sbin/spamd"
        return [
            binary,
            "--local",
            "--nouser-config",
            f"--username={SPAMD_USER}",
            f"--siteconfigpath={self.siteConfig}",
            f"--listen={self.host}:{self.port}",
            f"--pidfile={self.pidPath}",
            f"--syslog={self.logPath}",
            f"--max-children={self.maxChildren}",
            "--min-children=1",
            "--timeout-tcp=10",
            "--timeout-child=60",
        ]

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """
        Start spamd and return once it answers a PING.

        A port taken between L{freePort} and spamd's bind is retried with another one.

        @raise SpamdStartError: with spamd's output and log, if it did not come up.
        """
        if self._process is not None:
            raise RuntimeError("spamd is already running")
        self._writeSiteConfig()
        for attempt in range(1, attempts + 1):
            self.port = freePort(self.host)
            with self.outputPath.open("ab") as output:
                self._process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=terminateWithParent,
                )
            reapWithRun(self._process.pid)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ping(self.host, self.port):
                    return
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
            exited = self._process.poll() is not None
            self.stop()
            if not (exited and "Address already in use" in self.output()) or attempt == attempts:
                raise SpamdStartError(
                    f"spamd did not answer PING on {self.host}:{self.port} "
                    f"within {timeout}s (attempt {attempt}):\n"
                    f"--- output ---\n{self.output()}\n--- log ---\n{self.log()}"
                )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop spamd and every process of its group: SIGTERM, then SIGKILL after C{timeout}."""
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while liveGroupMembers(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        if liveGroupMembers(group):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout)
        forgetGroup(group)

    def output(self) -> str:
        """What spamd wrote to stdout and stderr."""
        return readText(self.outputPath)

    def log(self) -> str:
        """spamd's log."""
        return readText(self.logPath)


@pytest.fixture(scope="session")
def spamdServer(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SpamdServer]:
    """
    A private spamd on 127.0.0.1 for the whole session (about a second to start, ~300 MB
    with its two children): local tests only, no Bayes, no DNS. GTUBE scores 1000.

    Its directory is outside pytest's basetemp (private to root) so that spamd's children,
    which run as C{nobody}, can reach it; the log is copied into basetemp at the end.
    """
    if shutil.which("spamd") is None and not Path("/usr/sbin/spamd").exists():
        unavailable("spamd is not installed (Debian: spamassassin spamd)")
    if not (DEBIAN_SITE_CONFIG / "v320.pre").exists():
        unavailable(f"{DEBIAN_SITE_CONFIG}/v320.pre is missing (Debian: spamassassin)")
    if os.geteuid() != 0:
        unavailable("the spamd fixture needs root, to run spamd's children as nobody")
    directory = Path(tempfile.mkdtemp(prefix="popproxy-spamd-"))
    directory.chmod(0o755)
    server = SpamdServer(directory)
    reporter = TailLogReporter("spamd", "spamdServer", server.log, _LOG_TAIL_LINES)
    request.config.pluginmanager.register(reporter, f"popproxy-spamd-log-{id(reporter)}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
        if server.logPath.exists():
            keep = tmp_path_factory.mktemp("spamd")
            shutil.copyfile(server.logPath, keep / "spamd.log")
        shutil.rmtree(directory, ignore_errors=True)
