"""
Tests for the `twistd popproxy` command as administrators run it: the
shipped twistd.conf, command-line flags without a file, broken files, the
help text, and daemon mode binding a privileged port and dropping to nobody.

Each test starts the installed package's twistd in a subprocess on loopback
ports and stops it (SIGTERM, then SIGKILL) before it ends.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from popproxy._config import loadConfig
from popproxy.demo import defaultMailboxPath
from tests.peers.dovecot import fetchMailbox
from tests.peers.ports import freePort, waitForPort
from tests.peers.proxy import startInOwnSession, stopGracefully, twistdCommand
from tests.peers.rawpop3 import RawPop3Server

SHIPPED = Path(__file__).parent.parent / "twistd.conf"

MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n",
    b"Subject: bare LF\r\n\r\nline\nsame line\r\n",
]

StartTwistd = Callable[..., "TwistdProcess"]


def _unavailable(reason: str) -> NoReturn:
    """
    Skip when this machine cannot run the test, but fail in CI, where a
    skip would hide it.
    """
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def runTwistd(
    arguments: list[str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd ARGUMENTS} to completion (bounded) and capture what it printed.
    """
    return subprocess.run(
        [twistdCommand(), *arguments],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TwistdProcess:
    """
    One foreground C{twistd -n --pidfile= ARGUMENTS} process, its log going
    to stdout and from there to a file.
    """

    def __init__(self, workdir: Path, arguments: list[str]) -> None:
        self.workdir = workdir
        self.arguments = arguments
        self.outputPath = workdir / "twistd.out"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, ports: list[int], timeout: float = 20.0) -> TwistdProcess:
        """
        Start twistd and return once every one of C{ports} accepts connections.
        """
        with self.outputPath.open("wb") as output:
            self._process = startInOwnSession(
                [twistdCommand(), "-n", "--pidfile=", *self.arguments],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"twistd exited at start-up:\n{self.output()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"twistd did not listen on {port}:\n{self.output()}")
                try:
                    waitForPort("127.0.0.1", port, 0.2)
                    break
                except TimeoutError:
                    pass
        return self

    def output(self) -> str:
        """
        Everything twistd printed so far (its log, with -n and no --logfile).
        """
        if not self.outputPath.exists():
            return ""
        return self.outputPath.read_text("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """
        SIGTERM, as an init system would; SIGKILL the group if it hangs.
        Return the exit code.
        """
        if self._process is None:
            return None
        return stopGracefully(self._process, timeout)


@pytest.fixture
def startTwistd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartTwistd]:
    """
    C{startTwistd(arguments, ports)} runs C{twistd -n --pidfile= ARGUMENTS}
    and waits for C{ports}; every process is stopped at teardown, its
    output printed if the test failed.
    """
    started: list[TwistdProcess] = []

    def start(arguments: list[str], ports: list[int]) -> TwistdProcess:
        workdir = tmp_path / f"twistd{len(started)}"
        workdir.mkdir()
        process = TwistdProcess(workdir, arguments)
        started.append(process)
        return process.start(ports)

    yield start
    report = getattr(request.node, "rep_call", None)
    for process in started:
        process.stop()
        if report is not None and report.failed:
            print(f"--- twistd output ({process.workdir}) ---\n{process.output()}")


def shippedConfigOn(proxyPort: int, demoPort: int) -> str:
    """
    The shipped twistd.conf with its proxy port (1110) and demo port (1100)
    replaced, so it can run beside anything else on this machine.
    """
    ports = {"1110": str(proxyPort), "1100": str(demoPort)}
    text = SHIPPED.read_text("utf-8")
    assert re.search(r"\b1110\b", text) and re.search(r"\b1100\b", text)
    return re.sub(r"\b(1110|1100)\b", lambda match: ports[match.group()], text)


def writeShippedConfig(directory: Path) -> tuple[Path, int, int]:
    """
    Write the shipped configuration on free ports into C{directory}; return
    its path, the proxy port and the demo port.
    """
    proxyPort, demoPort = freePort(), freePort()
    while demoPort == proxyPort:
        demoPort = freePort()
    path = directory / "twistd.conf"
    text = shippedConfigOn(proxyPort, demoPort)
    # Whatever runs on this machine, the shipped chain must meet no clamd
    # and no spamd here: a fresh machine has neither.
    assert 'address = "unix:/run/clamav/clamd.ctl"' in text
    assert 'spamd = "tcp:127.0.0.1:783"' in text
    text = text.replace("unix:/run/clamav/clamd.ctl", f"unix:{directory}/no-clamd.ctl")
    text = text.replace("tcp:127.0.0.1:783", f"tcp:127.0.0.1:{freePort()}")
    path.write_text(text, "utf-8")
    config = loadConfig(path)
    # Never run a test on the real ports of this machine.
    assert config.listen == (f"tcp:{proxyPort}:interface=127.0.0.1",)
    assert config.upstream == f"tcp:127.0.0.1:{demoPort}"
    assert config.demo is not None
    assert config.demo.listen == f"tcp:{demoPort}:interface=127.0.0.1"
    return path, proxyPort, demoPort


def freePrivilegedPort() -> int:
    """
    A loopback port below 1024 (600..1023) that nothing listens on now.
    """
    candidates = list(range(600, 1024))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free privileged port in 600..1023")


def portIsFree(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- the shipped configuration ----------------------------------------------------------


def test_shippedConfigServesDemoMailbox(tmp_path: Path, startTwistd: StartTwistd) -> None:
    """
    The shipped twistd.conf (only its ports changed) starts the demo
    upstream and the proxy with the default chain; offline, the demo's .exe
    is stripped and quarantined and every other message arrives intact below
    the headers the chain adds; curl gets message 1 as the file's comment
    says, SIGTERM shuts it down cleanly, and the log records the sessions
    without a PASS line.
    """
    path, proxyPort, demoPort = writeShippedConfig(tmp_path)
    curl = shutil.which("curl")
    assert curl is not None, "curl is a test peer and must be installed"
    proxy = startTwistd(["popproxy", "--config", str(path)], [proxyPort, demoPort])

    direct = fetchMailbox("127.0.0.1", demoPort, "demo", "demo")
    through = fetchMailbox("127.0.0.1", proxyPort, "demo", "demo")
    assert len(direct) == len(list(defaultMailboxPath().glob("*.eml"))) == len(through) > 0
    # The shipped chain works offline: the .exe is stripped (and kept in the
    # quarantine); every other message arrives byte for byte below header
    # lines the chain added (status, "unchecked" stamps).
    for original, filtered in zip(direct, through, strict=True):
        if b"invoice.pdf.exe" in original.data:
            assert b"TVqQ" in original.data and b"TVqQ" not in filtered.data
            assert b"Subject: [ATTACHMENT REMOVED] Overdue invoice" in filtered.data
            assert b"was removed by the mail gateway" in filtered.data
            continue
        assert filtered.data.endswith(original.data)
        added = filtered.data[: -len(original.data)].split(b"\r\n")[:-1]
        assert added and all(line.startswith((b"X-", b" ", b"\t")) for line in added), added
        assert b"X-Virus-Scanned: popproxy/clamd; unchecked" in filtered.data
    assert len(list((tmp_path / "quarantine" / "records").glob("*.json"))) == 1

    fetched = subprocess.run(
        [curl, "-s", "--max-time", "10", f"pop3://demo:demo@127.0.0.1:{proxyPort}/1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == through[0].data

    # twistd re-raises the signal that stopped it, so an init system sees
    # "killed by SIGTERM", which systemd counts as a clean stop.
    assert proxy.stop() == -signal.SIGTERM
    log = proxy.output()
    assert "Received SIGTERM, shutting down." in log
    assert "Server Shut Down." in log
    # The start-up port probe opened a session too; every session was closed.
    opened = re.findall(r"session (\d+) opened by 127\.0\.0\.1:\d+", log)
    assert opened == re.findall(r"session (\d+) closed: ", log)
    assert log.count(" closed: client quit; ") == 2, log
    assert log.count(f"demo logged in at tcp:127.0.0.1:{demoPort}") == 2, log
    assert "PASS" not in log
    assert "Traceback" not in log


def test_shippedConfigWithUpstreamFlag(
    tmp_path: Path, startTwistd: StartTwistd, rawPop3: Callable[..., RawPop3Server]
) -> None:
    """
    C{--upstream} on the command line overrides the shipped file's default
    upstream, as its comments suggest for a real provider: logins go to
    the given server, not to the demo, and the demo server it replaces is
    not started (the log says so).
    """
    server = rawPop3(MESSAGES, user="alice", password="secret")
    path, proxyPort, demoPort = writeShippedConfig(tmp_path)
    upstream = f"tcp:127.0.0.1:{server.port}"
    proxy = startTwistd(["popproxy", "--config", str(path), "--upstream", upstream], [proxyPort])
    through = fetchMailbox("127.0.0.1", proxyPort, "alice", "secret")
    assert portIsFree(demoPort)
    assert "_DemoServerFactory" not in proxy.output()
    assert f"[demo] server not started: --upstream {upstream} replaces" in proxy.output()
    # The shipped chain adds its header lines on top; the messages are the
    # given server's, intact below them.
    assert len(through) == len(MESSAGES)
    for message, original in zip(through, MESSAGES, strict=True):
        assert message.data.endswith(original)
        assert message.data.startswith(b"X-")


# --- no configuration file --------------------------------------------------------------


def test_noConfigFile(startTwistd: StartTwistd, rawPop3: Callable[..., RawPop3Server]) -> None:
    """
    With only C{--listen} and C{--upstream}, no file, the proxy relays the
    upstream's mailbox byte for byte.
    """
    server = rawPop3(MESSAGES, user="alice", password="secret")
    port = freePort()
    startTwistd(
        [
            "popproxy",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--upstream",
            f"tcp:127.0.0.1:{server.port}",
        ],
        [port],
    )
    through = fetchMailbox("127.0.0.1", port, "alice", "secret")
    assert [message.data for message in through] == MESSAGES
    assert through == fetchMailbox("127.0.0.1", server.port, "alice", "secret")
    assert server.commands.count(b"USER alice") == 2


def test_repeatedListen(startTwistd: StartTwistd, rawPop3: Callable[..., RawPop3Server]) -> None:
    """
    C{--listen} given twice opens both listeners (and only those, not the
    default 1110), and each relays mail.
    """
    server = rawPop3(MESSAGES, user="alice", password="secret")
    first, second = freePort(), freePort()
    while second == first:
        second = freePort()
    proxy = startTwistd(
        [
            "popproxy",
            "--listen",
            f"tcp:{first}:interface=127.0.0.1",
            "-l",
            f"tcp:{second}:interface=127.0.0.1",
            "--upstream",
            f"tcp:127.0.0.1:{server.port}",
        ],
        [first, second],
    )
    for port in (first, second):
        through = fetchMailbox("127.0.0.1", port, "alice", "secret")
        assert [message.data for message in through] == MESSAGES
    log = proxy.output()
    assert re.findall(r"SessionFactory starting on (\d+)", log) == [str(first), str(second)]


# --- broken configurations --------------------------------------------------------------

BROKEN = [
    pytest.param("[proxy]\nidle_timeout = 600\nlisten = [\n", ("not valid TOML",), id="syntax"),
    pytest.param(
        "[proxy]\nlisten_on = 'tcp:110'\n", ("[proxy] listen_on", "unknown key"), id="key"
    ),
    pytest.param("[prxy]\n", ("[prxy]", "unknown section"), id="section"),
    pytest.param(
        "[proxy]\nidle_timeout = 'ten minutes'\n[upstream]\ndefault = 'tcp:127.0.0.1:1'\n",
        ("[proxy] idle_timeout", "must be a number"),
        id="type",
    ),
    pytest.param(
        "[upstream]\ndefault = 'tcp:127.0.0.1:1'\nconnect_timeout = -3\n",
        ("[upstream] connect_timeout", "at least"),
        id="negative",
    ),
    pytest.param(
        "[proxy]\nlisten = ['tcp:pop3']\n[upstream]\ndefault = 'tcp:127.0.0.1:1'\n",
        ("[proxy] listen", "bad endpoint 'tcp:pop3'"),
        id="listen-endpoint",
    ),
    pytest.param(
        "[upstream]\ndefault = 'pop.example.com:110'\n",
        ("[upstream] default", "bad endpoint 'pop.example.com:110'"),
        id="upstream-endpoint",
    ),
    pytest.param("[proxy]\n", ("[upstream] default", "missing", "--upstream"), id="no-upstream"),
    pytest.param(
        "[user_host]\nenabled = true\n",
        ("[user_host] allowed", "no host is allowed"),
        id="user-host",
    ),
    pytest.param(
        "[upstream]\ndefault = 'tcp:127.0.0.1:1'\n[demo]\nmailbox = 'no-such-dir'\n",
        ("[demo] mailbox", "no-such-dir is not a directory"),
        id="demo-mailbox",
    ),
    pytest.param(None, ("cannot read", "No such file"), id="missing-file"),
    pytest.param(b"[demo]\nuser = '\xe9'\n", ("not UTF-8",), id="latin-1"),
]


@pytest.mark.parametrize("content, fragments", BROKEN)
def test_brokenConfigOneLine(
    tmp_path: Path, content: str | bytes | None, fragments: tuple[str, ...]
) -> None:
    """
    A broken configuration file stops `twistd -n popproxy --config FILE`
    promptly with a non-zero exit and exactly one line, starting with
    "popproxy: ", naming the file and the key; no traceback, nothing else.
    """
    path = tmp_path / "popproxy.conf"
    if isinstance(content, str):
        path.write_text(content, "utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = runTwistd(["-n", "--pidfile=", "popproxy", "--config", str(path)], tmp_path)
    printed = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in printed
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == 1, printed
    assert lines[0].startswith(f"popproxy: {path}: "), printed
    for fragment in fragments:
        assert fragment in lines[0], (fragment, printed)


def test_badListenFlag(tmp_path: Path) -> None:
    """
    A bad C{--listen} endpoint on the command line is reported in one line
    naming it, with no traceback.
    """
    result = runTwistd(
        ["-n", "--pidfile=", "popproxy", "--listen", "tcp:pop3", "--upstream", "tcp:127.0.0.1:1"],
        tmp_path,
    )
    printed = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in printed
    assert [line for line in printed.splitlines() if line.strip()] == [
        "popproxy: <command line>: --listen: bad endpoint 'tcp:pop3': "
        "invalid literal for int() with base 10: 'pop3'"
    ]


# --- usage ------------------------------------------------------------------------------


def test_help(tmp_path: Path) -> None:
    """
    `twistd popproxy --help` exits 0 and documents --config, --listen and
    --upstream.
    """
    result = runTwistd(["popproxy", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--config=", "--listen=", "--upstream="):
        assert option in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_neitherConfigNorUpstream(tmp_path: Path) -> None:
    """
    `twistd -n popproxy` with neither --config nor --upstream is a usage
    error that says what to give, not a traceback, and starts nothing.
    """
    result = runTwistd(["-n", "--pidfile=", "popproxy"], tmp_path)
    printed = result.stdout + result.stderr
    assert result.returncode != 0
    assert "give --config FILE or --upstream ENDPOINT" in printed
    assert "Traceback" not in printed


# --- daemon mode ------------------------------------------------------------------------


def _daemonsUsing(pidPath: Path) -> list[int]:
    """
    Pids of live processes whose command line names C{pidPath}: the daemon
    this test started, found even if it never wrote its pid file.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(pidPath).encode() in arguments and state != "Z":
            found.append(int(entry.name))
    return found


def _isRunning(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie holds no socket; the daemon's parent is init, which reaps it in its own time.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _statusIds(pid: int, field: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_daemonDropsPrivileges(rawPop3: Callable[..., RawPop3Server]) -> None:
    """
    Started by root as a daemon with -u nobody -g nogroup, twistd binds a
    privileged port, returns, writes its pid file, and then runs as nobody
    and relays mail; SIGTERM to the pid in the file stops it, removes the
    pid file and frees the port.
    """
    if os.geteuid() != 0:
        _unavailable("binding a privileged port and dropping privileges needs root")
    try:
        nobody = pwd.getpwnam("nobody")
        nogroup = grp.getgrnam("nogroup")
    except KeyError:
        _unavailable("no nobody user or nogroup group here")
    server = rawPop3(MESSAGES, user="alice", password="secret")
    # The pid file is written as root but removed at exit as nobody, and the
    # log is reopened there when it rotates: the directory is nobody's, like
    # /run/popproxy would be.  It is outside pytest's root-only tmp_path so
    # that nobody can reach it.
    directory = Path(tempfile.mkdtemp(prefix="popproxy-daemon-"))
    os.chown(directory, nobody.pw_uid, nogroup.gr_gid)
    pidPath = directory / "twistd.pid"
    logPath = directory / "twistd.log"
    port = freePrivilegedPort()
    try:
        result = runTwistd(
            [
                "--pidfile",
                str(pidPath),
                "--logfile",
                str(logPath),
                "-u",
                "nobody",
                "-g",
                "nogroup",
                "popproxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--upstream",
                f"tcp:127.0.0.1:{server.port}",
            ],
            directory,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert pidPath.exists(), logPath.read_text() if logPath.exists() else "no log"
        pid = int(pidPath.read_text())
        assert _isRunning(pid)
        assert _statusIds(pid, "Uid") == [nobody.pw_uid] * 4
        assert _statusIds(pid, "Gid") == [nogroup.gr_gid] * 4

        waitForPort("127.0.0.1", port, 10)
        through = fetchMailbox("127.0.0.1", port, "alice", "secret")
        assert [message.data for message in through] == MESSAGES

        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _isRunning(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _isRunning(pid)
        assert not pidPath.exists()
        assert portIsFree(port)
        log = logPath.read_text("utf-8", "replace")
        assert f"set uid/gid {nobody.pw_uid}/{nogroup.gr_gid}" in log
        assert "Server Shut Down." in log
        assert "Traceback" not in log and "PASS" not in log
    finally:
        for leftover in _daemonsUsing(pidPath):
            os.kill(leftover, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
