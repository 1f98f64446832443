"""Run a private PostgreSQL 15 (Debian's C{postgresql}) on a free loopback port, for the quarantine.

One server serves the whole test session: C{initdb} into a temporary directory, then
C{postgres} itself, listening on 127.0.0.1 only, its socket in the same directory.  PostgreSQL
refuses to run as root, so as root both run as the C{postgres} user on a directory it owns;
as anyone else, as that user.  The server runs in the foreground as a child of the test run
(not daemonized by C{pg_ctl}, which would outlive a test run killed with SIGKILL), in its own
process group, asked to stop when its parent dies and reaped with the run (L{reapWithRun}).
The superuser C{popproxy} logs in with a password (scram-sha-256), so the tests use the URL
password like a deployment.  A test may stop the server (PostgreSQL down) and start it again
on the same port.  The C{postgres} fixture gives each test a database of its own, created
empty.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.daemons import (
    TailLogReporter,
    forgetGroup,
    readText,
    reapWithRun,
    terminateWithParent,
    unavailable,
)
from tests.peers.ports import freePort

__all__ = ["PostgresDatabase", "PostgresServer", "postgres", "postgresServer"]

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "popproxy"
PASSWORD = "quarantine-secret"
_LOG_TAIL_LINES = 200
_databases = itertools.count(1)


class PostgresStartError(RuntimeError):
    """PostgreSQL could not be started; the message carries its log."""


def _asOwner() -> list[str]:
    """
    The command prefix that runs a PostgreSQL tool as the data directory's owner.
    """
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PostgresServer:
    """
    One private PostgreSQL server, its data, socket and log in C{directory}.
    """

    def __init__(self, directory: Path, durable: bool = False) -> None:
        self.directory = directory
        #: fsync on (the benchmark); off for the tests, which need no crash safety.
        self.durable = durable
        self.data = directory / "data"
        self.logPath = directory / "postgres.log"
        self.host = "127.0.0.1"
        self.port = freePort(self.host)
        self.started = False
        self._everStarted = False
        self._process: subprocess.Popen[bytes] | None = None

    def _tool(self, name: str, *arguments: str, timeout: float = 60) -> None:
        command = [*_asOwner(), str(BIN / name), *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PostgresStartError(
                f"{name} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"\n--- log ---\n{self.log()}"
            )

    def initialize(self) -> None:
        """
        Make the data directory, owned by whoever runs the server, with the password user.
        """
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        os.chmod(self.directory, 0o700)
        passwordFile = self.directory / "password"
        passwordFile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(passwordFile, "postgres", "postgres")
        self._tool(
            "initdb",
            *("-D", str(self.data), "-U", USER, f"--pwfile={passwordFile}"),
            *("--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
        )

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """
        Start the server and return once it accepts connections.

        At the first start, a port taken by someone else between L{freePort} and the
        server's bind is retried with another port, up to C{attempts} times; a later start
        (PostgreSQL back after a test stopped it) keeps the port the tests know.

        @raise PostgresStartError: with its log, if it did not.
        """
        if self.started:
            raise RuntimeError("PostgreSQL is already running")
        for attempt in range(1, attempts + 1):
            if self._launch(timeout):
                self.started = True
                atexit.register(self.stop)
                return
            taken = "could not bind" in self.log() and not self._everStarted
            if not taken or attempt == attempts:
                raise PostgresStartError(
                    f"PostgreSQL did not start on {self.host}:{self.port} within {timeout}s"
                    f"\n--- log ---\n{self.log()}"
                )
            self.logPath.unlink(missing_ok=True)
            self.port = freePort(self.host)

    def _launch(self, timeout: float) -> bool:
        """
        Run C{postgres} in the foreground (as the data directory's owner when the tests
        run as root: Popen changes the user first, so the death signal set after it
        holds) and wait until it says it is ready; False, stopped, if it did not.
        """
        command = [str(BIN / "postgres"), "-D", str(self.data)]
        command += ["-c", f"listen_addresses={self.host}", "-p", str(self.port)]
        command += ["-k", str(self.directory)]
        if not self.durable:
            command += ["-c", "fsync=off"]
        owner: dict[str, object] = {}
        if os.geteuid() == 0:
            owner = {"user": "postgres", "group": "postgres", "extra_groups": []}
        with self.logPath.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=terminateWithParent,
                **owner,  # type: ignore[call-overload]
            )
        reapWithRun(self._process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._ready():
                self._everStarted = True
                return True
            time.sleep(0.05)
        self._halt()
        return False

    def _ready(self) -> bool:
        """
        Whether the server says, in its pid file, that it accepts connections (what
        C{pg_ctl -w} waits for).
        """
        assert self._process is not None
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        ours = len(lines) >= 8 and lines[0] == str(self._process.pid)
        return ours and lines[7].strip() == "ready"

    def _halt(self, timeout: float = 60.0) -> None:
        """
        Fast shutdown (SIGINT: clients are cut), SIGKILL to the group if it hangs.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        forgetGroup(process.pid)

    def stop(self) -> None:
        """
        Stop the server (fast mode: clients are cut) and wait until it has stopped.
        """
        atexit.unregister(self.stop)
        if not self.started:
            return
        self.started = False
        self._halt()

    def url(self, database: str = "postgres", password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@{self.host}:{self.port}/{database}"

    def execute(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """
        Run one statement (autocommit) and return its rows.
        """
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(statement)
            return list(cursor.fetchall()) if cursor.description else []

    def log(self) -> str:
        return readText(self.logPath)


class PostgresDatabase:
    """
    One empty database of the session's server, for one test.
    """

    def __init__(self, server: PostgresServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def execute(self, statement: str) -> list[tuple[object, ...]]:
        return self.server.execute(statement, self.name)


@pytest.fixture(scope="session")
def postgresServer(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[PostgresServer]:
    """
    A private PostgreSQL for the whole test session; its log goes into a failed test's
    report and is copied into pytest's basetemp.
    """
    if not (BIN / "initdb").exists():
        unavailable("PostgreSQL 15 is not installed (Debian: postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="popproxy-postgres-"))
    server = PostgresServer(directory)
    reporter = TailLogReporter("postgres", "postgres", server.log, _LOG_TAIL_LINES)
    request.config.pluginmanager.register(reporter, f"popproxy-postgres-log-{id(reporter)}")
    try:
        server.initialize()
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            request.config.pluginmanager.unregister(reporter)
            keep = tmp_path_factory.mktemp("postgres")
            if server.logPath.exists():
                shutil.copyfile(server.logPath, keep / server.logPath.name)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres(postgresServer: PostgresServer) -> PostgresDatabase:
    """
    A new empty database on the session's server (started again if a test stopped it).
    """
    if not postgresServer.started:
        postgresServer.start()
    name = f"test_{os.getpid()}_{next(_databases)}_{int(time.time())}"
    postgresServer.execute(f'CREATE DATABASE "{name}"')
    return PostgresDatabase(postgresServer, name)
