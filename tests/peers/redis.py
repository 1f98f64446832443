"""Run a private Redis (Debian's C{redis-server}) on a free loopback port, for the counter store.

One instance serves the whole test session, with no persistence (C{--save ''},
C{--appendonly no}); a test may kill it (Redis down) and start it again on the same port
(Redis back). The C{redis} fixture makes sure it runs and is empty when a test begins.
"""

from __future__ import annotations

import atexit
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
    logSince,
    logSize,
    readText,
    terminateWithParent,
    unavailable,
)
from tests.peers.ports import freePort

__all__ = ["redis", "redisServer"]

_LOG_TAIL_LINES = 200


class RedisStartError(RuntimeError):
    """redis-server could not be started; the message carries its log."""


def command(host: str, port: int, *arguments: bytes, timeout: float = 1.0) -> bytes:
    """
    Send one command and return the first line of the answer (blocking, for the fixture's own
    checks); C{b""} if Redis cannot be reached.
    """
    request = b"*%d\r\n" % len(arguments) + b"".join(
        b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(request)
            answer = b""
            while b"\r\n" not in answer:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return b""
    return answer.split(b"\r\n", 1)[0]


class RedisServer:
    """
    One private redis-server, its files in C{directory}.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = freePort(self.host)
        self.logPath = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """
        Start redis-server on C{self.port} and return once it answers PING.

        @raise RedisStartError: with its log, if it did not answer in time.
        """
        if self.running:
            raise RuntimeError("redis-server is already running")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        arguments = [binary, "--port", str(self.port), "--bind", self.host, "--save", ""]
        arguments += ["--appendonly", "no", "--dir", str(self.directory)]
        arguments += ["--logfile", str(self.logPath), "--daemonize", "no"]
        self._process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=terminateWithParent,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisStartError(
            f"redis-server did not answer PING on {self.host}:{self.port} within {timeout}s"
            f"\n--- log ---\n{self.log()}"
        )

    def ping(self) -> bool:
        """Whether Redis answers PING with PONG."""
        return command(self.host, self.port, b"PING", timeout=0.5) == b"+PONG"

    def flush(self) -> None:
        """Empty every database."""
        if command(self.host, self.port, b"FLUSHALL") != b"+OK":
            raise RedisStartError(f"FLUSHALL failed\n--- log ---\n{self.log()}")

    def kill(self) -> None:
        """Kill Redis at once (SIGKILL, no goodbye to its clients): Redis down."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop Redis (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log(self) -> str:
        """Redis's whole log."""
        return readText(self.logPath)

    def logSize(self) -> int:
        return logSize(self.logPath)

    def logSince(self, offset: int) -> str:
        return logSince(self.logPath, offset)


@pytest.fixture(scope="session")
def redisServer(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RedisServer]:
    """
    A private Redis for the whole test session; its log is copied into pytest's basetemp.
    """
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        unavailable("redis-server is not installed (Debian: redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="popproxy-redis-"))
    server = RedisServer(directory)
    reporter = TailLogReporter("redis", "redisServer", server.log, _LOG_TAIL_LINES)
    request.config.pluginmanager.register(reporter, f"popproxy-redis-log-{id(reporter)}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
        keep = tmp_path_factory.mktemp("redis")
        if server.logPath.exists():
            shutil.copyfile(server.logPath, keep / server.logPath.name)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis(redisServer: RedisServer) -> RedisServer:
    """
    The session's Redis, running (restarted if an earlier test killed it) and empty.
    """
    if not redisServer.running:
        redisServer.start()
    redisServer.flush()
    return redisServer
