"""Run private Dovecot 2.3 POP3 servers (plain, or with STLS and POP3S), one mailbox per test."""

from __future__ import annotations

import atexit
import base64
import hashlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

from tests.peers.certs import GeneratedCertificates, ServerCertificate, TlsMode
from tests.peers.daemons import (
    liveGroupMembers,
    logSince,
    logSize,
    readText,
    terminateWithParent,
    unavailable,
)
from tests.peers.ports import freePort

__all__ = [
    "dovecot",
    "dovecotClientAddressServer",
    "dovecotServer",
    "dovecotTls",
    "dovecotTlsServer",
    "dovecotWithCertificate",
]

MAIL_USER = "popproxytest"
"""The unprivileged system user that owns every test maildir (Dovecot refuses uid 0)."""

_LOG_TAIL_LINES = 200


class DovecotStartError(RuntimeError):
    """Dovecot could not be started; the message carries its output and log."""


class Pop3ProtocolError(Exception):
    """A POP3 server broke the protocol in a way the raw client refuses to go along with."""


class Pop3ErrorResponse(Exception):
    """A POP3 server answered a command with something other than C{+OK}."""

    def __init__(self, verb: bytes, status: bytes) -> None:
        # Only the verb is kept: the arguments of PASS or APOP must not reach a test report.
        super().__init__(f"{verb.decode('ascii', 'backslashreplace')} -> {status!r}")
        self.verb = verb
        self.status = status


def _checkPath(path: Path) -> str:
    """Return C{path} as text for dovecot.conf, refusing characters its syntax cannot hold."""
    text = str(path)
    if not path.is_absolute() or re.search(r'[\s"#{}<\\]', text):
        raise ValueError(f"path {text!r} cannot be written unquoted into dovecot.conf")
    return text


def buildDovecotConfig(
    *,
    directory: Path,
    host: str,
    port: int,
    mailUid: int,
    mailGid: int,
    certificate: Path | None = None,
    privateKey: Path | None = None,
    pop3sPort: int | None = None,
    haproxyPort: int | None = None,
    haproxyPop3sPort: int | None = None,
    settings: str = "",
) -> str:
    """
    Return the text of a self-contained dovecot.conf for one private POP3 test instance.

    Everything Dovecot writes lives under C{directory}: C{run/} (base_dir), C{state/},
    C{dovecot.log}, one passwd-file per user in C{passwd/} and the homes in C{home/}.

    @param certificate: a PEM certificate (chain) file; with C{privateKey} it turns on
        C{ssl = yes}, which makes the plain listener offer STLS.
    @param pop3sPort: with a certificate, also listen for implicit-TLS POP3 on this port.
    @param haproxyPort: also listen on this port with C{haproxy = yes} (every connection
        must start with a PROXY header; set C{haproxy_trusted_networks} in C{settings}).
    @param haproxyPop3sPort: the same for implicit TLS (the header precedes the handshake).
    @param settings: more global settings, one per line (e.g. C{login_trusted_networks}).
    """
    if (certificate is None) != (privateKey is None):
        raise ValueError("certificate and privateKey go together")
    if pop3sPort is not None and certificate is None:
        raise ValueError("pop3sPort needs a certificate")
    base = _checkPath(directory)
    if certificate is not None and privateKey is not None:
        tls = (
            f"ssl = yes\n"
            f"ssl_cert = <{_checkPath(certificate)}\n"
            f"ssl_key = <{_checkPath(privateKey)}\n"
        )
    else:
        tls = "ssl = no\n"
    pop3s = ""
    if pop3sPort is not None:
        pop3s = f"  inet_listener pop3s {{\n    port = {pop3sPort}\n    ssl = yes\n  }}\n"
    if haproxyPort is not None:
        pop3s += (
            f"  inet_listener pop3proxied {{\n    port = {haproxyPort}\n    haproxy = yes\n  }}\n"
        )
    if haproxyPop3sPort is not None:
        pop3s += (
            f"  inet_listener pop3sproxied {{\n    port = {haproxyPop3sPort}\n"
            f"    ssl = yes\n    haproxy = yes\n  }}\n"
        )
    # Users live in one passwd-file each (passwd/%u): Dovecot re-reads a changed
    # passwd-file at most once a second, but opens a file it has not seen yet on the
    # first lookup, so a user created a moment ago can log in at once.
    # The anvil-auth-penalty listener is closed (mode 0) because Dovecot's brute-force
    # penalty delays every login from 127.0.0.1, good ones too, by 2 s up to 15 s after
    # a failed one; auth may log one harmless error about the closed socket.
    return f"""\
# Written by popproxy's test suite for one private Dovecot instance; not for production.
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = pop3
listen = {host}
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login apop
auth_failure_delay = 0
auth_verbose = yes
mail_max_userip_connections = 1000
default_process_limit = 1000
default_client_limit = 4000
mail_uid = {mailUid}
mail_gid = {mailGid}
first_valid_uid = {mailUid}
last_valid_uid = {mailUid}
mail_location = maildir:~/Maildir
{settings}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/passwd/%u
}}
userdb {{
  driver = passwd-file
  args = {base}/passwd/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
{pop3s}}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def ensureMailUser(name: str = MAIL_USER) -> tuple[int, int]:
    """
    Return the uid and gid of system user C{name}, creating it (no home, no shell) if missing.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        command = [useradd, "--system", "--user-group", "--no-create-home"]
        command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        try:
            # Another pytest process may have created it in the meantime: look again.
            entry = pwd.getpwnam(name)
        except KeyError:
            raise DovecotStartError(f"cannot create mail user {name}: {result.stderr}") from None
    if entry.pw_uid == 0:
        raise DovecotStartError(f"mail user {name} is root; Dovecot will not use it")
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class ServedMessage:
    """One message as a POP3 server served it: its number, its LIST size and its RETR bytes."""

    number: int
    listSize: int
    data: bytes


class RawPop3Client:
    """
    A blocking POP3 client on a raw socket that keeps every byte the server sent.

    Unlike poplib it does not split on bare LF or strip line endings: a multi-line
    response comes back exactly as sent, minus dot-stuffing and the final C{.} line.
    Every response must arrive within C{timeout} seconds.

    With a C{tlsContext} it speaks implicit TLS (POP3S) from the first byte, verifying the
    certificate for C{serverHostname} (default: C{host}) as the context says; L{stls}
    upgrades a plain connection instead. L{clientTlsContext} makes a suitable context.
    C{sourceAddress} binds the client's side (e.g. another loopback address) and
    C{preface} is sent before anything else (a PROXY header).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        tlsContext: ssl.SSLContext | None = None,
        serverHostname: str | None = None,
        sourceAddress: str | None = None,
        preface: bytes = b"",
    ) -> None:
        self.timeout = timeout
        self._socket: socket.socket = socket.create_connection(
            (host, port),
            timeout=timeout,
            source_address=None if sourceAddress is None else (sourceAddress, 0),
        )
        self._buffer = bytearray()
        self._offset = 0
        try:
            if preface:
                self._socket.sendall(preface)
            if tlsContext is not None:
                self._socket = tlsContext.wrap_socket(
                    self._socket, server_hostname=serverHostname or host
                )
            self.greeting = self.readLine()
        except BaseException:
            self._socket.close()
            raise

    def __enter__(self) -> RawPop3Client:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection without QUIT (the server then deletes nothing)."""
        self._socket.close()

    def localPort(self) -> int:
        """The client's own port (how a server's log names this connection)."""
        port: int = self._socket.getsockname()[1]
        return port

    def _receiveMore(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete POP3 response within {self.timeout}s")
        self._socket.settimeout(remaining)
        chunk = self._socket.recv(65536)
        if not chunk:
            raise ConnectionError("the POP3 server closed the connection mid-response")
        self._buffer += chunk

    def _readLine(self, deadline: float) -> bytes:
        if self._offset > 65536:
            # Drop the lines already returned, now and then rather than after every line.
            del self._buffer[: self._offset]
            self._offset = 0
        searchFrom = self._offset
        while (end := self._buffer.find(b"\r\n", searchFrom)) < 0:
            searchFrom = max(len(self._buffer) - 1, self._offset)
            self._receiveMore(deadline)
        line = bytes(self._buffer[self._offset : end + 2])
        self._offset = end + 2
        return line

    def readLine(self) -> bytes:
        """Return the next line the server sent, with its CRLF."""
        return self._readLine(time.monotonic() + self.timeout)

    def sendLine(self, line: bytes) -> None:
        """Send C{line} followed by CRLF."""
        self._socket.sendall(line + b"\r\n")

    def command(self, line: bytes) -> bytes:
        """Send a command and return its status line without CRLF, C{+OK} or not."""
        self.sendLine(line)
        return self.readLine()[:-2]

    def okCommand(self, line: bytes) -> bytes:
        """
        Send a command and return its C{+OK} status line without CRLF.

        @raise Pop3ErrorResponse: if the server did not answer C{+OK}.
        """
        status = self.command(line)
        if not status.startswith(b"+OK"):
            raise Pop3ErrorResponse(line.split(b" ", 1)[0], status)
        return status

    def sendLines(self, lines: Sequence[bytes]) -> None:
        """Send C{lines}, each followed by CRLF, in one write (pipelining)."""
        self._socket.sendall(b"".join(line + b"\r\n" for line in lines))

    def readMultiline(self, command: bytes) -> list[bytes]:
        """
        Read the answer to C{command}, sent before, like L{multiline}.

        @raise Pop3ErrorResponse: if the server did not answer C{+OK}.
        """
        status = self.readLine()[:-2]
        if not status.startswith(b"+OK"):
            raise Pop3ErrorResponse(command.split(b" ", 1)[0], status)
        return self._readBody()

    def multiline(self, line: bytes) -> list[bytes]:
        """
        Send a command with a multi-line answer and return the lines after the status line.

        Each line keeps its CRLF and loses one leading dot if it had one; the
        terminating C{.} line is not included.
        """
        self.okCommand(line)
        return self._readBody()

    def _readBody(self) -> list[bytes]:
        deadline = time.monotonic() + self.timeout
        lines: list[bytes] = []
        while (received := self._readLine(deadline)) != b".\r\n":
            lines.append(received[1:] if received.startswith(b".") else received)
        return lines

    def login(self, user: str, password: str) -> None:
        """Log in with USER and PASS."""
        self.okCommand(b"USER " + user.encode("utf-8"))
        self.okCommand(b"PASS " + password.encode("utf-8"))

    def apop(self, user: str, password: str) -> None:
        """Log in with APOP, using the timestamp of the greeting."""
        match = re.search(rb"<[^<>]*>", self.greeting)
        if match is None:
            raise ValueError(f"greeting has no APOP timestamp: {self.greeting!r}")
        digest = hashlib.md5(match.group() + password.encode("utf-8"), usedforsecurity=False)
        self.okCommand(b"APOP " + user.encode("utf-8") + b" " + digest.hexdigest().encode())

    def listSizes(self) -> list[tuple[int, int]]:
        """Return (number, size) for every message, from LIST."""
        sizes = []
        for entry in self.multiline(b"LIST"):
            number, size = entry.split()[:2]
            sizes.append((int(number), int(size)))
        return sizes

    def uidls(self) -> list[tuple[int, bytes]]:
        """Return (number, unique id) for every message, from UIDL."""
        ids = []
        for entry in self.multiline(b"UIDL"):
            number, uid = entry.split()[:2]
            ids.append((int(number), uid))
        return ids

    def retrieve(self, number: int) -> bytes:
        """Return message C{number} from RETR, byte for byte after dot-unstuffing."""
        return b"".join(self.multiline(b"RETR %d" % number))

    def quit(self) -> bytes:
        """Send QUIT (deleting the messages marked with DELE) and return its status line."""
        return self.okCommand(b"QUIT")

    def capabilities(self) -> list[bytes]:
        """Return the lines of the CAPA response, without CRLF (e.g. C{b"SASL PLAIN LOGIN"})."""
        return [line[:-2] for line in self.multiline(b"CAPA")]

    def authPlain(self, user: str, password: str, *, initialResponse: bool = True) -> None:
        """
        Log in with SASL C{AUTH PLAIN} (RFC 5034), with an empty authorization identity.

        With C{initialResponse} the credentials go on the AUTH line itself; without it
        they follow the server's C{+ } continuation, as some clients do.
        """
        credentials = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        encoded = base64.b64encode(credentials)
        if initialResponse:
            self.okCommand(b"AUTH PLAIN " + encoded)
            return
        challenge = self.command(b"AUTH PLAIN")
        if not challenge.startswith(b"+"):
            raise Pop3ErrorResponse(b"AUTH", challenge)
        self.okCommand(encoded)

    def stls(self, context: ssl.SSLContext, hostname: str) -> bytes:
        """
        Send STLS and, after its C{+OK}, make the connection TLS; return the status line.

        The certificate is verified for C{hostname} as C{context} says (a failure raises
        L{ssl.SSLError}, usually L{ssl.SSLCertVerificationError}). Per RFC 2595 the
        client forgets what it learned before (ask L{capabilities} again).

        @raise Pop3ProtocolError: if the server sent anything after the C{+OK} before the
            handshake: such bytes would be taken as coming from inside TLS by a careless
            client (the response side of CVE-2011-0411), so none is accepted here.
        """
        status = self.okCommand(b"STLS")
        if len(self._buffer) > self._offset:
            raise Pop3ProtocolError(
                f"server sent {bytes(self._buffer[self._offset :])!r} after STLS +OK"
            )
        self._buffer.clear()
        self._offset = 0
        self._socket.settimeout(self.timeout)
        self._socket = context.wrap_socket(self._socket, server_hostname=hostname)
        return status

    def tlsVersion(self) -> str | None:
        """
        The negotiated TLS version (e.g. C{"TLSv1.3"}), or None on a plain
        connection.  A method, not a property: STLS changes it, and mypy
        would keep an earlier C{is None} check's narrowing of a property.
        """
        if isinstance(self._socket, ssl.SSLSocket):
            return self._socket.version()
        return None

    def peerCertificate(self) -> bytes | None:
        """The server's certificate (DER) on a TLS connection, else None."""
        if isinstance(self._socket, ssl.SSLSocket):
            return self._socket.getpeercert(binary_form=True)
        return None


def fetchMailbox(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    timeout: float = 10.0,
    tls: TlsMode | None = None,
    tlsContext: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
) -> list[ServedMessage]:
    """
    Log in with USER/PASS, LIST, RETR every message, QUIT, and return what was served.

    Works against any POP3 server, the proxy included: compare its result with the
    result against the upstream to prove that bytes went through unchanged.

    @param tls: None for plain TCP; C{"implicit"} when C{port} speaks POP3S;
        C{"starttls"} to upgrade with STLS before logging in. Both need C{tlsContext};
        the certificate is verified for C{serverHostname} (default: C{host}).
    """
    if tls not in (None, "implicit", "starttls"):
        raise ValueError(f"unknown TLS mode {tls!r}")
    if (tls is None) != (tlsContext is None):
        raise ValueError("tls and tlsContext go together")
    with RawPop3Client(
        host,
        port,
        timeout=timeout,
        tlsContext=tlsContext if tls == "implicit" else None,
        serverHostname=serverHostname,
    ) as client:
        if tls == "starttls":
            assert tlsContext is not None
            client.stls(tlsContext, serverHostname or host)
        client.login(user, password)
        messages = [
            ServedMessage(number, size, client.retrieve(number))
            for number, size in client.listSizes()
        ]
        client.quit()
    return messages


def fetchDirect(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    timeout: float = 10.0,
    tls: TlsMode | None = None,
    tlsContext: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
) -> list[bytes]:
    """Return the exact bytes RETR serves for every message, in mailbox order (L{fetchMailbox})."""
    messages = fetchMailbox(
        host,
        port,
        user,
        password,
        timeout=timeout,
        tls=tls,
        tlsContext=tlsContext,
        serverHostname=serverHostname,
    )
    return [message.data for message in messages]


def _signalGroup(group: int, signalNumber: int) -> None:
    try:
        os.killpg(group, signalNumber)
    except ProcessLookupError:
        pass


class DovecotServer:
    """
    One private Dovecot instance in its own directory, listening for POP3 on loopback.

    The master runs in the foreground (C{dovecot -F}) as the leader of a new process
    group, so L{stop} can make sure none of its children outlives it.

    Given a C{certificate} and C{privateKey} (PEM files readable by root), the POP3
    port also offers STLS and C{pop3sPort} speaks implicit TLS.
    """

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        certificate: Path | None = None,
        privateKey: Path | None = None,
        mailUser: str = MAIL_USER,
        haproxy: bool = False,
        settings: str = "",
    ) -> None:
        self.directory = directory
        self.haproxy = haproxy
        self.settings = settings
        #: With C{haproxy}: ports whose connections must start with a PROXY header.
        self.haproxyPort: int | None = None
        self.haproxyPop3sPort: int | None = None
        self.host = host
        self.certificate = certificate
        self.privateKey = privateKey
        self.mailUser = mailUser
        self.mailUid = -1
        self.mailGid = -1
        self.port = 0
        self.pop3sPort: int | None = None
        self.configPath = directory / "dovecot.conf"
        self.logPath = directory / "dovecot.log"
        self.outputPath = directory / "dovecot.out"
        self._process: subprocess.Popen[bytes] | None = None
        self._userNumbers = itertools.count(1)
        self._messageNumbers = itertools.count(1)
        self._lastMicroseconds = 0

    def start(self, timeout: float = 15.0, attempts: int = 3) -> None:
        """
        Start Dovecot and return once it answers a C{+OK} greeting.

        A port taken by someone else between L{freePort} and Dovecot's bind is retried
        with another port, up to C{attempts} times.

        @raise DovecotStartError: with Dovecot's output and log, if it did not come up
            within C{timeout} seconds.
        """
        if self._process is not None:
            raise RuntimeError("Dovecot is already running")
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.mailUid, self.mailGid = ensureMailUser(self.mailUser)
        for name in ("run", "state", "passwd", "home"):
            (self.directory / name).mkdir(exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = freePort(self.host)
            if self.certificate is not None:
                self.pop3sPort = freePort(self.host)
            if self.haproxy:
                self.haproxyPort = freePort(self.host)
                if self.certificate is not None:
                    self.haproxyPop3sPort = freePort(self.host)
            self.configPath.write_text(
                buildDovecotConfig(
                    directory=self.directory,
                    host=self.host,
                    port=self.port,
                    mailUid=self.mailUid,
                    mailGid=self.mailGid,
                    certificate=self.certificate,
                    privateKey=self.privateKey,
                    pop3sPort=self.pop3sPort,
                    haproxyPort=self.haproxyPort,
                    haproxyPop3sPort=self.haproxyPop3sPort,
                    settings=self.settings,
                )
            )
            with self.outputPath.open("ab") as output:
                self._process = subprocess.Popen(
                    [binary, "-F", "-c", str(self.configPath)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=terminateWithParent if sys.platform == "linux" else None,
                )
            atexit.register(self.stop)
            problem = self._waitUntilServing(timeout)
            if problem is None:
                return
            self.stop()
            diagnostics = readText(self.outputPath) + self.log()
            if "Address already in use" in diagnostics and attempt < attempts:
                continue
            raise DovecotStartError(
                f"Dovecot did not start on {self.host}:{self.port}: {problem}\n"
                f"--- {self.outputPath} ---\n{readText(self.outputPath)}\n"
                f"--- {self.logPath} ---\n{self.log()}"
            )

    def _waitUntilServing(self, timeout: float) -> str | None:
        """Return None once Dovecot greets with C{+OK}, or what went wrong."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            status = self._process.poll()
            if status is not None:
                return f"dovecot exited with status {status}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"no +OK greeting within {timeout}s"
            try:
                with RawPop3Client(self.host, self.port, timeout=min(remaining, 2.0)) as probe:
                    if not probe.greeting.startswith(b"+OK"):
                        return f"unexpected greeting {probe.greeting!r}"
                    probe.quit()
                    return None
            except (OSError, Pop3ErrorResponse):
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop Dovecot and every process it started, waiting at most about 3 x C{timeout} s.

        Safe to call more than once, and from atexit.
        """
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        # The master leads its own process group (start_new_session), so the group id
        # is its pid. The whole group gets SIGTERM at once: a master alone takes a
        # second to exit and leaves login and pop3 processes with open sessions behind.
        group = process.pid
        _signalGroup(group, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signalGroup(group, signal.SIGKILL)
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while liveGroupMembers(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        if liveGroupMembers(group):
            _signalGroup(group, signal.SIGKILL)

    @property
    def running(self) -> bool:
        """Whether the Dovecot master process is alive."""
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """Return all of Dovecot's log so far."""
        return readText(self.logPath)

    def logSize(self) -> int:
        """Return the size of the log in bytes: an offset for L{logSince}."""
        return logSize(self.logPath)

    def logSince(self, offset: int) -> str:
        """Return what Dovecot logged after byte C{offset} of its log."""
        return logSince(self.logPath, offset)

    def nextMaildirName(self) -> str:
        """
        Return a new unique maildir file name that sorts after every earlier one.

        Dovecot numbers the messages it finds in C{new/} in the order of the time
        encoded in their names (seconds, then C{M}microseconds), not in the order it
        reads the directory, so the names must grow strictly.
        """
        now = time.time_ns() // 1000
        self._lastMicroseconds = max(now, self._lastMicroseconds + 1)
        seconds, microseconds = divmod(self._lastMicroseconds, 1_000_000)
        number = next(self._messageNumbers)
        return f"{seconds}.M{microseconds}P{os.getpid()}Q{number}.popproxytest"

    def createMailbox(self) -> DovecotMailbox:
        """Create a new user with a random password and an empty maildir, usable at once."""
        if not self.running:
            raise RuntimeError("Dovecot is not running")
        user = f"user{next(self._userNumbers)}"
        password = secrets.token_hex(12)
        home = self.directory / "home" / user
        maildir = home / "Maildir"
        for path in (home, maildir, *(maildir / sub for sub in ("tmp", "new", "cur"))):
            path.mkdir(mode=0o700)
            os.chown(path, self.mailUid, self.mailGid)
        entry = self.directory / "passwd" / user
        temporary = entry.with_name(f".{user}.tmp")
        temporary.write_text(f"{user}:{{PLAIN}}{password}::::{home}::\n")
        temporary.chmod(0o644)
        os.replace(temporary, entry)
        return DovecotMailbox(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            maildir=maildir,
            server=self,
            logOffset=self.logSize(),
            pop3sPort=self.pop3sPort,
        )


@dataclass(frozen=True)
class DovecotMailbox:
    """
    A user with their own maildir on a shared L{DovecotServer}.

    Messages are put straight into the maildir, so delivering needs no SMTP or LDA.
    On a server with TLS, C{port} also offers STLS and C{pop3sPort} speaks POP3S;
    otherwise C{pop3sPort} is None.
    """

    host: str
    port: int
    user: str
    password: str
    maildir: Path
    server: DovecotServer = field(repr=False, compare=False)
    logOffset: int = field(repr=False, compare=False, default=0)
    pop3sPort: int | None = None

    def deliver(self, message: bytes) -> None:
        """
        Put C{message}, written as on the wire (CRLF line ends), into the maildir's C{new/}.

        Maildir files hold LF line ends, so every CRLF is stored as LF; Dovecot turns
        them back into CRLF when it serves the message. Messages go in the order of
        the calls. The file is written in C{tmp/} and renamed, so a POP3 session never
        sees half a message.
        """
        name = self.server.nextMaildirName()
        temporary = self.maildir / "tmp" / name
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as messageFile:
            messageFile.write(message.replace(b"\r\n", b"\n"))
        os.chown(temporary, self.server.mailUid, self.server.mailGid)
        os.rename(temporary, self.maildir / "new" / name)

    def messagesOnServer(self) -> int:
        """Return how many messages the maildir holds now, read or not."""
        return sum(
            1
            for sub in ("new", "cur")
            for entry in (self.maildir / sub).iterdir()
            if not entry.name.startswith(".")
        )

    def log(self) -> str:
        """Return what Dovecot logged since this mailbox was created."""
        return self.server.logSince(self.logOffset)

    def uidls(self) -> list[bytes]:
        """Return the UIDL unique ids of the messages, in mailbox order."""
        with RawPop3Client(self.host, self.port, timeout=10.0) as client:
            client.login(self.user, self.password)
            ids = [uid for _, uid in client.uidls()]
            client.quit()
        return ids


class _DovecotLogReporter:
    """
    A pytest plugin that shows the Dovecot log in the report of a failed test.

    It looks for the mailbox fixture C{mailboxFixture} (the log since the mailbox was
    made) or else the server fixture C{serverFixture} (the tail of the log).
    """

    def __init__(
        self,
        server: DovecotServer,
        mailboxFixture: str = "dovecot",
        serverFixture: str = "dovecotServer",
    ) -> None:
        self.server = server
        self.mailboxFixture = mailboxFixture
        self.serverFixture = serverFixture

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed:
            funcargs = getattr(item, "funcargs", {})
            mailbox = funcargs.get(self.mailboxFixture)
            if isinstance(mailbox, DovecotMailbox) and mailbox.server is self.server:
                report.sections.append(
                    (f"dovecot log since {mailbox.user} was created", mailbox.log())
                )
            elif self.serverFixture in funcargs:
                tail = "\n".join(self.server.log().splitlines()[-_LOG_TAIL_LINES:])
                report.sections.append(("dovecot log (tail)", tail))
        return report


def _checkDovecotRunnable() -> None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        unavailable("dovecot is not installed (Debian: dovecot-core dovecot-pop3d)")
    if os.geteuid() != 0:
        unavailable("the Dovecot fixture needs root, to run mail processes as a mail user")


def _sessionDovecot(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    *,
    certificate: ServerCertificate | None = None,
    mailboxFixture: str = "dovecot",
    serverFixture: str = "dovecotServer",
    haproxy: bool = False,
    settings: str = "",
) -> Iterator[DovecotServer]:
    """
    Run one Dovecot for a session-scoped fixture; with a certificate, with STLS and POP3S.

    Its directory is not under pytest's basetemp, which is private to root (mode
    0700), because Dovecot's unprivileged processes must reach the passwd-files and
    maildirs; the log is copied into basetemp at the end for a post-mortem. The
    certificate files may stay in basetemp: Dovecot reads them as root at start-up.
    """
    _checkDovecotRunnable()
    directory = Path(tempfile.mkdtemp(prefix="popproxy-dovecot-"))
    directory.chmod(0o711)
    server = DovecotServer(
        directory,
        certificate=None if certificate is None else certificate.chain,
        privateKey=None if certificate is None else certificate.privateKey,
        haproxy=haproxy,
        settings=settings,
    )
    reporter = _DovecotLogReporter(server, mailboxFixture, serverFixture)
    request.config.pluginmanager.register(reporter, f"popproxy-dovecot-log-{id(reporter)}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        request.config.pluginmanager.unregister(reporter)
        if server.logPath.exists():
            keep = tmp_path_factory.mktemp(mailboxFixture)
            shutil.copyfile(server.logPath, keep / "dovecot.log")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecotServer(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DovecotServer]:
    """
    A Dovecot POP3 server on 127.0.0.1, shared by the whole test session; no TLS.

    Its directory is not under pytest's basetemp, which is private to root (mode
    0700), because Dovecot's unprivileged processes must reach the passwd-files and
    maildirs; the log is copied into basetemp at the end for a post-mortem.
    """
    yield from _sessionDovecot(tmp_path_factory, request)


@pytest.fixture
def dovecot(dovecotServer: DovecotServer) -> DovecotMailbox:
    """A fresh user with an empty maildir on the session's Dovecot server."""
    return dovecotServer.createMailbox()


@pytest.fixture(scope="session")
def dovecotTlsServer(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    testCertificates: GeneratedCertificates,
) -> Iterator[DovecotServer]:
    """
    A second session-wide Dovecot, with TLS: STLS on C{port}, POP3S on C{pop3sPort}.

    It presents C{testCertificates.localhost} (sent with its CA as a chain), so clients
    trusting C{testCertificates.caFile} verify it for the name C{localhost} (or the IP
    address 127.0.0.1) and connect to 127.0.0.1. STLS is offered, not required: plain
    USER/PASS on C{port} still works (Dovecot counts loopback connections as secure).
    Its log says C{TLS} on each login made over TLS, and C{secured} on plain ones.
    """
    yield from _sessionDovecot(
        tmp_path_factory,
        request,
        certificate=testCertificates.localhost,
        mailboxFixture="dovecotTls",
        serverFixture="dovecotTlsServer",
    )


@pytest.fixture(scope="session")
def dovecotClientAddressServer(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    testCertificates: GeneratedCertificates,
) -> Iterator[DovecotServer]:
    """
    A session-wide TLS Dovecot (like L{dovecotTlsServer}) that a proxy on 127.0.0.1 can
    tell the client's address: its plain and POP3S ports offer XCLIENT to 127.0.0.1
    (C{login_trusted_networks}), and its C{haproxyPort} and C{haproxyPop3sPort} require a
    PROXY header from 127.0.0.0/8. Its log names the address it was told as C{rip=}.
    """
    yield from _sessionDovecot(
        tmp_path_factory,
        request,
        certificate=testCertificates.localhost,
        mailboxFixture="dovecotClientAddress",
        serverFixture="dovecotClientAddressServer",
        haproxy=True,
        settings="login_trusted_networks = 127.0.0.1/32\nhaproxy_trusted_networks = 127.0.0.0/8",
    )


@pytest.fixture
def dovecotTls(dovecotTlsServer: DovecotServer) -> DovecotMailbox:
    """
    A fresh user with an empty maildir on the session's TLS Dovecot (L{dovecotTlsServer}).

    Same API as L{dovecot}; C{pop3sPort} is the implicit-TLS port.
    """
    return dovecotTlsServer.createMailbox()


@pytest.fixture(scope="session")
def dovecotWithCertificate(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[ServerCertificate], DovecotServer]]:
    """
    Start (once per session and certificate) a TLS Dovecot presenting a given certificate.

    Call it with e.g. C{testCertificates.wrongHost}, C{.selfSigned} or C{.expired} to get
    a server that verifying clients must refuse. Each start takes well under a second; all
    of them stop at the end of the session. Their logs are not attached to test reports
    (use C{server.log()}).
    """
    _checkDovecotRunnable()
    servers: dict[ServerCertificate, DovecotServer] = {}

    def serverFor(certificate: ServerCertificate) -> DovecotServer:
        if certificate not in servers:
            directory = Path(tempfile.mkdtemp(prefix="popproxy-dovecot-"))
            directory.chmod(0o711)
            server = DovecotServer(
                directory, certificate=certificate.chain, privateKey=certificate.privateKey
            )
            servers[certificate] = server
            server.start()
        return servers[certificate]

    try:
        yield serverFor
    finally:
        for number, server in enumerate(servers.values()):
            server.stop()
            if server.logPath.exists():
                keep = tmp_path_factory.mktemp(f"dovecotWithCertificate{number}")
                shutil.copyfile(server.logPath, keep / "dovecot.log")
            shutil.rmtree(server.directory, ignore_errors=True)
