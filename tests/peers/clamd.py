"""Run a private clamd with a test-only signature database, and two broken stand-ins for it.

The real clamd (Debian's C{clamav-daemon}) runs from its own configuration file in a temporary
directory: TCP on a free loopback port, a UNIX socket beside it, a database directory holding
nothing but signatures for the EICAR test string made at run time (no freshclam: there is no
internet here, and the tests must not depend on what the official databases say). It starts in
well under a second. The EICAR string is assembled from pieces so that no file of the
repository holds it verbatim (a virus scanner on a developer's machine would quarantine it).

The stand-ins: an address where nothing listens (clamd down), and a server that accepts
connections, reads everything and never answers (clamd hanging).
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers.daemons import logSince, logSize, readText, terminateWithParent, unavailable
from tests.peers.ports import freePort

__all__ = ["clamd", "clamdServer", "clamdStalling", "clamdUnreachable"]

#: The name of the test signatures; clamd reports it with C{.UNOFFICIAL} appended.
EICAR_SIGNATURE = "Popproxy.Test.EICAR"

#: clamd's StreamMaxLength in the test configuration: small, so the size limit is cheap to hit.
STREAM_MAX_LENGTH = 1024 * 1024

_LOG_TAIL_LINES = 200


def eicar() -> bytes:
    """
    Return the 68-octet EICAR anti-virus test string (eicar.org), harmless by design.
    """
    pieces = (
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-",
        "ANTIVIRUS-TEST-",
        "FILE!$H+H*",
    )
    return "".join(pieces).encode("ascii")


class ClamdStartError(RuntimeError):
    """clamd could not be started; the message carries its output and log."""


def writeSignatures(databaseDirectory: Path, sigtool: str) -> None:
    """
    Write the test database: an C{.hdb} hash signature made by C{sigtool --md5} from a file
    holding the EICAR string, and an C{.ndb} body signature that finds it anywhere in a file.
    """
    databaseDirectory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="popproxy-eicar-") as scratch:
        sample = Path(scratch) / "eicar.com"
        sample.write_bytes(eicar())
        made = subprocess.run(
            [sigtool, "--md5", str(sample)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    digest, size, _ = made.stdout.strip().split(":", 2)
    (databaseDirectory / "popproxy-test.hdb").write_text(f"{digest}:{size}:{EICAR_SIGNATURE}\n")
    (databaseDirectory / "popproxy-test.ndb").write_text(f"{EICAR_SIGNATURE}:0:*:{eicar().hex()}\n")


def buildClamdConfig(
    *, directory: Path, port: int, socketPath: Path, streamMaxLength: int = STREAM_MAX_LENGTH
) -> str:
    """
    Return a self-contained clamd.conf for one private instance whose files all live in
    C{directory}.
    """
    return f"""\
# Written by popproxy's test suite for one private clamd; not for production.
Foreground yes
TCPSocket {port}
TCPAddr 127.0.0.1
LocalSocket {socketPath}
LocalSocketMode 600
DatabaseDirectory {directory / "db"}
TemporaryDirectory {directory / "tmp"}
LogFile {directory / "clamd.log"}
LogTime yes
LogClean yes
PidFile {directory / "clamd.pid"}
StreamMaxLength {streamMaxLength}
MaxThreads 8
ExtendedDetectionInfo yes
SelfCheck 3600
"""


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return whether a clamd on C{host}:C{port} answers C{zPING} with C{PONG}."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"zPING\0")
            answer = b""
            while not answer.endswith(b"\0"):
                chunk = connection.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer == b"PONG\0"


class ClamdServer:
    """
    One private clamd in its own directory, listening on a loopback port and a UNIX socket.

    It runs as the user running the tests (root in CI: clamd only switches users when its
    configuration says C{User}, and this one does not).
    """

    def __init__(self, directory: Path, *, streamMaxLength: int = STREAM_MAX_LENGTH) -> None:
        self.directory = directory
        self.streamMaxLength = streamMaxLength
        self.host = "127.0.0.1"
        self.port = 0
        # UNIX socket paths are limited to 107 octets: keep it short, in the directory.
        self.socketPath = directory / "clamd.sock"
        self.configPath = directory / "clamd.conf"
        self.logPath = directory / "clamd.log"
        self.outputPath = directory / "clamd.out"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tcpAddress(self) -> str:
        """The client endpoint string of the TCP listener."""
        return f"tcp:{self.host}:{self.port}"

    @property
    def unixAddress(self) -> str:
        """The client endpoint string of the UNIX socket."""
        return f"unix:{self.socketPath}"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """
        Start clamd and return once it answers PING with PONG.

        A port taken by someone else between L{freePort} and clamd's bind is retried with
        another port, up to C{attempts} times.

        @raise ClamdStartError: with clamd's output and log, if it did not come up in time.
        """
        if self._process is not None:
            raise RuntimeError("clamd is already running")
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        sigtool = shutil.which("sigtool") or "/usr/bin/sigtool"
        writeSignatures(self.directory / "db", sigtool)
        (self.directory / "tmp").mkdir(exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = freePort(self.host)
            self.configPath.write_text(
                buildClamdConfig(
                    directory=self.directory,
                    port=self.port,
                    socketPath=self.socketPath,
                    streamMaxLength=self.streamMaxLength,
                )
            )
            with open(self.outputPath, "ab") as output:
                self._process = subprocess.Popen(
                    [binary, "--config-file", str(self.configPath)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    preexec_fn=terminateWithParent,
                )
            atexit.register(self.stop)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ping(self.host, self.port):
                    return
                if self._process.poll() is not None:
                    break
                time.sleep(0.05)
            exited = self._process.poll() is not None
            self.stop()
            # An early exit is most likely a lost race for the port: try another one.
            if not exited or attempt == attempts:
                raise ClamdStartError(
                    f"clamd did not answer PING on {self.host}:{self.port} within {timeout}s"
                    f"\n--- output ---\n{self.output()}\n--- log ---\n{self.log()}"
                )

    def stop(self) -> None:
        """Stop clamd (SIGTERM, then SIGKILL after 10 s) and wait for it."""
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

    def output(self) -> str:
        """Return what clamd wrote to stdout and stderr."""
        return readText(self.outputPath)

    def log(self) -> str:
        """Return clamd's whole log file."""
        return self.logSince(0)

    def logSize(self) -> int:
        """Return the current length of the log, for L{logSince}."""
        return logSize(self.logPath)

    def logSince(self, offset: int) -> str:
        """Return what clamd logged from octet C{offset} on."""
        return logSince(self.logPath, offset)


@dataclass
class StallingServer:
    """
    A TCP server on loopback that accepts connections, reads and discards what arrives, and
    never answers: a clamd that hangs. Runs in a thread of the test process.
    """

    host: str = "127.0.0.1"
    port: int = 0
    accepted: int = 0
    _listener: socket.socket | None = field(default=None, repr=False)
    _connections: list[socket.socket] = field(default_factory=list, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """The client endpoint string to give the scan plugin."""
        return f"tcp:{self.host}:{self.port}"

    def start(self) -> None:
        """Listen on a free port and serve in a daemon thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="stalling-clamd", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                pass
            except OSError:
                return
            else:
                connection.settimeout(0)
                self._connections.append(connection)
                self.accepted += 1
            for connection in list(self._connections):
                try:
                    while connection.recv(65536):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._connections.remove(connection)

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        for connection in self._connections:
            connection.close()
        self._connections.clear()


@dataclass(frozen=True)
class ClamdPeer:
    """
    The session's clamd as one test sees it: its addresses and its log since the test began.
    """

    server: ClamdServer
    logOffset: int

    @property
    def tcpAddress(self) -> str:
        return self.server.tcpAddress

    @property
    def unixAddress(self) -> str:
        return self.server.unixAddress

    @property
    def streamMaxLength(self) -> int:
        return self.server.streamMaxLength

    def log(self) -> str:
        """Return what clamd logged since this test began."""
        return self.server.logSince(self.logOffset)


class _ClamdLogReporter:
    """A pytest plugin that shows clamd's log in the report of a failed test that used it."""

    def __init__(self, server: ClamdServer) -> None:
        self.server = server

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed:
            funcargs = getattr(item, "funcargs", {})
            peer = funcargs.get("clamd")
            if isinstance(peer, ClamdPeer) and peer.server is self.server:
                report.sections.append(("clamd log since the test began", peer.log()))
            elif "clamdServer" in funcargs:
                tail = "\n".join(self.server.log().splitlines()[-_LOG_TAIL_LINES:])
                report.sections.append(("clamd log (tail)", tail))
        return report


@pytest.fixture(scope="session")
def clamdServer(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ClamdServer]:
    """
    A private clamd for the whole test session, with only the test signatures loaded.

    Its directory is a short one under the system temporary directory (a UNIX socket path
    must fit in 107 octets); its log and output are copied into pytest's basetemp at the end.
    """
    if shutil.which("clamd") is None and not Path("/usr/sbin/clamd").exists():
        unavailable("clamd is not installed (Debian: clamav-daemon clamav)")
    if shutil.which("sigtool") is None and not Path("/usr/bin/sigtool").exists():
        unavailable("sigtool is not installed (Debian: clamav)")
    directory = Path(tempfile.mkdtemp(prefix="popproxy-clamd-"))
    server = ClamdServer(directory)
    reporter = _ClamdLogReporter(server)
    request.config.pluginmanager.register(reporter, f"popproxy-clamd-log-{id(reporter)}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
        keep = tmp_path_factory.mktemp("clamd")
        for path in (server.logPath, server.outputPath, server.configPath):
            if path.exists():
                shutil.copyfile(path, keep / path.name)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def clamd(clamdServer: ClamdServer) -> ClamdPeer:
    """The session's clamd; a failing test's report shows what clamd logged during it."""
    return ClamdPeer(clamdServer, clamdServer.logSize())


@pytest.fixture
def clamdUnreachable() -> str:
    """
    A TCP endpoint string for a loopback port nothing listens on (connections are refused).
    """
    return f"tcp:127.0.0.1:{freePort()}"


@pytest.fixture
def clamdStalling() -> Iterator[StallingServer]:
    """A server that accepts connections and never answers, stopped after the test."""
    server = StallingServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
