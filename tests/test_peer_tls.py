"""
Prove the TLS test peers work, before popproxy is put between them: the generated
certificates verify exactly where they should, the TLS Dovecot offers verified STLS and
POP3S, the raw client speaks both, and every real client fetches byte for byte in every TLS
mode and login method it supports, directly from Dovecot with verification on, and refuses
a certificate for the wrong host, a self-signed one and an expired one.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.endpoints import clientFromString
from twisted.internet.testing import MemoryReactor

from tests.corpus import clientSafe, crlfClean
from tests.peers.certs import (
    WRONG_HOSTNAME,
    GeneratedCertificates,
    ServerCertificate,
    TlsMode,
    clientTlsContext,
    writeCaDirectory,
)
from tests.peers.clients import (
    CLIENT_AUTH_METHODS,
    CLIENT_TLS_MODES,
    CLIENTS,
    ClientFailed,
    ClientModeUnsupported,
    fetchWithFetchmail,
    fetchWithGetmail,
    fetchWithMpop,
    fetchWithPoplib,
    stripClientHeaders,
)
from tests.peers.dovecot import (
    DovecotMailbox,
    DovecotServer,
    Pop3ErrorResponse,
    Pop3ProtocolError,
    RawPop3Client,
    fetchMailbox,
)

DovecotFactory = Callable[[ServerCertificate], DovecotServer]

REPOSITORY = Path(__file__).resolve().parent.parent

CLIENT_TIMEOUT = 15.0

# Every message of the corpus that all clients reproduce, but the 1.5 MB one: small and fast,
# and still with a 40 KB attachment that spans several TLS records.
SMALL_MAILBOX = [message for message in clientSafe() if len(message) < 100_000]

# What each client says when it refuses each bad certificate: proof that it failed for
# that reason and not, say, because its configuration was wrong.
REFUSALS = {
    "wrongHost": {
        "fetchmail": "Server certificate verification error: hostname mismatch",
        "getmail": "hostname 'localhost' doesn't match 'wrong.example'",
        "mpop": "The name in the certificate does not match the expected",
        "curl": "no alternative certificate subject name matches target host name 'localhost'",
        "poplib": "Hostname mismatch, certificate is not valid for 'localhost'",
    },
    "selfSigned": {
        "fetchmail": "Server certificate verification error: self-signed certificate",
        "getmail": "certificate verify failed: self-signed certificate",
        "mpop": "The certificate issuer is unknown",
        "curl": "SSL certificate problem: self-signed certificate",
        "poplib": "certificate verify failed: self-signed certificate",
    },
    "expired": {
        "fetchmail": "Server certificate verification error: certificate has expired",
        "getmail": "certificate verify failed: certificate has expired",
        "mpop": "The certificate chain uses expired certificate",
        "curl": "SSL certificate problem: certificate has expired",
        "poplib": "certificate verify failed: certificate has expired",
    },
}

# What each client says when STLS is required but the server does not offer it.
NO_STLS = {
    "fetchmail": "upgrade to TLS failed",
    "mpop": "the POP3 server does not support TLS via the STLS command",
    "curl": "STLS not supported",
    "poplib": "STLS not supported by server",
}

# The AUTH mechanism Dovecot logs for each login method (USER/PASS is logged as PLAIN).
DOVECOT_METHOD = {"user": "PLAIN", "plain": "PLAIN", "login": "LOGIN", "apop": "APOP"}

# Where a client's transcript shows the commands it sent, relative to its workdir.
TRANSCRIPTS = {
    "fetchmail": "fetchmail/fetchmail.log",
    "mpop": "mpop/mpop.log",
    "curl": "curl/curl-list.log",
}
COMMAND_SENT = {"user": "> USER ", "plain": "> AUTH PLAIN", "login": "> AUTH LOGIN"}
COMMAND_SENT["apop"] = "> APOP "


def portFor(mailbox: DovecotMailbox, tls: TlsMode | None) -> int:
    """The Dovecot port for C{tls}: POP3S for implicit TLS, else the STLS-capable one."""
    if tls == "implicit":
        assert mailbox.pop3sPort is not None
        return mailbox.pop3sPort
    return mailbox.port


def logins(mailbox: DovecotMailbox) -> list[tuple[str, str]]:
    """
    Return (mechanism, "TLS" or "plain") for each login of the mailbox's user, from the log.

    Dovecot marks a login made over TLS with C{TLS} and a plain one on loopback with
    C{secured}.
    """
    found = []
    pattern = rf"Login: user=<{re.escape(mailbox.user)}>, method=([A-Z0-9-]+), (.*)"
    for match in re.finditer(pattern, mailbox.log()):
        fields = match.group(2).split(", ")
        found.append((match.group(1), "TLS" if "TLS" in fields else "plain"))
    return found


def filled(mailbox: DovecotMailbox, messages: list[bytes] = SMALL_MAILBOX) -> DovecotMailbox:
    for message in messages:
        mailbox.deliver(message)
    return mailbox


def handshakeInMemory(server: ServerCertificate, caFile: Path, hostname: str) -> None:
    """
    Run a TLS handshake between Python's ssl on both sides, through memory buffers only.

    @raise ssl.SSLCertVerificationError: if the client refuses the server's certificate.
    """
    serverContext = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serverContext.load_cert_chain(server.keyAndChain)
    clientIn, clientOut, serverIn, serverOut = (ssl.MemoryBIO() for _ in range(4))
    clientSide = clientTlsContext(caFile).wrap_bio(clientIn, clientOut, server_hostname=hostname)
    serverSide = serverContext.wrap_bio(serverIn, serverOut, server_side=True)
    finished = [False, False]
    for _ in range(10):
        for number, side in enumerate((clientSide, serverSide)):
            if not finished[number]:
                try:
                    side.do_handshake()
                    finished[number] = True
                except ssl.SSLWantReadError:
                    pass
        serverIn.write(clientOut.read())
        clientIn.write(serverOut.read())
        if all(finished):
            return
    raise AssertionError("the in-memory handshake did not finish")


@pytest.mark.parametrize(
    ("certificate", "hostname", "refusal"),
    [
        ("localhost", "localhost", None),
        ("localhost", "127.0.0.1", None),
        ("localhost", "::1", None),
        ("localhost", WRONG_HOSTNAME, "Hostname mismatch"),
        ("wrongHost", WRONG_HOSTNAME, None),
        ("wrongHost", "localhost", "Hostname mismatch"),
        ("selfSigned", "localhost", "self-signed certificate"),
        ("expired", "localhost", "certificate has expired"),
    ],
)
def test_certificatesVerifyExactlyWhereTheyShould(
    testCertificates: GeneratedCertificates,
    certificate: str,
    hostname: str,
    refusal: str | None,
) -> None:
    """
    A client trusting only the test CA accepts the localhost certificate for localhost
    and its IP addresses, the wrong-host one only for its own name, and refuses the
    self-signed and the expired one; each with the reason a user would see.
    """
    server = getattr(testCertificates, certificate)
    if refusal is None:
        handshakeInMemory(server, testCertificates.caFile, hostname)
    else:
        with pytest.raises(ssl.SSLCertVerificationError, match=refusal):
            handshakeInMemory(server, testCertificates.caFile, hostname)


def test_certificateFiles(testCertificates: GeneratedCertificates, tmp_path: Path) -> None:
    """
    Keys are private to their owner, chains hold the certificate then its CA, the CA
    directory holds only ca.pem and Twisted's tls: endpoint loads it as trustRoots.
    """
    good = testCertificates.localhost
    for keyFile in (good.privateKey, good.keyAndChain):
        assert keyFile.stat().st_mode & 0o077 == 0
    assert good.chain.read_bytes() == (
        good.certificate.read_bytes() + testCertificates.caFile.read_bytes()
    )
    assert testCertificates.selfSigned.chain.read_bytes() == (
        testCertificates.selfSigned.certificate.read_bytes()
    )
    assert good.keyAndChain.read_bytes() == good.privateKey.read_bytes() + good.chain.read_bytes()
    assert [entry.name for entry in testCertificates.caDirectory.iterdir()] == ["ca.pem"]
    assert (testCertificates.caDirectory / "ca.pem").read_bytes() == (
        testCertificates.caFile.read_bytes()
    )
    clientFromString(
        MemoryReactor(), f"tls:localhost:995:trustRoots={testCertificates.caDirectory}"
    )
    (tmp_path / "other.pem").write_text("not only the CA")
    with pytest.raises(ValueError):
        writeCaDirectory(testCertificates.caFile, tmp_path)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_opensslVerifiesDovecot(
    tls: TlsMode,
    dovecotTls: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    dovecotWithCertificate: DovecotFactory,
) -> None:
    """
    openssl s_client, trusting only the test CA, verifies the TLS Dovecot for localhost
    on both ports (STLS and POP3S), and refuses one presenting the wrong-host certificate.
    """

    def sClient(mailbox: DovecotMailbox) -> subprocess.CompletedProcess[str]:
        command = ["openssl", "s_client", "-connect", f"127.0.0.1:{portFor(mailbox, tls)}"]
        if tls == "starttls":
            command += ["-starttls", "pop3"]
        command += ["-CAfile", str(testCertificates.caFile), "-verify_hostname", "localhost"]
        command += ["-verify_return_error", "-brief"]
        return subprocess.run(
            command, input="QUIT\r\n", capture_output=True, text=True, timeout=10, check=False
        )

    good = sClient(dovecotTls)
    assert good.returncode == 0, good.stderr
    assert "Verification: OK" in good.stderr
    assert "Verified peername: localhost" in good.stderr
    wrong = sClient(dovecotWithCertificate(testCertificates.wrongHost).createMailbox())
    assert wrong.returncode != 0
    assert "Verification: OK" not in wrong.stderr


def test_rawClientFetchesOverTls(
    dovecotTls: DovecotMailbox, testCertificates: GeneratedCertificates
) -> None:
    """
    The raw client reads the same exact bytes over POP3S and after STLS as over plain
    TCP, a 1.5 MB message included, and Dovecot logs both TLS logins as TLS.
    """
    filled(dovecotTls, crlfClean())
    context = clientTlsContext(testCertificates.caFile)
    plain = fetchMailbox("127.0.0.1", dovecotTls.port, dovecotTls.user, dovecotTls.password)
    for tls in ("implicit", "starttls"):
        overTls = fetchMailbox(
            "127.0.0.1",
            portFor(dovecotTls, tls),
            dovecotTls.user,
            dovecotTls.password,
            tls=tls,
            tlsContext=context,
            serverHostname="localhost",
        )
        assert overTls == plain
    assert [message.data for message in plain] == crlfClean()
    assert logins(dovecotTls) == [("PLAIN", "plain"), ("PLAIN", "TLS"), ("PLAIN", "TLS")]


def test_rawClientStls(dovecotTls: DovecotMailbox, testCertificates: GeneratedCertificates) -> None:
    """
    After STLS the raw client speaks TLS 1.2+ with the localhost certificate, CAPA no
    longer offers STLS, and AUTH PLAIN (with and without initial response) and APOP log in.
    """
    filled(dovecotTls, SMALL_MAILBOX[:1])
    context = clientTlsContext(testCertificates.caFile)
    for login in ("authPlain", "authPlainContinued", "apop"):
        with RawPop3Client("127.0.0.1", dovecotTls.port) as client:
            assert b"STLS" in client.capabilities()
            assert client.tlsVersion() is None
            assert client.stls(context, "localhost").startswith(b"+OK")
            assert client.tlsVersion() in ("TLSv1.2", "TLSv1.3")
            assert client.peerCertificate() == ssl.PEM_cert_to_DER_cert(
                testCertificates.localhost.certificate.read_text()
            )
            assert b"STLS" not in client.capabilities()
            if login == "apop":
                client.apop(dovecotTls.user, dovecotTls.password)
            else:
                client.authPlain(
                    dovecotTls.user,
                    dovecotTls.password,
                    initialResponse=login == "authPlain",
                )
            assert client.retrieve(1) == SMALL_MAILBOX[0]
            client.quit()
    assert logins(dovecotTls) == [("PLAIN", "TLS"), ("PLAIN", "TLS"), ("APOP", "TLS")]


def test_rawClientRefusesBadCertificates(
    testCertificates: GeneratedCertificates, dovecotWithCertificate: DovecotFactory
) -> None:
    """
    The raw client's implicit TLS and STLS refuse a certificate for another host, and a
    wrong password over TLS is still an ordinary -ERR.
    """
    mailbox = dovecotWithCertificate(testCertificates.wrongHost).createMailbox()
    context = clientTlsContext(testCertificates.caFile)
    with pytest.raises(ssl.SSLCertVerificationError):
        RawPop3Client(
            "127.0.0.1",
            portFor(mailbox, "implicit"),
            tlsContext=context,
            serverHostname="localhost",
        )
    with RawPop3Client("127.0.0.1", mailbox.port) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.stls(context, "localhost")
    with RawPop3Client(
        "127.0.0.1", portFor(mailbox, "implicit"), tlsContext=context, serverHostname=WRONG_HOSTNAME
    ) as client:
        client.okCommand(f"USER {mailbox.user}".encode())
        with pytest.raises(Pop3ErrorResponse):
            client.okCommand(b"PASS wrong")
    assert logins(mailbox) == []


def test_rawClientRefusesBytesAfterStlsReply(testCertificates: GeneratedCertificates) -> None:
    """
    A server that sends more after its STLS +OK, before the handshake, is refused by the
    raw client instead of having those bytes read as if they came through TLS.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(5)
                connection.sendall(b"+OK ready\r\n")
                connection.recv(100)
                connection.sendall(b"+OK Begin TLS\r\n+OK injected\r\n")
                connection.recv(100)

        server = threading.Thread(target=serve)
        server.start()
        try:
            with RawPop3Client("127.0.0.1", listener.getsockname()[1], timeout=5) as client:
                with pytest.raises(Pop3ProtocolError, match="injected"):
                    client.stls(clientTlsContext(testCertificates.caFile), "localhost")
        finally:
            server.join(10)
    assert not server.is_alive()


@pytest.mark.parametrize(
    ("clientName", "tls"),
    [(name, tls) for name in sorted(CLIENTS) for tls in CLIENT_TLS_MODES[name]],
    ids=lambda value: str(value).lower() if value is None else str(value),
)
def test_clientFetchesInEveryTlsMode(
    clientName: str,
    tls: TlsMode | None,
    dovecotTls: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    tmp_path: Path,
) -> None:
    """
    Each real client, in each TLS mode it has (plain, implicit, STLS), fetches the whole
    mailbox from the TLS Dovecot byte for byte, verifying the certificate for localhost;
    Dovecot saw exactly one login, over TLS when TLS was asked for and plain when not (no
    client upgrades on its own), and deleted nothing.
    """
    filled(dovecotTls)
    delivered = CLIENTS[clientName](
        "127.0.0.1",
        portFor(dovecotTls, tls),
        dovecotTls.user,
        dovecotTls.password,
        tmp_path,
        timeout=CLIENT_TIMEOUT,
        tls=tls,
        caFile=testCertificates.caFile,
    )
    assert [stripClientHeaders(message, clientName) for message in delivered] == SMALL_MAILBOX
    channels = {login[1] for login in logins(dovecotTls)}
    assert channels == {"plain" if tls is None else "TLS"}
    assert dovecotTls.messagesOnServer() == len(SMALL_MAILBOX)


@pytest.mark.parametrize(
    ("clientName", "auth"),
    [(name, auth) for name in sorted(CLIENTS) for auth in CLIENT_AUTH_METHODS[name]],
)
def test_clientLoginMethods(
    clientName: str,
    auth: str,
    dovecotTls: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    tmp_path: Path,
) -> None:
    """
    Each login method a client can be told to use (USER/PASS, AUTH PLAIN, AUTH LOGIN,
    APOP) is the one Dovecot sees and, where the client keeps a transcript, the command it
    sent, over implicit TLS. mpop is the exception: it refuses APOP with Dovecot's
    timestamps (they hold a '='), and says so.
    """
    filled(dovecotTls, SMALL_MAILBOX[:1])
    fetch = CLIENTS[clientName]

    def run() -> list[bytes]:
        return fetch(
            "127.0.0.1",
            portFor(dovecotTls, "implicit"),
            dovecotTls.user,
            dovecotTls.password,
            tmp_path,
            timeout=CLIENT_TIMEOUT,
            tls="implicit",
            caFile=testCertificates.caFile,
            auth=auth,
        )

    if (clientName, auth) == ("mpop", "apop"):
        with pytest.raises(ClientFailed, match="does not support authentication method APOP"):
            run()
        assert logins(dovecotTls) == []
        return
    delivered = run()
    assert [stripClientHeaders(message, clientName) for message in delivered] == SMALL_MAILBOX[:1]
    assert {login[0] for login in logins(dovecotTls)} == {DOVECOT_METHOD[auth]}
    if clientName in TRANSCRIPTS:
        assert COMMAND_SENT[auth] in (tmp_path / TRANSCRIPTS[clientName]).read_text()


def test_curlDefaultsToAuthPlain(
    dovecotTls: DovecotMailbox, testCertificates: GeneratedCertificates, tmp_path: Path
) -> None:
    """
    Told nothing about the login, curl uses SASL AUTH PLAIN once CAPA offers it (after
    STLS here), never USER/PASS.
    """
    filled(dovecotTls, SMALL_MAILBOX[:1])
    CLIENTS["curl"](
        "127.0.0.1",
        dovecotTls.port,
        dovecotTls.user,
        dovecotTls.password,
        tmp_path,
        timeout=CLIENT_TIMEOUT,
        tls="starttls",
        caFile=testCertificates.caFile,
    )
    transcript = (tmp_path / TRANSCRIPTS["curl"]).read_text()
    assert "> AUTH PLAIN" in transcript and "> USER " not in transcript
    assert logins(dovecotTls) == [("PLAIN", "TLS"), ("PLAIN", "TLS")]


def test_poplibApopAgainstDovecot(dovecotTls: DovecotMailbox, tmp_path: Path) -> None:
    """
    poplib's apop() logs in to Dovecot over plain TCP: its passwd-file holds {PLAIN}
    passwords, APOP is among its mechanisms, and plaintext logins are allowed.
    """
    config = subprocess.run(
        ["doveconf", "-c", str(dovecotTls.server.configPath), "-h", "auth_mechanisms"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert "apop" in config.split()
    plaintext = subprocess.run(
        ["doveconf", "-c", str(dovecotTls.server.configPath), "-h", "disable_plaintext_auth"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert plaintext.strip() == "no"
    filled(dovecotTls, SMALL_MAILBOX[:2])
    delivered = fetchWithPoplib(
        "127.0.0.1", dovecotTls.port, dovecotTls.user, dovecotTls.password, tmp_path, auth="apop"
    )
    assert delivered == SMALL_MAILBOX[:2]
    assert logins(dovecotTls) == [("APOP", "plain")]


@pytest.mark.parametrize(
    ("clientName", "tls", "certificate"),
    [
        (name, tls, certificate)
        for name in sorted(CLIENTS)
        for tls in CLIENT_TLS_MODES[name]
        if tls is not None
        for certificate in REFUSALS
    ],
)
def test_clientRefusesBadCertificate(
    clientName: str,
    tls: TlsMode,
    certificate: str,
    testCertificates: GeneratedCertificates,
    dovecotWithCertificate: DovecotFactory,
    tmp_path: Path,
) -> None:
    """
    Each client, in each TLS mode, fails against a Dovecot presenting a certificate for
    the wrong host, a self-signed one or an expired one, before logging in, and says why.
    """
    server = dovecotWithCertificate(getattr(testCertificates, certificate))
    mailbox = filled(server.createMailbox(), SMALL_MAILBOX[:1])
    with pytest.raises(ClientFailed, match=re.escape(REFUSALS[certificate][clientName])):
        CLIENTS[clientName](
            "127.0.0.1",
            portFor(mailbox, tls),
            mailbox.user,
            mailbox.password,
            tmp_path,
            timeout=CLIENT_TIMEOUT,
            tls=tls,
            caFile=testCertificates.caFile,
        )
    assert logins(mailbox) == []
    assert "auth failed" not in mailbox.log()


@pytest.mark.parametrize(
    "clientName", [name for name in sorted(CLIENTS) if "starttls" in CLIENT_TLS_MODES[name]]
)
def test_clientRequiresStls(
    clientName: str,
    dovecot: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    tmp_path: Path,
) -> None:
    """
    Asked for STLS, each client fails against a server that does not offer it (the
    plain Dovecot) instead of logging in without TLS.
    """
    filled(dovecot, SMALL_MAILBOX[:1])
    with pytest.raises(ClientFailed, match=re.escape(NO_STLS[clientName])):
        CLIENTS[clientName](
            "127.0.0.1",
            dovecot.port,
            dovecot.user,
            dovecot.password,
            tmp_path,
            timeout=CLIENT_TIMEOUT,
            tls="starttls",
            caFile=testCertificates.caFile,
        )
    assert logins(dovecot) == []


def test_unsupportedCombinationsRefused(
    testCertificates: GeneratedCertificates, tmp_path: Path
) -> None:
    """
    What a client cannot do is refused before it runs, not silently done otherwise:
    getmail6 STLS, fetchmail APOP with STLS (it would skip STLS), a login method the
    client cannot be told to use, and TLS without a CA to verify against.
    """
    arguments = ("127.0.0.1", 1, "user", "password", tmp_path)
    caFile = testCertificates.caFile
    with pytest.raises(ClientModeUnsupported, match="getmail"):
        fetchWithGetmail(*arguments, tls="starttls", caFile=caFile)
    with pytest.raises(ClientModeUnsupported, match="STLS"):
        fetchWithFetchmail(*arguments, tls="starttls", caFile=caFile, auth="apop")
    with pytest.raises(ClientModeUnsupported, match="plain"):
        fetchWithPoplib(*arguments, auth="plain")
    with pytest.raises(ValueError, match="caFile"):
        fetchWithMpop(*arguments, tls="implicit")
    with pytest.raises(ValueError):
        fetchWithMpop(*arguments, tls="sometimes", caFile=caFile)  # type: ignore[arg-type]


def test_failedTestReportShowsTlsDovecotLog(tmp_path: Path) -> None:
    """
    A failing test that uses the dovecotTls fixture gets that Dovecot's log in its report,
    TLS login included, and the plain Dovecot is not started for it.
    """
    (tmp_path / "test_inner.py").write_text(
        "from tests.peers.certs import clientTlsContext\n"
        "from tests.peers.dovecot import fetchDirect\n"
        "\n"
        "def test_fails(dovecotTls, testCertificates):\n"
        "    fetchDirect('127.0.0.1', dovecotTls.pop3sPort, dovecotTls.user, dovecotTls.password,\n"
        "        tls='implicit', tlsContext=clientTlsContext(testCertificates.caFile),\n"
        "        serverHostname='localhost')\n"
        "    assert False\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.peers.fixtures", "-p", "no:cacheprovider"]
        + [f"--basetemp={tmp_path / 'basetemp'}", "test_inner.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "dovecot log since user1 was created" in result.stdout
    assert re.search(r"Login: user=<user1>, method=PLAIN, .*, TLS, ", result.stdout)
    assert not (tmp_path / "basetemp" / "dovecot0").exists()
    assert (tmp_path / "basetemp" / "dovecotTls0" / "dovecot.log").exists()
