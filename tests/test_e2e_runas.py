"""
End-to-end tests of twistd's -u/-g with the quarantine, as administrators
run the daemon: `twistd --pidfile … --logfile … -u nobody -g nogroup
popproxy --config FILE`, started by root, on free loopback ports.

The quarantine is created for nobody and stripped attachments are kept
there by nobody; a quarantine nobody cannot write, or a configuration file
nobody cannot read when workers re-read it, stops start-up with one line;
worker processes run as nobody too.  Every test needs root (CI runs as
root) and fails, saying so, without it.
"""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.ports import waitForPort
from tests.peers.proxy import twistdCommand
from tests.test_twistd import (
    _daemonsUsing,
    _isRunning,
    _statusIds,
    portIsFree,
    writeShippedConfig,
)

#: The demo message whose .exe attachment the shipped chain strips.
EXE_MESSAGE = 7


class Nobody:
    """
    The user and group the daemon drops to.
    """

    def __init__(self) -> None:
        if os.geteuid() != 0:
            pytest.fail(
                "twistd -u/-g needs to be started as root: run these tests as root (CI does)"
            )
        self.uid = pwd.getpwnam("nobody").pw_uid
        self.gid = grp.getgrnam("nogroup").gr_gid

    def owns(self, path: Path) -> bool:
        info = path.stat()
        return (info.st_uid, info.st_gid) == (self.uid, self.gid)


@pytest.fixture
def nobody() -> Nobody:
    return Nobody()


@pytest.fixture
def directory(nobody: Nobody, request: pytest.FixtureRequest) -> Iterator[Path]:
    """
    A directory for the configuration, the quarantine and the daemon's pid
    file and log: reachable by nobody (pytest's tmp_path is not), with a
    subdirectory C{run/} owned by nobody as /run/popproxy would be.  At
    teardown any daemon still running is killed and its log printed if
    the test failed.
    """
    path = Path(tempfile.mkdtemp(prefix="popproxy-runas-e2e-"))
    path.chmod(0o755)
    (path / "run").mkdir()
    os.chown(path / "run", nobody.uid, nobody.gid)
    yield path
    for leftover in _daemonsUsing(path / "run" / "twistd.pid"):
        os.kill(leftover, signal.SIGKILL)
    report = getattr(request.node, "rep_call", None)
    log = path / "run" / "twistd.log"
    if report is not None and report.failed and log.exists():
        print(f"--- twistd log ---\n{log.read_text('utf-8', 'replace')}")
    shutil.rmtree(path, ignore_errors=True)


def startDaemon(
    directory: Path,
    config: Path,
    command: list[str] | None = None,
    environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """
    `twistd --pidfile run/twistd.pid --logfile run/twistd.log -u nobody -g
    nogroup popproxy --config CONFIG`; returns once twistd has daemonized
    (or failed to start), with what it printed.
    """
    run = directory / "run"
    return subprocess.run(
        [
            *(command or [twistdCommand()]),
            "--pidfile",
            str(run / "twistd.pid"),
            "--logfile",
            str(run / "twistd.log"),
            "-u",
            "nobody",
            "-g",
            "nogroup",
            "popproxy",
            "--config",
            str(config),
        ],
        cwd=directory,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def stopDaemon(directory: Path) -> str:
    """
    SIGTERM the daemon named in its pid file, wait (bounded) until it is
    gone and return its log.
    """
    pid = int((directory / "run" / "twistd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _isRunning(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _isRunning(pid)
    return (directory / "run" / "twistd.log").read_text("utf-8", "replace")


def retrieve(port: int, index: int) -> bytes:
    """
    Log in as the demo user through the proxy and RETR message C{index}
    (poplib raises on -ERR).
    """
    client = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        client.user("demo")
        client.pass_("demo")
        _, lines, _ = client.retr(index)
        client.quit()
    finally:
        client.close()
    return b"\r\n".join(lines)


def test_quarantineKeptByTheUnprivilegedUser(directory: Path, nobody: Nobody) -> None:
    """
    The issue's set-up: the shipped configuration, daemonized by root with
    -u nobody -g nogroup.  The quarantine is created owned by nobody, the
    .exe of the demo mailbox arrives replaced by the notice (no -ERR
    [SYS/TEMP]), its record and blob exist and belong to nobody, and the
    log has no traceback.
    """
    config, proxyPort, demoPort = writeShippedConfig(directory)
    result = startDaemon(directory, config)
    assert result.returncode == 0, result.stdout + result.stderr
    quarantine = directory / "quarantine"
    for created in (quarantine, quarantine / "blobs", quarantine / "records"):
        assert nobody.owns(created), created
    waitForPort("127.0.0.1", proxyPort, 10)
    waitForPort("127.0.0.1", demoPort, 10)

    message = retrieve(proxyPort, EXE_MESSAGE)
    assert b"Subject: [ATTACHMENT REMOVED] Overdue invoice" in message
    assert b"The attachment invoice.pdf.exe was removed by the mail gateway" in message
    assert b"TVqQ" not in message
    records = list((quarantine / "records").glob("*.json"))
    assert len(records) == 1
    assert records[0].stem.encode() in message.replace(b"=\r\n", b"")
    blobs = [path for path in (quarantine / "blobs").rglob("*") if path.is_file()]
    assert len(blobs) == 1 and b"TVqQ" in blobs[0].read_bytes()
    for kept in (records[0], blobs[0], blobs[0].parent):
        assert nobody.owns(kept), kept

    log = stopDaemon(directory)
    assert f"set uid/gid {nobody.uid}/{nobody.gid}" in log
    assert "Traceback" not in log and "PermissionError" not in log
    assert "the quarantine cannot keep" not in log


def test_unwritableQuarantineStopsStartUp(directory: Path, nobody: Nobody) -> None:
    """
    A quarantine directory that exists but nobody cannot write (root's,
    0700, as an earlier run as root left it) stops start-up: twistd exits
    non-zero printing exactly one line that names the directory, the user
    and the fix, with no traceback; nothing listens, no daemon is left,
    and the directory is not touched.
    """
    config, proxyPort, demoPort = writeShippedConfig(directory)
    quarantine = directory / "quarantine"
    quarantine.mkdir(mode=0o700)
    result = startDaemon(directory, config)
    printed = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in printed
    assert printed.splitlines() == [
        f"popproxy: {config}: [chain] quarantine: {quarantine}: user nobody:nogroup "
        f"(uid {nobody.uid}, gid {nobody.gid}) cannot write to it (Permission denied); "
        f"give it to that user (chown -R nobody:nogroup {quarantine}) or choose another directory"
    ]
    assert portIsFree(proxyPort) and portIsFree(demoPort)
    assert _daemonsUsing(directory / "run" / "twistd.pid") == []
    assert not (directory / "run" / "twistd.pid").exists()
    assert list(quarantine.iterdir()) == []
    assert (quarantine.stat().st_uid, quarantine.stat().st_mode & 0o777) == (0, 0o700)


def _canRun(nobody: Nobody, command: list[str], environment: dict[str, str]) -> bool:
    try:
        subprocess.run(
            [*command, "-c", "import popproxy, twisted"],
            env=environment,
            user=nobody.uid,
            group=nobody.gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def pythonForNobody(nobody: Nobody) -> tuple[list[str], dict[str, str]]:
    """
    A twistd command line whose Python nobody can run, with the
    environment it needs, so the workers (started with that Python) can
    start as nobody: this virtualenv's own twistd when nobody can run its
    interpreter, else the system's python3 of the same version with this
    virtualenv's packages on its path (a Python installed under /root, as
    pyenv does, cannot be run by nobody).
    """
    environment = dict(os.environ)
    if _canRun(nobody, [sys.executable], environment):
        return [twistdCommand()], environment
    environment["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    system = ["/usr/bin/python3"]
    if not _canRun(nobody, system, environment):
        pytest.fail(
            f"nobody can run neither {sys.executable} nor /usr/bin/python3 with this "
            "virtualenv's packages: put the checkout where nobody can read it"
        )
    return [*system, "-c", "from twisted.scripts.twistd import run; run()"], environment


def _workerPids(parent: int, deadline: float) -> list[int]:
    """
    The worker processes of the daemon C{parent}, once one is running.
    """
    while time.monotonic() < deadline:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                arguments = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                int(stat.rsplit(")", 1)[1].split()[1]) == parent
                and b"popproxy._workers" in arguments
            ):
                found.append(int(entry.name))
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no worker process of {parent} started")


def test_workersRunAsTheUnprivilegedUser(directory: Path, nobody: Nobody) -> None:
    """
    With [proxy] workers = 2 the worker process, started after the switch,
    runs as nobody like the main process, and mail with the stripped
    attachment arrives through the proxy (the quarantine is nobody's).
    """
    command, environment = pythonForNobody(nobody)
    config, proxyPort, demoPort = writeShippedConfig(directory)
    text = config.read_text("utf-8")
    config.write_text(text.replace("workers = 1", "workers = 2"), "utf-8")
    result = startDaemon(directory, config, command, environment)
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int((directory / "run" / "twistd.pid").read_text())
    workers = _workerPids(pid, time.monotonic() + 20)
    for process in (pid, *workers):
        assert _statusIds(process, "Uid") == [nobody.uid] * 4, process
        assert _statusIds(process, "Gid") == [nobody.gid] * 4, process
    waitForPort("127.0.0.1", proxyPort, 10)
    for _ in range(4):
        message = retrieve(proxyPort, EXE_MESSAGE)
        assert b"was removed by the mail gateway" in message
    log = stopDaemon(directory)
    assert "started worker 1" in log
    assert "Traceback" not in log and "ended (" not in log


def test_workersNeedToReadTheConfiguration(directory: Path, nobody: Nobody) -> None:
    """
    Workers re-read the configuration file as nobody: with workers = 2 and
    the file in a directory only root can enter, start-up stops with one
    line naming the file and the setting, instead of workers dying and
    restarting forever.
    """
    command, environment = pythonForNobody(nobody)
    config, proxyPort, demoPort = writeShippedConfig(directory)
    private = directory / "private"
    private.mkdir(mode=0o700)
    hidden = private / "twistd.conf"
    text = config.read_text("utf-8").replace("workers = 1", "workers = 2")
    text = text.replace('quarantine = "quarantine"', f'quarantine = "{directory / "quarantine"}"')
    hidden.write_text(text, "utf-8")
    result = startDaemon(directory, hidden, command, environment)
    printed = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in printed
    assert printed.splitlines() == [
        f"popproxy: {hidden}: [proxy] workers = 2: {hidden}: user nobody:nogroup "
        f"(uid {nobody.uid}, gid {nobody.gid}) cannot read it (Permission denied); "
        "every worker reads it; let nobody:nogroup read it, or set [proxy] workers = 1"
    ]
    assert portIsFree(proxyPort) and portIsFree(demoPort)
