"""
Tests for C{popproxy-console hash-password}: from a pipe it hashes one
line; on a terminal it asks twice without echoing and refuses two
different answers; short passwords are refused with exit status 2; with
C{--name} it prints the line to paste into C{[console.admins]}, which the
configuration accepts and which checks the password.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from popproxy._config import parseConfig
from popproxy.console._cli import main
from popproxy.console._passwordhash import parseHash

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fromAPipe() -> None:
    """
    Standard input that is not a terminal gives one line (its line ending
    is not part of the password); the hash printed matches it.
    """
    out = io.StringIO()
    assert main(["hash-password"], stdin=io.StringIO("s3cret-passw0rd\n"), stdout=out) == 0
    line = out.getvalue().strip()
    assert parseHash(line).matches("s3cret-passw0rd")
    assert "s3cret" not in line


def test_nameGivesAConfigLine() -> None:
    """
    With C{--name}, the output is a TOML line the C{[console.admins]}
    table takes as it is.
    """
    out = io.StringIO()
    main(["hash-password", "--name", "ops team"], stdin=io.StringIO("long-password\n"), stdout=out)
    config = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:110"\n[chain]\nquarantine = "/tmp/q"\n'
        '[console]\nlisten = "tcp:1"\n[console.admins]\n' + out.getvalue()
    )
    assert config.console is not None
    [(name, line)] = config.console.admins
    assert name == "ops team" and parseHash(line).matches("long-password")


def test_terminalAsksTwice() -> None:
    """
    On a terminal the password is asked twice; two different answers are
    refused (status 2) and nothing is printed.
    """
    asked: list[str] = []
    answers = iter(["first-password", "other-password"])

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    out = io.StringIO()
    assert main(["hash-password"], stdin=Terminal(), stdout=out, ask=ask) == 2
    assert asked == ["Password: ", "Again: "] and out.getvalue() == ""


def test_shortPasswordsAreRefused() -> None:
    """
    A password under 8 characters (an empty line too) is refused.
    """
    for given in ("short\n", "\n", ""):
        out = io.StringIO()
        assert main(["hash-password"], stdin=io.StringIO(given), stdout=out) == 2
        assert out.getvalue() == ""


def test_realTerminalDoesNotEcho() -> None:
    """
    Run as a program on a pseudo-terminal: it prompts, the typed password
    is not echoed back, and the hash line it prints matches the password.
    """
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "popproxy.console._cli", "hash-password"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    os.close(follower)
    seen = b""
    try:
        for password in (b"typed-on-a-tty\n", b"typed-on-a-tty\n"):
            seen += readUntil(leader, b": ", seen)
            os.write(leader, password)
        assert process.wait(timeout=30) == 0
        seen += readUntil(leader, b"\n", seen, after=seen.rfind(b"Again: "))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    text = seen.decode()
    assert "Password: " in text and "Again: " in text
    assert "typed-on-a-tty" not in text
    line = text.rsplit("Again: ", 1)[1].strip()
    assert parseHash(line).matches("typed-on-a-tty")


def readUntil(fd: int, end: bytes, before: bytes, after: int = -1, timeout: float = 20.0) -> bytes:
    """
    Read from C{fd} until what was read (after C{before}) ends with C{end}
    somewhere past C{after}.
    """
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
            if end in (before + got)[max(after, 0) :] and (before + got).rstrip(b" ").endswith(
                end.rstrip(b" ")
            ):
                return got
    return got
