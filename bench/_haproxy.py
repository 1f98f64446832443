"""
HAProxy (Debian's C{haproxy}) as the benchmark's TCP balancer: the reference
deployment's (docs/scaling.md) in front of popproxy instances.

It runs from its own haproxy.cfg in a temporary directory, in the
foreground (C{-db}), on a free loopback port: C{mode tcp}, round robin,
C{send-proxy-v2} to each server with health checks that send the header
too, C{retries}/C{option redispatch}; no per-connection log (a deployment
sends it to syslog, which costs the balancer little).  C{maxconn} and the
timeouts are sized so that the balancer never limits the benchmark.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._process import LOOPBACK, ManagedProcess, freePort, waitForPort


class HaproxyError(RuntimeError):
    """
    HAProxy is missing, refused its configuration, or did not start.
    """


def haproxyBinary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise HaproxyError("haproxy is not installed (Debian: haproxy)")
    return found


def buildHaproxyConfig(port: int, serverPorts: Sequence[int], connections: int) -> str:
    """
    The text of haproxy.cfg: clients on 127.0.0.1:C{port}, round robin over
    the servers on 127.0.0.1:C{serverPorts}, each sent a PROXY v2 header.
    """
    servers = "\n".join(
        f"    server p{number} {LOOPBACK}:{serverPort} send-proxy-v2 "
        "check check-send-proxy inter 2s fall 2 rise 1"
        for number, serverPort in enumerate(serverPorts, 1)
    )
    return f"""\
# Written by popproxy's benchmark (bench/_haproxy.py): the reference
# deployment's balancer (docs/scaling.md), sized for the benchmark.
global
    maxconn {connections * 2 + 100}
defaults
    mode tcp
    timeout connect 5s
    # Longer than any benchmark session waits (idle sessions, slow reader).
    timeout client 10m
    timeout server 10m
    retries 2
    option redispatch 1
frontend pop3
    bind {LOOPBACK}:{port}
    maxconn {connections * 2 + 100}
    default_backend popproxy
backend popproxy
    balance roundrobin
{servers}
"""


class HaproxyBalancer:
    """
    One HAProxy process in front of the servers on C{serverPorts}.
    """

    def __init__(self, serverPorts: Sequence[int], connections: int = 1200) -> None:
        self.serverPorts = tuple(serverPorts)
        self.connections = connections
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-haproxy-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.port = 0
        self._process: ManagedProcess | None = None

    def start(self, timeout: float = 15.0) -> None:
        binary = haproxyBinary()
        self.port = freePort()
        config = self.directory / "haproxy.cfg"
        config.write_text(buildHaproxyConfig(self.port, self.serverPorts, self.connections))
        checked = subprocess.run(
            [binary, "-c", "-q", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise HaproxyError(f"haproxy -c refused {config}:\n{checked.stdout}{checked.stderr}")
        self._process = ManagedProcess(
            "haproxy",
            [binary, "-db", "-f", str(config)],
            cwd=self.directory,
            logPath=self.directory / "haproxy.out",
        )
        self._process.start()
        try:
            waitForPort(self.port, timeout)
        except TimeoutError as e:
            raise HaproxyError(f"{e}\n{self._process.output()}") from None
        if not self._process.running:
            raise HaproxyError(f"haproxy exited at start-up:\n{self._process.output()}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def output(self) -> str:
        """
        What HAProxy printed (alerts and warnings), for error messages.
        """
        return self._process.output() if self._process is not None else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)
