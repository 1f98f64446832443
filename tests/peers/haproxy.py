"""Run a private HAProxy (Debian's C{haproxy}) in TCP mode in front of popproxy instances.

The balancer is the reference deployment's (docs/scaling.md): one frontend on a free loopback
port, round robin over the given servers, each sent a PROXY v2 header (C{send-proxy-v2}), a
dead server skipped by the next connection (C{retries} with C{option redispatch}), and health
checks that send the header too. HAProxy runs in the foreground and logs to its standard output,
kept in a file the test can read.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.peers.daemons import readText, terminateWithParent, unavailable
from tests.peers.ports import freePort, waitForPort

__all__ = ["HaproxyBalancer", "balancerConfig", "haproxyBinary"]


def haproxyBinary() -> str:
    """
    Where C{haproxy} is; skip (fail in CI) when it is not installed.
    """
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        unavailable("haproxy is not installed (Debian: haproxy)")
    return found


def balancerConfig(frontendPort: int, servers: Sequence[tuple[str, int]]) -> str:
    """
    The configuration of the reference deployment's balancer: clients on
    C{frontendPort}, round robin over C{servers} (name, port on 127.0.0.1).
    """
    lines = [
        "global",
        "    log stdout format raw local0 info",
        "    maxconn 2000",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        # A connection refused by a dead instance is retried on another.
        "    retries 2",
        "    option redispatch 1",
        "frontend pop3",
        f"    bind 127.0.0.1:{frontendPort}",
        "    default_backend popproxy",
        "backend popproxy",
        "    balance roundrobin",
    ]
    lines += [
        f"    server {name} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy "
        "inter 1s fall 2 rise 1"
        for name, port in servers
    ]
    return "\n".join(lines) + "\n"


class HaproxyBalancer:
    """
    One HAProxy in the foreground, its configuration and log in C{directory}.

    @ivar port: the frontend port clients connect to.
    """

    def __init__(self, directory: Path, servers: Sequence[tuple[str, int]]) -> None:
        self.directory = directory
        self.port = freePort()
        self.configPath = directory / "haproxy.cfg"
        self.logPath = directory / "haproxy.log"
        self.configPath.write_text(balancerConfig(self.port, servers), encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """
        Check the configuration as an operator would (C{haproxy -c}), start
        HAProxy and return once its frontend accepts connections.
        """
        binary = haproxyBinary()
        checked = subprocess.run(
            [binary, "-c", "-f", str(self.configPath)], capture_output=True, timeout=30
        )
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c refused the configuration:\n{checked.stdout!r}")
        with self.logPath.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-db", "-f", str(self.configPath)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=terminateWithParent,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                waitForPort("127.0.0.1", self.port, 0.2)
                return
            except TimeoutError:
                pass
        self.stop()
        raise RuntimeError(f"haproxy did not listen within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL after 10 s) and wait for it."""
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
        """HAProxy's whole log (one line per connection, C{option tcplog})."""
        return readText(self.logPath)
