"""Run the real POP3 clients (fetchmail, getmail6, mpop, curl, poplib); collect their mail.

Every function here retrieves the whole mailbox in keep mode (no DELE is ever sent) and
returns the messages in mailbox order as the client delivered them, headers it added
included. L{stripClientHeaders} undoes exactly what each client adds so a test can compare
the rest byte for byte with what the server held.

By default each client logs in with USER/PASS over plain TCP (curl: with SASL PLAIN when CAPA
offers it). All take the same keywords to change that:

  - C{tls}: None (plain TCP, never upgrading), C{"implicit"} (POP3S: C{port} must speak TLS
    from the first byte) or C{"starttls"} (STLS on a plain port, required: a server without
    STLS fails the run). L{CLIENT_TLS_MODES} says which client does which; asking for a
    mode a client lacks raises L{ClientModeUnsupported} (getmail6 has no STLS).
  - C{caFile}: the PEM CA file to trust; required with C{tls}. Verification is always on:
    the chain must lead to C{caFile} and the certificate must name C{hostname}.
  - C{hostname} (default C{localhost}): the name the certificate is checked against. The
    client still connects to C{host} (e.g. 127.0.0.1), so no name resolution is involved.
  - C{auth}: None for the client's usual login, or one of L{CLIENT_AUTH_METHODS}:
    C{"user"} (USER/PASS), C{"plain"} (SASL AUTH PLAIN), C{"login"} (SASL AUTH LOGIN),
    C{"apop"} (APOP with the greeting's timestamp).

How each client is told (details in each function's docstring):

  - fetchmail: C{ssl} (implicit) or none (STLS), both with C{sslproto 'TLS1.2+'},
    C{sslcertck}, C{sslcertfile} and C{sslcommonname}; plain runs use C{sslproto ''}.
    C{auth="apop"} is C{protocol apop}, which never does STLS (refused with C{starttls}).
  - getmail6: C{SimplePOP3SSLRetriever} with C{ca_certs} and C{ssl_cert_hostname}; no STLS.
    C{auth="apop"} is C{use_apop = true}.
  - mpop: C{tls on}, C{tls_starttls on|off}, C{tls_trust_file}, C{tls_host_override};
    C{auth user|plain|apop} (default C{user}; no APOP with Dovecot, see L{fetchWithMpop}).
  - curl: C{pop3s://} or C{pop3://} with C{--ssl-reqd}, C{--cacert}, and C{--connect-to} so
    the URL names C{hostname} while the connection goes to C{host};
    C{--login-options AUTH=PLAIN|LOGIN|+APOP}.
  - poplib: C{POP3_SSL} with a verifying context, or C{POP3.stls()}; C{apop()}.

What each client does to a message (checked against the versions on Debian 12):

  - fetchmail 6.4 (MDA delivery): prepends one folded C{Received:} field; hands the MDA LF
    line endings (CRLF becomes LF).
  - getmail6 6.18 (Maildir): prepends C{Return-Path:}, C{Delivered-To:} and C{Received:}
    (in that order); deletes any C{Return-Path:} the message already had, wherever it was;
    re-serializes the message through Python's C{email} package (fine for ordinary
    well-formed messages, not for exotic ones); stores LF line endings.
  - mpop 1.4 (MDA delivery): prepends one folded C{Received:} field; hands the MDA LF line
    endings.
  - curl 7.88: nothing added; un-stuffs dots and keeps CRLF, so the body is the message.
  - poplib: nothing added, but its lines lose their terminators; L{fetchWithPoplib} rejoins
    them with CRLF, so a bare LF or a missing final CRLF in the original cannot be seen.

Hence only messages that are CRLF-clean (every line ends with CRLF, no bare CR or LF) can be
compared byte for byte across all clients.
"""

from __future__ import annotations

import contextlib
import os
import poplib
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.peers.certs import TEST_HOSTNAME, TlsMode

__all__ = [
    "CLIENTS",
    "CLIENT_ADDED_FIELDS",
    "CLIENT_AUTH_METHODS",
    "CLIENT_STORES_LF",
    "CLIENT_TLS_MODES",
    "ClientFailed",
    "ClientModeUnsupported",
    "fetchWithCurl",
    "fetchWithFetchmail",
    "fetchWithGetmail",
    "fetchWithMpop",
    "fetchWithPoplib",
    "stripClientHeaders",
]

DEFAULT_TIMEOUT = 30.0

# The header fields each client prepends, in the order they appear at the top of the message.
CLIENT_ADDED_FIELDS: Mapping[str, tuple[bytes, ...]] = {
    "fetchmail": (b"Received",),
    "getmail": (b"Return-Path", b"Delivered-To", b"Received"),
    "mpop": (b"Received",),
    "curl": (),
    "poplib": (),
}

# Whether the client hands over the message with LF instead of CRLF line endings.
CLIENT_STORES_LF: Mapping[str, bool] = {
    "fetchmail": True,
    "getmail": True,
    "mpop": True,
    "curl": False,
    "poplib": False,
}

# The TLS modes each client can use (None: plain TCP).
CLIENT_TLS_MODES: Mapping[str, tuple[TlsMode | None, ...]] = {
    "fetchmail": (None, "implicit", "starttls"),
    "getmail": (None, "implicit"),
    "mpop": (None, "implicit", "starttls"),
    "curl": (None, "implicit", "starttls"),
    "poplib": (None, "implicit", "starttls"),
}

# The login methods each client can be told to use with auth= (None: its usual choice).
CLIENT_AUTH_METHODS: Mapping[str, tuple[str, ...]] = {
    "fetchmail": ("user", "apop"),
    "getmail": ("user", "apop"),
    "mpop": ("user", "plain", "apop"),
    "curl": ("plain", "login", "apop"),
    "poplib": ("user", "apop"),
}

_ANY_CLIENT_FIELDS = frozenset(
    name.lower() for names in CLIENT_ADDED_FIELDS.values() for name in names
)

# An unprivileged account getmail can run as when the tests run as root.
_GETMAIL_USER = "nobody"


class ClientFailed(RuntimeError):
    """A client exited with an error or timed out; the message includes its output."""


class ClientModeUnsupported(NotImplementedError):
    """The client cannot do what was asked (a TLS mode or login method it does not have)."""


def _checkOptions(client: str, tls: TlsMode | None, caFile: Path | None, auth: str | None) -> None:
    """Refuse a TLS mode or login method C{client} lacks, and TLS without a CA to verify."""
    if tls not in (None, "implicit", "starttls"):
        raise ValueError(f"unknown TLS mode {tls!r}")
    if tls not in CLIENT_TLS_MODES[client]:
        raise ClientModeUnsupported(f"{client} cannot do TLS mode {tls!r}")
    if auth is not None and auth not in CLIENT_AUTH_METHODS[client]:
        raise ClientModeUnsupported(
            f"{client} cannot be told to log in with {auth!r}; "
            f"it can do {', '.join(CLIENT_AUTH_METHODS[client])}"
        )
    if tls is not None and caFile is None:
        raise ValueError("TLS needs caFile: the clients always verify the certificate")


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path,
    env: Mapping[str, str],
    logPath: Path,
    okCodes: frozenset[int] = frozenset({0}),
    user: str | None = None,
) -> str:
    """
    Run C{argv} in its own process group with a hard timeout; keep its output in C{logPath}.

    On a timeout the whole group is killed (a client's MDA child included), then the output
    so far is reported in L{ClientFailed}.
    """
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=user,
        group=None if user is None else pwd.getpwnam(user).pw_gid,
        extra_groups=None if user is None else [],
    )
    timedOut = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timedOut = True
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    text = output.decode("utf-8", "replace")
    logPath.write_text(text)
    if timedOut:
        raise ClientFailed(f"{argv[0]} timed out after {timeout}s:\n{text}")
    if process.returncode not in okCodes:
        raise ClientFailed(f"{argv[0]} exited with {process.returncode}:\n{text}")
    return text


def _checkRcValue(value: str) -> str:
    """Refuse values the rc-file syntaxes below cannot carry unquoted-safely."""
    if any(character in value for character in '"\\\r\n'):
        raise ValueError(f"cannot put {value!r} in a client configuration file")
    return value


def _writeMda(directory: Path) -> Path:
    """
    Write an MDA script storing each message it is given as the next numbered file.

    Clients deliver one message at a time, in mailbox order, so counting the files already
    stored gives the message's position.
    """
    outbox = directory / "delivered"
    outbox.mkdir()
    script = directory / "mda.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"dir={shlex.quote(str(outbox))}\n"
        'n=$(ls -1 "$dir" | wc -l)\n'
        'exec cat > "$dir/$(printf %06d "$n").eml"\n'
    )
    script.chmod(0o755)
    return script


def _readDelivered(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((directory / "delivered").iterdir())]


def _freshDirectory(workdir: Path, name: str) -> Path:
    directory = workdir / name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    return directory


def _baseEnvironment(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def fetchWithFetchmail(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: TlsMode | None = None,
    caFile: Path | None = None,
    hostname: str = TEST_HOSTNAME,
    auth: str | None = None,
) -> list[bytes]:
    """
    Fetch every message with fetchmail (C{keep}, C{fetchall}) into an MDA.

    Plain runs set C{sslproto ''}, which stops fetchmail from upgrading with STLS when the
    server offers it. C{tls="implicit"} sets C{ssl}; C{tls="starttls"} does not, and then
    C{sslproto 'TLS1.2+'} (set in both modes) makes STLS mandatory (unquoted, C{auto} is a
    syntax error in the rc file). Both also set C{sslcertck} (without it fetchmail only
    warns about a bad certificate and goes on), C{sslcertfile} (which also keeps it from
    loading the system CAs) and C{sslcommonname}: fetchmail checks the certificate's CN and
    DNS names against the poll name, here an IP address, which it would not find there.
    A refused certificate makes fetchmail exit with status 2 ("SSL connection failed").
    C{auth}: C{"user"} (the default, C{auth password}: USER/PASS) or C{"apop"}
    (C{protocol apop}). fetchmail 6.4.37 with C{protocol apop} never sends STLS, whatever
    C{sslproto} says, and logs in without TLS: C{tls="starttls"} with C{auth="apop"} raises
    L{ClientModeUnsupported} rather than pretend.

    The verbose log is kept in C{workdir/fetchmail/fetchmail.log}. fetchmail warns that it
    runs as root; that is harmless here.
    """
    _checkOptions("fetchmail", tls, caFile, auth)
    if tls == "starttls" and auth == "apop":
        raise ClientModeUnsupported("fetchmail's protocol apop skips STLS and logs in in clear")
    directory = _freshDirectory(workdir, "fetchmail")
    mda = _writeMda(directory)
    if tls is None:
        tlsOptions = "sslproto ''"
    else:
        # Any sslproto but '' makes STLS mandatory when ssl (implicit TLS) is not set.
        tlsOptions = "ssl " if tls == "implicit" else ""
        tlsOptions += (
            "sslproto 'TLS1.2+'"
            f' sslcertck sslcertfile "{_checkRcValue(str(caFile))}"'
            f' sslcommonname "{_checkRcValue(hostname)}"'
        )
    protocol = "apop" if auth == "apop" else "pop3"
    rcPath = directory / "fetchmailrc"
    rcPath.write_text(
        "set no syslog\n"
        f"poll {_checkRcValue(host)} service {port} protocol {protocol} auth password"
        f" timeout {max(1, int(timeout / 2))}:\n"
        f'  user "{_checkRcValue(user)}" there with password "{_checkRcValue(password)}"'
        f' is "{pwd.getpwuid(os.getuid()).pw_name}" here\n'
        f'  keep fetchall no rewrite {tlsOptions} mda "{mda}"\n'
    )
    rcPath.chmod(0o600)
    env = _baseEnvironment(directory) | {"FETCHMAILHOME": str(directory)}
    _run(
        [
            "fetchmail",
            "-v",
            "--nodetach",
            "--nosyslog",
            "-f",
            str(rcPath),
            "-i",
            str(directory / "fetchids"),
            "--pidfile",
            str(directory / "fetchmail.pid"),
        ],
        timeout=timeout,
        cwd=directory,
        env=env,
        logPath=directory / "fetchmail.log",
        # 1 means "no mail": an empty mailbox is not a failure.
        okCodes=frozenset({0, 1}),
    )
    return _readDelivered(directory)


def _maildirOrder(path: Path) -> tuple[int, int, int]:
    """Order getmail's Maildir files by its per-run delivery counter Q (then by time)."""
    match = re.match(r"(\d+)\.M(\d+)P\d+Q(\d+)", path.name)
    if match is None:
        raise ClientFailed(f"unexpected Maildir file name {path.name!r}")
    seconds, microseconds, counter = (int(group) for group in match.groups())
    return (counter, seconds, microseconds)


def fetchWithGetmail(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: TlsMode | None = None,
    caFile: Path | None = None,
    hostname: str = TEST_HOSTNAME,
    auth: str | None = None,
) -> list[bytes]:
    """
    Fetch every message with getmail6 (C{delete = false}, C{read_all}) into a Maildir.

    getmail refuses to deliver as root, so when the tests run as root it runs as
    C{nobody} in a private directory under the system temporary directory (the pytest
    workdir is not reachable by other users), which is removed afterwards; its log and
    configuration are copied to C{workdir/getmail}. It is started with Debian's
    C{/usr/bin/python3} through the C{/usr/bin/getmail} script.

    C{tls="implicit"} uses C{SimplePOP3SSLRetriever} with C{ca_certs} (a copy of
    C{caFile} in the private directory, readable by C{nobody}), which turns on chain
    verification, and C{ssl_cert_hostname}, which getmail matches against the
    certificate's names itself. getmail6 has no STLS: C{tls="starttls"} raises
    L{ClientModeUnsupported}. C{auth}: C{"user"} (the default) or C{"apop"} (C{use_apop}).
    """
    _checkOptions("getmail", tls, caFile, auth)
    directory = _freshDirectory(workdir, "getmail")
    runAs = _GETMAIL_USER if os.geteuid() == 0 else None
    if runAs is None:
        getmailDir = directory
    else:
        getmailDir = Path(tempfile.mkdtemp(prefix="popproxy-getmail-"))
        account = pwd.getpwnam(runAs)
        os.chown(getmailDir, account.pw_uid, account.pw_gid)
    try:
        maildir = getmailDir / "Maildir"
        for sub in ("", "cur", "new", "tmp"):
            (maildir / sub).mkdir()
        retriever = "SimplePOP3Retriever\n"
        privateFiles = [maildir, *maildir.rglob("*")]
        if tls is not None:
            assert caFile is not None
            trusted = getmailDir / "ca.pem"
            shutil.copyfile(caFile, trusted)
            privateFiles.append(trusted)
            retriever = (
                "SimplePOP3SSLRetriever\n"
                f"ca_certs = {trusted}\n"
                f"ssl_cert_hostname = {_checkRcValue(hostname)}\n"
            )
        if auth == "apop":
            retriever += "use_apop = true\n"
        rcPath = getmailDir / "getmailrc"
        rcPath.write_text(
            "[retriever]\n"
            f"type = {retriever}"
            f"server = {_checkRcValue(host)}\n"
            f"port = {port}\n"
            f"username = {_checkRcValue(user)}\n"
            f"password = {_checkRcValue(password)}\n"
            f"timeout = {max(1, int(timeout / 2))}\n"
            "\n"
            "[destination]\n"
            "type = Maildir\n"
            f"path = {maildir}/\n"
            "\n"
            "[options]\n"
            "delete = false\n"
            "read_all = true\n"
            "verbose = 2\n"
            f"message_log = {getmailDir / 'getmail-messages.log'}\n"
        )
        rcPath.chmod(0o600)
        if runAs is not None:
            account = pwd.getpwnam(runAs)
            for path in [rcPath, *privateFiles]:
                os.chown(path, account.pw_uid, account.pw_gid)
        try:
            _run(
                ["/usr/bin/getmail", "--rcfile", str(rcPath), "--getmaildir", str(getmailDir)],
                timeout=timeout,
                cwd=getmailDir,
                env=_baseEnvironment(getmailDir),
                logPath=directory / "getmail.log",
                user=runAs,
            )
        finally:
            if getmailDir != directory:
                for name in ("getmailrc", "getmail-messages.log"):
                    if (getmailDir / name).exists():
                        shutil.copyfile(getmailDir / name, directory / name)
        stored = sorted((maildir / "new").iterdir(), key=_maildirOrder)
        return [path.read_bytes() for path in stored]
    finally:
        if getmailDir != directory:
            shutil.rmtree(getmailDir, ignore_errors=True)


def fetchWithMpop(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: TlsMode | None = None,
    caFile: Path | None = None,
    hostname: str = TEST_HOSTNAME,
    auth: str | None = None,
) -> list[bytes]:
    """
    Fetch every message with mpop (C{keep on}, C{only_new off}) into an MDA.

    Plain runs set C{tls off}. C{tls="implicit"} sets C{tls on} and C{tls_starttls off};
    C{tls="starttls"} sets C{tls on} and C{tls_starttls on} (STLS required). Both add
    C{tls_trust_file} and C{tls_host_override} (mpop, built on GnuTLS, would otherwise
    check the certificate against C{host}). C{auth}: C{"user"} (the default, C{auth user}:
    USER/PASS), C{"plain"} (SASL AUTH PLAIN) or C{"apop"}. mpop only uses APOP when the
    greeting's timestamp passes its own check, which refuses a C{=}: Dovecot's timestamps
    (base64 with padding) always have one, so against Dovecot mpop exits with "POP3 server
    does not support authentication method APOP".

    mpop pipelines its commands when CAPA lists PIPELINING. The C{--debug} transcript is
    kept in C{workdir/mpop/mpop.log}.
    """
    _checkOptions("mpop", tls, caFile, auth)
    directory = _freshDirectory(workdir, "mpop")
    mda = _writeMda(directory)
    if tls is None:
        tlsOptions = "tls off\n"
    else:
        tlsOptions = (
            "tls on\n"
            f"tls_starttls {'on' if tls == 'starttls' else 'off'}\n"
            f'tls_trust_file "{_checkRcValue(str(caFile))}"\n'
            f'tls_host_override "{_checkRcValue(hostname)}"\n'
        )
    rcPath = directory / "mpoprc"
    rcPath.write_text(
        "account fetch\n"
        f"host {_checkRcValue(host)}\n"
        f"port {port}\n"
        f"auth {auth or 'user'}\n"
        f'user "{_checkRcValue(user)}"\n'
        f'password "{_checkRcValue(password)}"\n'
        f"{tlsOptions}"
        "keep on\n"
        "only_new off\n"
        f"timeout {max(1, int(timeout / 2))}\n"
        f'uidls_file "{directory / "uidls"}"\n'
        f'delivery mda "{mda}"\n'
    )
    # mpop refuses a configuration file holding a password that others can read.
    rcPath.chmod(0o600)
    _run(
        ["mpop", "--debug", "-C", str(rcPath), "fetch"],
        timeout=timeout,
        cwd=directory,
        env=_baseEnvironment(directory),
        logPath=directory / "mpop.log",
    )
    return _readDelivered(directory)


def _urlHost(host: str) -> str:
    """Return C{host} as a URL writes it: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


def fetchWithCurl(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: TlsMode | None = None,
    caFile: Path | None = None,
    hostname: str = TEST_HOSTNAME,
    auth: str | None = None,
) -> list[bytes]:
    """
    List the mailbox with curl, then retrieve every message in one curl run (one session).

    curl never deletes unless asked (C{-X DELE}); it logs in with USER/PASS unless CAPA
    offers SASL, in which case it prefers AUTH (PLAIN, when offered). C{auth}: C{"plain"},
    C{"login"} or C{"apop"} (C{--login-options AUTH=PLAIN}, C{AUTH=LOGIN}, C{AUTH=+APOP}).

    Plain runs use C{pop3://host:port/} and never upgrade. C{tls="implicit"} uses
    C{pop3s://hostname:port/}; C{tls="starttls"} uses C{pop3://hostname:port/} with
    C{--ssl-reqd} (STLS required). Both add C{--cacert} and C{--connect-to}, so curl
    verifies the certificate for C{hostname} but connects to C{host}. (curl keeps trusting
    its default CApath, /etc/ssl/certs, too; no test certificate is in there.) The C{--verbose}
    transcripts are kept in C{workdir/curl/curl-list.log} and C{curl-retr.log}.
    """
    _checkOptions("curl", tls, caFile, auth)
    directory = _freshDirectory(workdir, "curl")
    options: list[str] = []
    if tls is None:
        base = f"pop3://{_urlHost(host)}:{port}/"
    else:
        scheme = "pop3s" if tls == "implicit" else "pop3"
        base = f"{scheme}://{hostname}:{port}/"
        connectTo = f"{hostname}:{port}:{_urlHost(host)}:{port}"
        options += ["--cacert", str(caFile), "--connect-to", connectTo]
        if tls == "starttls":
            options.append("--ssl-reqd")
    if auth is not None:
        mechanism = {"plain": "PLAIN", "login": "LOGIN", "apop": "+APOP"}[auth]
        options += ["--login-options", f"AUTH={mechanism}"]
    common = [
        "curl",
        "--silent",
        "--show-error",
        "--verbose",
        # --max-time bounds each transfer; --fail-early stops a multi-URL run at the first
        # failed one instead of waiting out --max-time for every message.
        "--fail-early",
        "--max-time",
        str(timeout),
        "--connect-timeout",
        str(min(10.0, timeout)),
        "--user",
        f"{user}:{password}",
        *options,
    ]
    listing = directory / "list.txt"
    _run(
        [*common, "--output", str(listing), base],
        timeout=timeout + 5,
        cwd=directory,
        env=_baseEnvironment(directory),
        logPath=directory / "curl-list.log",
    )
    numbers = [line.split()[0].decode("ascii") for line in listing.read_bytes().splitlines()]
    if not numbers:
        return []
    retrieve = list(common)
    outputs = []
    for number in numbers:
        output = directory / f"{int(number):06d}.eml"
        outputs.append(output)
        retrieve += [base + number, "--output", str(output)]
    _run(
        retrieve,
        timeout=timeout + 5,
        cwd=directory,
        env=_baseEnvironment(directory),
        logPath=directory / "curl-retr.log",
    )
    return [output.read_bytes() for output in outputs]


class _PinnedPop3(poplib.POP3):
    """
    C{poplib.POP3} connecting to C{address} while naming the server C{hostname}.

    poplib verifies the certificate after C{stls()} against the host it was given; this
    keeps that name apart from the address it connects to.
    """

    def __init__(self, address: str, hostname: str, port: int, timeout: float) -> None:
        self._address = address
        super().__init__(hostname, port, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, self.port), timeout)


class _PinnedPop3Ssl(poplib.POP3_SSL):
    """C{poplib.POP3_SSL} connecting to C{address}, verifying the certificate for C{hostname}."""

    def __init__(
        self, address: str, hostname: str, port: int, timeout: float, context: ssl.SSLContext
    ) -> None:
        self._address = address
        self._context = context
        super().__init__(hostname, port, timeout=timeout, context=context)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), timeout)
        try:
            return self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def fetchWithPoplib(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tls: TlsMode | None = None,
    caFile: Path | None = None,
    hostname: str = TEST_HOSTNAME,
    auth: str | None = None,
) -> list[bytes]:
    """
    Retrieve every message with python's poplib (USER/PASS, LIST, RETR each, QUIT).

    poplib strips each line's terminator (CRLF and bare LF alike) and the final terminator;
    the lines are rejoined with CRLF and one CRLF is appended, which reproduces CRLF-clean
    messages exactly and nothing else. C{workdir} is unused; it keeps the signature uniform.

    C{tls="implicit"} uses C{POP3_SSL}, C{tls="starttls"} calls C{stls()} before logging
    in; both with a context trusting only C{caFile} that checks C{hostname}, while the
    socket connects to C{host}. C{auth}: C{"user"} (the default) or C{"apop"} (C{apop()}).
    """
    _checkOptions("poplib", tls, caFile, auth)
    context = None
    if tls is not None:
        assert caFile is not None
        context = ssl.create_default_context(cafile=str(caFile))
    try:
        if tls == "implicit":
            assert context is not None
            client: poplib.POP3 = _PinnedPop3Ssl(host, hostname, port, timeout, context)
        else:
            client = _PinnedPop3(host, host if tls is None else hostname, port, timeout)
    except OSError as e:
        # ssl.SSLError (a certificate refused) is an OSError too.
        raise ClientFailed(f"poplib could not connect: {e!r}") from e
    try:
        if tls == "starttls":
            client.stls(context)
        if auth == "apop":
            client.apop(user, password)
        else:
            client.user(user)
            client.pass_(password)
        _, listing, _ = client.list()
        messages = []
        for line in listing:
            _, lines, _ = client.retr(int(line.split()[0]))
            messages.append(b"\r\n".join(lines) + b"\r\n")
        client.quit()
    except (poplib.error_proto, OSError) as e:
        # OSError includes the socket timeout of a server that stops answering, and the
        # ssl.SSLError of a certificate refused after STLS.
        raise ClientFailed(f"poplib: {e!r}") from e
    finally:
        # After a failed stls() poplib still holds the socket ssl detached: closing it fails.
        with contextlib.suppress(OSError):
            client.close()
    return messages


def _splitFirstField(message: bytes, newline: bytes) -> tuple[bytes, bytes] | None:
    """Return (field name, rest of message) for the first header field, or None."""
    colon = message.find(b":")
    lineEnd = message.find(newline)
    if colon <= 0 or (lineEnd != -1 and lineEnd < colon):
        return None
    name = message[:colon]
    if not re.fullmatch(rb"[!-9;-~]+", name):
        return None
    end = lineEnd
    while end != -1 and message[end + len(newline) : end + len(newline) + 1] in (b" ", b"\t"):
        end = message.find(newline, end + len(newline))
    if end == -1:
        return None
    return name, message[end + len(newline) :]


def stripClientHeaders(message: bytes, client: str | None = None) -> bytes:
    """
    Undo what a POP3 client does to a message on delivery, so the rest compares byte for byte.

    With C{client} (a key of L{CLIENTS}): remove exactly the fields that client prepends
    (L{CLIENT_ADDED_FIELDS}, in order; L{ClientFailed} if they are not there) and, for a
    client that stores LF (L{CLIENT_STORES_LF}), turn every LF back into CRLF.

    Without C{client}: if the message has no CR at all it is taken as LF-stored and every LF
    becomes CRLF; then the leading run of C{Received}, C{Delivered-To} and C{Return-Path}
    fields is removed. A message that itself begins with such fields loses them too, so
    compare C{stripClientHeaders(delivered) == stripClientHeaders(original)}.
    getmail also deletes a C{Return-Path} field further down; nothing can restore that.
    """
    if client is not None:
        if client not in CLIENT_ADDED_FIELDS:
            raise ValueError(f"unknown client {client!r}")
        if CLIENT_STORES_LF[client]:
            message = message.replace(b"\n", b"\r\n")
        for expected in CLIENT_ADDED_FIELDS[client]:
            split = _splitFirstField(message, b"\r\n")
            if split is None or split[0].lower() != expected.lower():
                raise ClientFailed(f"{client} did not prepend {expected!r}: {message[:300]!r}")
            message = split[1]
        return message
    if b"\r" not in message:
        message = message.replace(b"\n", b"\r\n")
    while (split := _splitFirstField(message, b"\r\n")) is not None:
        if split[0].lower() not in _ANY_CLIENT_FIELDS:
            break
        message = split[1]
    return message


CLIENTS: Mapping[str, Callable[..., list[bytes]]] = {
    "fetchmail": fetchWithFetchmail,
    "getmail": fetchWithGetmail,
    "mpop": fetchWithMpop,
    "curl": fetchWithCurl,
    "poplib": fetchWithPoplib,
}
