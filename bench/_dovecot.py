"""
A private Dovecot 2.3 POP3 server for the benchmark, with its mailboxes.

It runs from its own configuration file and directory (C{base_dir},
C{state_dir}, log, passwd-file, maildirs), listens on a loopback high port,
and is tuned so that it never limits the proxies in front of it: connection
limits far above the benchmark's session counts, login processes that serve
many clients each, no flag updates or fsyncs while messages are read.  Mail
is stored as Maildir files (LF line ends, which Dovecot serves as CRLF).
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench._corpus import Mailbox
from bench._process import LOOPBACK, ManagedProcess, freePort

#: The unprivileged system user owning the maildirs (Dovecot refuses uid 0).
MAIL_USER = "popproxybench"


class DovecotError(RuntimeError):
    """
    Dovecot could not be set up or started.
    """


@dataclass(frozen=True)
class Account:
    """
    A mailbox Dovecot serves, and the login that reaches it.
    """

    user: str
    password: str
    mailbox: Mailbox


def ensureMailUser(name: str = MAIL_USER) -> tuple[int, int]:
    """
    The uid and gid of system user C{name}, created (no home, no shell) if
    missing.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        command = [useradd, "--system", "--user-group", "--no-create-home"]
        command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise DovecotError(f"cannot create mail user {name}: {result.stderr}") from None
    if entry.pw_uid == 0:
        raise DovecotError(f"mail user {name} is root; Dovecot will not use it")
    return entry.pw_uid, entry.pw_gid


def buildDovecotConfig(
    directory: Path, port: int, mailUid: int, mailGid: int, sessions: int
) -> str:
    """
    The text of dovecot.conf for one private benchmark instance.

    @param sessions: the most concurrent POP3 sessions the benchmark opens;
        every limit is set above it.
    """
    base = str(directory)
    if not directory.is_absolute() or re.search(r'[\s"#{}<\\]', base):
        raise DovecotError(f"{base!r} cannot be written unquoted into dovecot.conf")
    limit = sessions + 200
    # Login processes in "high-performance mode" (service_count = 0) take
    # many clients each instead of one fork per login, so Dovecot's own
    # login cost stays small and equal for every target.  The auth-penalty
    # listener is closed: its brute-force delay would slow good logins too.
    return f"""\
# Written by popproxy's benchmark (bench/_dovecot.py); not for production.
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = pop3
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login apop
auth_failure_delay = 0
mail_max_userip_connections = {limit}
default_process_limit = {limit}
default_client_limit = {limit * 4}
default_vsz_limit = 1G
mail_uid = {mailUid}
mail_gid = {mailGid}
first_valid_uid = {mailUid}
last_valid_uid = {mailUid}
mail_location = maildir:~/Maildir
mail_fsync = never
pop3_no_flag_updates = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {base}/passwd
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = {limit}
}}
service pop3 {{
  process_limit = {limit}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


class DovecotServer:
    """
    One private Dovecot, its accounts and its directory (removed on L{stop}).

    @param sessions: the most concurrent sessions the benchmark will open.
    """

    def __init__(self, mailboxes: Iterable[Mailbox], sessions: int) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-dovecot-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.directory.chmod(0o711)
        self.sessions = sessions
        self.port = 0
        #: One account per mailbox, by mailbox name; user "bench<name>".
        self.accounts = {
            mailbox.name: Account(f"bench{mailbox.name}", secrets.token_hex(8), mailbox)
            for mailbox in mailboxes
        }
        self._process: ManagedProcess | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 20.0) -> None:
        """
        Write the maildirs and the configuration, start Dovecot and return
        once it greets.
        """
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise DovecotError("dovecot is not installed (Debian: dovecot-core dovecot-pop3d)")
        if os.geteuid() != 0:
            raise DovecotError("the benchmark's Dovecot needs root, to run mail as a mail user")
        uid, gid = ensureMailUser()
        for name in ("run", "state"):
            (self.directory / name).mkdir()
        entries = []
        for account in self.accounts.values():
            home = self.directory / "home" / account.user
            self._writeMaildir(home / "Maildir", account.mailbox, uid, gid)
            entries.append(f"{account.user}:{{PLAIN}}{account.password}::::{home}::\n")
        passwd = self.directory / "passwd"
        passwd.write_text("".join(entries))
        passwd.chmod(0o644)
        self.port = freePort()
        config = self.directory / "dovecot.conf"
        config.write_text(buildDovecotConfig(self.directory, self.port, uid, gid, self.sessions))
        self._process = ManagedProcess(
            "dovecot",
            [binary, "-F", "-c", str(config)],
            cwd=self.directory,
            logPath=self.directory / "dovecot.out",
        )
        self._process.start()
        self._waitForGreeting(timeout)

    @staticmethod
    def _writeMaildir(maildir: Path, mailbox: Mailbox, uid: int, gid: int) -> None:
        """
        Store the messages in C{cur/} as already-seen Maildir files, named so
        that Dovecot numbers them in list order.
        """
        for path in (maildir.parent.parent, maildir.parent, maildir):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, uid, gid)
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(mode=0o700)
            os.chown(maildir / sub, uid, gid)
        start = 1_790_000_000
        for number, message in enumerate(mailbox.messages):
            stored = message.replace(b"\r\n", b"\n")
            name = f"{start + number}.M{number}P1.bench,S={len(stored)},W={len(message)}:2,S"
            path = maildir / "cur" / name
            path.write_bytes(stored)
            os.chown(path, uid, gid)
            os.utime(path, (start + number, start + number))

    def _waitForGreeting(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self._process.running:
                raise DovecotError(f"dovecot exited:\n{self.log()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=2.0) as probe:
                    if probe.recv(512).startswith(b"+OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DovecotError(f"dovecot did not greet within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        parts = []
        for name in ("dovecot.out", "dovecot.log"):
            try:
                text = (self.directory / name).read_text("utf-8", "replace")
            except FileNotFoundError:
                continue
            parts.append("\n".join(text.splitlines()[-30:]))
        return "\n".join(parts)

    def errors(self) -> list[str]:
        """
        Error and fatal lines from Dovecot's log, for the report.
        """
        try:
            text = (self.directory / "dovecot.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if "Error:" in line or "Fatal:" in line]

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)
