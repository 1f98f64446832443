"""
nginx's mail proxy (Debian C{nginx} + C{libnginx-mod-mail}) as the reference
peer: a C proxy that only passes bytes through.

It runs from its own nginx.conf in a temporary directory (pid file, error
log), in the foreground, with C{proxy_buffer 64k}: nginx 1.22's 4 KB default
stalls ~40 ms per response because it never sets TCP_NODELAY.  Logins are
checked by the C{auth_http} responder in L{bench._authhttp}, which sends
every session to the benchmark's Dovecot.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from bench._process import LOOPBACK, ManagedProcess, childrenOf, freePort, waitForPort

_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_mail_module.so",
    "/usr/share/nginx/modules/ngx_mail_module.so",
)


class NginxError(RuntimeError):
    """
    nginx or its mail module is missing, or it did not start.
    """


def mailModule() -> Path:
    for candidate in _MODULE_PATHS:
        if Path(candidate).exists():
            return Path(candidate)
    raise NginxError("nginx's mail module is not installed (Debian: nginx libnginx-mod-mail)")


def buildNginxConfig(
    directory: Path, port: int, authPort: int, workers: str, connections: int
) -> str:
    """
    The text of nginx.conf for the mail proxy on 127.0.0.1:C{port}.
    """
    return f"""\
# Written by popproxy's benchmark (bench/_nginx.py); not for production.
load_module {mailModule()};
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {connections * 2 + 100};
user nobody nogroup;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{
    worker_connections {connections * 2 + 100};
}}
mail {{
    auth_http {LOOPBACK}:{authPort}/auth;
    proxy_pass_error_message on;
    server {{
        listen {LOOPBACK}:{port};
        protocol pop3;
        proxy on;
        proxy_buffer 64k;
        pop3_auth plain;
    }}
}}
"""


class NginxMailProxy:
    """
    nginx (master and workers) plus its auth_http responder.
    """

    def __init__(self, upstreamPort: int, workers: str = "1", connections: int = 1200) -> None:
        self.upstreamPort = upstreamPort
        self.workers = workers
        self.connections = connections
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-nginx-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.port = 0
        self._nginx: ManagedProcess | None = None
        self._auth: ManagedProcess | None = None

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise NginxError("nginx is not installed (Debian: nginx libnginx-mod-mail)")
        authPort = freePort()
        self._auth = ManagedProcess(
            "auth_http",
            [sys.executable, str(Path(__file__).with_name("_authhttp.py")), str(authPort)]
            + [str(self.upstreamPort)],
            cwd=self.directory,
            logPath=self.directory / "auth.out",
        )
        self._auth.start()
        self.port = freePort()
        config = self.directory / "nginx.conf"
        config.write_text(
            buildNginxConfig(self.directory, self.port, authPort, self.workers, self.connections)
        )
        self._nginx = ManagedProcess(
            "nginx",
            [binary, "-p", str(self.directory), "-e", str(self.directory / "error.log")]
            + ["-c", str(config)],
            cwd=self.directory,
            logPath=self.directory / "nginx.out",
        )
        self._nginx.start()
        try:
            waitForPort(authPort, timeout)
            waitForPort(self.port, timeout)
        except TimeoutError as e:
            raise NginxError(f"{e}\n{self._nginx.output()}\n{self.errorLog()}") from None

    @property
    def pid(self) -> int:
        assert self._nginx is not None
        return self._nginx.pid

    def workerPids(self) -> list[int]:
        """
        The worker processes, which hold the sessions.
        """
        return childrenOf(self.pid)

    def errorLog(self) -> str:
        try:
            return (self.directory / "error.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for process in (self._nginx, self._auth):
            if process is not None:
                process.stop()
        self._nginx = self._auth = None
        shutil.rmtree(self.directory, ignore_errors=True)
