"""Run the real POP3 clients (fetchmail, getmail6, mpop, curl, poplib); collect their mail.

Every function here logs in with USER/PASS over plain TCP, retrieves the whole mailbox in
keep mode (no DELE is ever sent), and returns the messages in mailbox order as the client
delivered them, headers it added included. L{stripClientHeaders} undoes exactly what each
client adds so a test can compare the rest byte for byte with what the server held.

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

import os
import poplib
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "CLIENTS",
    "CLIENT_ADDED_FIELDS",
    "CLIENT_STORES_LF",
    "ClientFailed",
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

_ANY_CLIENT_FIELDS = frozenset(
    name.lower() for names in CLIENT_ADDED_FIELDS.values() for name in names
)

# An unprivileged account getmail can run as when the tests run as root.
_GETMAIL_USER = "nobody"


class ClientFailed(RuntimeError):
    """A client exited with an error or timed out; the message includes its output."""


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
) -> list[bytes]:
    """
    Fetch every message with fetchmail (C{keep}, C{fetchall}, no STLS) into an MDA.

    The verbose log is kept in C{workdir/fetchmail/fetchmail.log}. fetchmail warns that it
    runs as root; that is harmless here.
    """
    directory = _freshDirectory(workdir, "fetchmail")
    mda = _writeMda(directory)
    rcPath = directory / "fetchmailrc"
    rcPath.write_text(
        "set no syslog\n"
        f"poll {_checkRcValue(host)} service {port} protocol pop3 auth password"
        f" timeout {max(1, int(timeout / 2))}:\n"
        f'  user "{_checkRcValue(user)}" there with password "{_checkRcValue(password)}"'
        f' is "{pwd.getpwuid(os.getuid()).pw_name}" here\n'
        # sslproto '' stops fetchmail from upgrading with STLS when the server offers it.
        f"  keep fetchall no rewrite sslproto '' mda \"{mda}\"\n"
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
) -> list[bytes]:
    """
    Fetch every message with getmail6 (C{delete = false}, C{read_all}) into a Maildir.

    getmail refuses to deliver as root, so when the tests run as root it runs as
    C{nobody} in a private directory under the system temporary directory (the pytest
    workdir is not reachable by other users), which is removed afterwards; its log and
    configuration are copied to C{workdir/getmail}. It is started with Debian's
    C{/usr/bin/python3} through the C{/usr/bin/getmail} script.
    """
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
        rcPath = getmailDir / "getmailrc"
        rcPath.write_text(
            "[retriever]\n"
            "type = SimplePOP3Retriever\n"
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
            for path in [rcPath, *maildir.rglob("*"), maildir]:
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
) -> list[bytes]:
    """
    Fetch every message with mpop (C{keep on}, C{only_new off}, C{tls off}) into an MDA.

    mpop pipelines its commands when CAPA lists PIPELINING. The C{--debug} transcript is
    kept in C{workdir/mpop/mpop.log}.
    """
    directory = _freshDirectory(workdir, "mpop")
    mda = _writeMda(directory)
    rcPath = directory / "mpoprc"
    rcPath.write_text(
        "account fetch\n"
        f"host {_checkRcValue(host)}\n"
        f"port {port}\n"
        "auth user\n"
        f'user "{_checkRcValue(user)}"\n'
        f'password "{_checkRcValue(password)}"\n'
        "tls off\n"
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


def fetchWithCurl(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[bytes]:
    """
    List the mailbox with curl, then retrieve every message in one curl run (one session).

    curl never deletes unless asked (C{-X DELE}); it logs in with USER/PASS unless CAPA
    offers SASL, in which case it prefers AUTH.
    """
    directory = _freshDirectory(workdir, "curl")
    base = f"pop3://{host}:{port}/"
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


def fetchWithPoplib(
    host: str,
    port: int,
    user: str,
    password: str,
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[bytes]:
    """
    Retrieve every message with python's poplib (USER/PASS, LIST, RETR each, QUIT).

    poplib strips each line's terminator (CRLF and bare LF alike) and the final terminator;
    the lines are rejoined with CRLF and one CRLF is appended, which reproduces CRLF-clean
    messages exactly and nothing else. C{workdir} is unused; it keeps the signature uniform.
    """
    try:
        client = poplib.POP3(host, port, timeout=timeout)
    except OSError as e:
        raise ClientFailed(f"poplib could not connect: {e!r}") from e
    try:
        client.user(user)
        client.pass_(password)
        _, listing, _ = client.list()
        messages = []
        for line in listing:
            _, lines, _ = client.retr(int(line.split()[0]))
            messages.append(b"\r\n".join(lines) + b"\r\n")
        client.quit()
    except (poplib.error_proto, OSError) as e:
        # OSError includes the socket timeout of a server that stops answering.
        raise ClientFailed(f"poplib: {e!r}") from e
    finally:
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
