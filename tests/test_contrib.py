"""
The service files under contrib/, tried the way an administrator's system
uses them: the systemd units pass C{systemd-analyze verify} without a
word; the unit's own C{ExecStart} command runs under
C{systemd-socket-activate} with the socket unit's descriptor name and
relays a real POP3 session through the socket systemd bound; a listener
naming a socket systemd did not pass stops start-up with one line; the
unit's way of binding a port below 1024 as an unprivileged user (an
ambient CAP_NET_BIND_SERVICE) works; and both log rotations that
docs/operations.md advises keep every line: logrotate's copytruncate on
output opened for appending (systemd's C{StandardOutput=append:}), and
twistd's own C{--logfile} rotation on SIGUSR1.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from popproxy._admission import sessionsForDescriptors
from tests.peers.daemons import readText, unavailable
from tests.peers.dovecot import fetchMailbox
from tests.peers.ports import freePort, waitForPort
from tests.peers.proxy import startInOwnSession, stopGracefully, twistdCommand
from tests.peers.rawpop3 import RawPop3Server

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
SERVICE = CONTRIB / "systemd" / "popproxy.service"
SOCKET = CONTRIB / "systemd" / "popproxy.socket"
LOGROTATE = CONTRIB / "logrotate" / "popproxy"
#: Where the unit expects the virtualenv and the configuration.
INSTALLED_TWISTD = "/opt/popproxy/bin/twistd"
INSTALLED_CONFIG = "/etc/popproxy/twistd.conf"

MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n",
]


def tool(name: str) -> str:
    """
    A system tool the tests need (systemd's, util-linux's, logrotate).
    """
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found is None:
        unavailable(f"{name} is not installed")
    return found


def unitValues(path: Path, key: str) -> list[str]:
    """
    The values of C{key=} lines in a unit file.
    """
    prefix = key + "="
    return [
        line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)
    ]


def serviceCommand(config: Path) -> list[str]:
    """
    The unit's C{ExecStart} command, with the twistd of the Python running
    the tests and C{config} in place of the installed paths.
    """
    [execStart] = unitValues(SERVICE, "ExecStart")
    command = shlex.split(execStart)
    assert command[0] == INSTALLED_TWISTD
    assert command[command.index("--config") + 1] == INSTALLED_CONFIG
    command[0] = twistdCommand()
    command[command.index("--config") + 1] = str(config)
    return command


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """
    Processes a test starts (each in its own session); stopped at teardown.
    """
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stopGracefully(process)


def start(
    command: list[str], output: Path, started: list[subprocess.Popen[bytes]], **options: object
) -> subprocess.Popen[bytes]:
    """
    Start C{command} with its output appended to C{output} (opened
    O_APPEND, as systemd's C{StandardOutput=append:} opens it).
    """
    with output.open("ab") as sink:
        process = startInOwnSession(
            command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, **options
        )
    started.append(process)
    return process


def waitFor(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- systemd ----------------------------------------------------------------------------


def test_unitsVerify(tmp_path: Path) -> None:
    """
    C{systemd-analyze verify} finds nothing to say about the service and
    socket units (an unknown key would only be a warning, so the test wants
    silence, not just status 0); only the virtualenv's path is changed to
    one that exists here.
    """
    analyze = tool("systemd-analyze")
    units = tmp_path / "units"
    units.mkdir()
    text = SERVICE.read_text().replace(INSTALLED_TWISTD, twistdCommand())
    (units / SERVICE.name).write_text(text)
    shutil.copy(SOCKET, units / SOCKET.name)
    done = subprocess.run(
        [analyze, "verify", str(units / SERVICE.name), str(units / SOCKET.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert unitValues(SERVICE, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert unitValues(SERVICE, "KillSignal") == ["SIGTERM"]
    assert unitValues(SERVICE, "User") == unitValues(SERVICE, "Group") == ["popproxy"]
    assert unitValues(SOCKET, "FileDescriptorName") == ["pop3"]
    # The descriptor limit the session limit is derived from: 13,094
    # sessions per process rather than systemd's default 1024's 192.
    [files] = unitValues(SERVICE, "LimitNOFILE")
    assert sessionsForDescriptors(int(files)) == 13094


@pytest.mark.parametrize("listen", ["systemd:domain=INET:index=0", "systemd:domain=INET:name=pop3"])
def test_socketActivation(
    listen: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    rawPop3: Callable[..., RawPop3Server],
) -> None:
    """
    systemd-socket-activate binds the port, as popproxy.socket makes systemd
    do, and starts the unit's command at the first connection; the proxy
    adopts the socket (by index or by the socket unit's name) and that
    first client, and a second one, fetch every message byte for byte;
    SIGTERM then stops it cleanly.
    """
    activate = tool("systemd-socket-activate")
    server = rawPop3(MESSAGES, user="alice", password="secret")
    config = tmp_path / "twistd.conf"
    config.write_text(
        f'[proxy]\nlisten = ["{listen}"]\n[upstream]\ndefault = "tcp:127.0.0.1:{server.port}"\n'
    )
    port = freePort()
    [name] = unitValues(SOCKET, "FileDescriptorName")
    output = tmp_path / "output"
    proxy = start(
        [activate, f"--fdname={name}", "-l", f"127.0.0.1:{port}", *serviceCommand(config)],
        output,
        processes,
        cwd=tmp_path,
    )
    waitForPort("127.0.0.1", port, 10)
    try:
        for _ in range(2):
            through = fetchMailbox("127.0.0.1", port, "alice", "secret", timeout=20)
            assert [message.data for message in through] == MESSAGES
    except Exception:
        print(readText(output))
        raise
    assert stopGracefully(proxy) in (0, -signal.SIGTERM)
    log = readText(output)
    assert f"Execing {twistdCommand()}" in log
    assert log.count(" closed: client quit; ") == 2, log
    assert "Traceback" not in log


def test_socketNotPassed(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """
    A systemd: listener when systemd passed no such socket (here: socket
    activation without a descriptor name, which Twisted ignores) stops
    start-up with one line naming the listener and what to do, status 1.
    """
    activate = tool("systemd-socket-activate")
    config = tmp_path / "twistd.conf"
    config.write_text(
        '[proxy]\nlisten = ["systemd:domain=INET:index=0"]\n'
        '[upstream]\ndefault = "tcp:127.0.0.1:1"\n'
    )
    port = freePort()
    output = tmp_path / "output"
    proxy = start([activate, "-l", f"127.0.0.1:{port}", *serviceCommand(config)], output, processes)
    waitForPort("127.0.0.1", port, 10)
    assert proxy.wait(30) == 1
    lines = [line for line in readText(output).splitlines() if line.startswith("popproxy:")]
    assert lines == [
        f"popproxy: {config}: [proxy] listen: 'systemd:domain=INET:index=0': systemd passed "
        f"no such socket (run it from a socket unit; systemd-socket-activate needs --fdname)"
    ]
    assert "Traceback" not in readText(output)


def test_ambientCapabilityBindsPort110StyleAsNobody(
    processes: list[subprocess.Popen[bytes]], rawPop3: Callable[..., RawPop3Server]
) -> None:
    """
    The unit's AmbientCapabilities=CAP_NET_BIND_SERVICE way: started as
    nobody with only that capability (setpriv does what systemd does), the
    proxy binds a port below 1024 and relays mail, running as nobody all
    along.
    """
    if os.geteuid() != 0:
        unavailable("starting a process as nobody with a capability needs root")
    setpriv = tool("setpriv")
    assert unitValues(SERVICE, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    server = rawPop3(MESSAGES, user="alice", password="secret")
    port = next(p for p in range(640, 1024) if _free(p))
    directory = Path(tempfile.mkdtemp(prefix="popproxy-caps-"))
    directory.chmod(0o755)
    try:
        proxy = start(
            [
                setpriv,
                f"--reuid={nobody.pw_uid}",
                f"--regid={nogroup.gr_gid}",
                "--clear-groups",
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
                "--bounding-set=-all,+net_bind_service",
                twistdCommand(),
                "--nodaemon",
                "--pidfile=",
                "popproxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--upstream",
                f"tcp:127.0.0.1:{server.port}",
            ],
            directory / "output",
            processes,
            cwd=directory,
        )
        try:
            waitForPort("127.0.0.1", port, 20)
        except TimeoutError:
            raise AssertionError(readText(directory / "output")) from None
        through = fetchMailbox("127.0.0.1", port, "alice", "secret")
        assert [message.data for message in through] == MESSAGES
        status = Path(f"/proc/{proxy.pid}/status").read_text()
        assert f"Uid:\t{nobody.pw_uid}\t{nobody.pw_uid}" in status
    finally:
        for process in processes:
            stopGracefully(process)
        shutil.rmtree(directory, ignore_errors=True)


def _free(port: int) -> bool:
    """
    Whether nothing listens on loopback C{port} now.
    """
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- log rotation -----------------------------------------------------------------------


def startProxy(
    tmp_path: Path,
    server: RawPop3Server,
    output: Path,
    processes: list[subprocess.Popen[bytes]],
    twistdOptions: tuple[str, ...] = (),
) -> int:
    """
    Run the unit's command on a free port in front of C{server}, its output
    appended to C{output}, with C{twistdOptions} before the plugin name;
    return the port once it listens.
    """
    port = freePort()
    config = tmp_path / "twistd.conf"
    config.write_text(
        f'[proxy]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[upstream]\ndefault = "tcp:127.0.0.1:{server.port}"\n'
    )
    command = serviceCommand(config)
    plugin = command.index("popproxy")
    command[plugin:plugin] = twistdOptions
    start(command, output, processes, cwd=tmp_path)
    waitForPort("127.0.0.1", port, 20)
    return port


def session(port: int, log: Path, count: int) -> None:
    """
    Fetch the mailbox through the proxy and wait until the log holds
    C{count} logins in all.
    """
    assert len(fetchMailbox("127.0.0.1", port, "alice", "secret")) == len(MESSAGES)

    def logged() -> bool:
        text = "".join(readText(path) for path in log.parent.glob(log.name + "*"))
        return text.count("alice logged in") == count

    waitFor(logged, f"{count} logins in {log}")


def test_logrotateCopytruncate(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], rawPop3: Callable[..., RawPop3Server]
) -> None:
    """
    With the log written to a file opened for appending (what
    StandardOutput=append: does), contrib/logrotate/popproxy moves the
    lines so far to popproxy.log.1 and the proxy's next lines start the
    emptied file: nothing lost, nothing twice, no NUL padding.
    """
    logrotate = tool("logrotate")
    server = rawPop3(MESSAGES, user="alice", password="secret")
    log = tmp_path / "log" / "popproxy.log"
    log.parent.mkdir()
    port = startProxy(tmp_path, server, log, processes)
    session(port, log, 1)
    rules = tmp_path / "logrotate.conf"
    rules.write_text(LOGROTATE.read_text().replace("/var/log/popproxy/popproxy.log", str(log)))
    done = subprocess.run(
        [logrotate, "--force", "--state", str(tmp_path / "state"), str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    rotated = log.with_name("popproxy.log.1")
    assert rotated.read_text().count("alice logged in") == 1
    session(port, log, 2)
    current = log.read_bytes()
    assert b"\0" not in current
    assert current.count(b"alice logged in") == 1
    assert current.startswith(b"20")  # a log line's date, not padding


def test_twistdLogfileRotatesOnSigusr1(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], rawPop3: Callable[..., RawPop3Server]
) -> None:
    """
    With twistd's own --logfile, SIGUSR1 makes twistd move the file to
    popproxy.log.1 and start a new one: the lines before are there, the
    lines after in the new file.
    """
    server = rawPop3(MESSAGES, user="alice", password="secret")
    log = tmp_path / "log" / "popproxy.log"
    log.parent.mkdir()
    port = startProxy(tmp_path, server, tmp_path / "output", processes, ("--logfile", str(log)))
    session(port, log, 1)
    processes[0].send_signal(signal.SIGUSR1)
    rotated = log.with_name("popproxy.log.1")
    waitFor(rotated.exists, "popproxy.log.1")
    session(port, log, 2)
    assert rotated.read_text().count("alice logged in") == 1
    assert log.read_text().count("alice logged in") == 1
