"""
A private clamd for the benchmark, so the chain's C{scan} filter really scans.

It runs offline (no freshclam) from its own configuration in a temporary
directory, listens on a loopback high port, and loads one body signature
(the EICAR test string, assembled at run time): the point is to measure the
proxy's work of cutting a message into parts and streaming them, with clamd
answering as it does in production.  Its C{StreamMaxLength} is the C{scan}
plugin's default C{max_stream} (25 MiB).
"""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
import time
from pathlib import Path

from bench._process import LOOPBACK, ManagedProcess, freePort

#: clamd's StreamMaxLength here: the scan plugin's default max_stream.
STREAM_MAX_LENGTH = 25 * 1024 * 1024


class ClamdError(RuntimeError):
    """
    clamd is not installed or did not start.
    """


def _eicar() -> bytes:
    # Assembled from pieces, so no file of the repository holds it whole.
    return "".join(
        ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-", "ANTIVIRUS-TEST-", "FILE!$H+H*")
    ).encode("ascii")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as connection:
            connection.sendall(b"zPING\0")
            return connection.recv(64) == b"PONG\0"
    except OSError:
        return False


class ClamdServer:
    """
    One private clamd and its directory (removed on L{stop}).
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-clamd-"))
        atexit.register(shutil.rmtree, self.directory, True)
        self.port = 0
        self._process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        """
        The client endpoint string the C{scan} plugin is given.
        """
        return f"tcp:{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        if not Path(binary).exists():
            raise ClamdError("clamd is not installed (Debian: clamav-daemon)")
        database = self.directory / "db"
        database.mkdir()
        (self.directory / "tmp").mkdir()
        (database / "bench.ndb").write_text(f"Bench.EICAR:0:*:{_eicar().hex()}\n")
        self.port = freePort()
        config = self.directory / "clamd.conf"
        config.write_text(
            "# Written by popproxy's benchmark (bench/_clamd.py); not for production.\n"
            "Foreground yes\n"
            f"TCPSocket {self.port}\n"
            f"TCPAddr {LOOPBACK}\n"
            f"DatabaseDirectory {database}\n"
            f"TemporaryDirectory {self.directory / 'tmp'}\n"
            f"LogFile {self.directory / 'clamd.log'}\n"
            f"StreamMaxLength {STREAM_MAX_LENGTH}\n"
            "MaxThreads 8\n"
            "SelfCheck 3600\n"
        )
        self._process = ManagedProcess(
            "clamd",
            [binary, "--config-file", str(config)],
            cwd=self.directory,
            logPath=self.directory / "clamd.out",
        )
        self._process.start()
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if not self._process.running or time.monotonic() > deadline:
                output = self._process.output()
                self.stop()
                raise ClamdError(f"clamd did not answer PING:\n{output}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)
