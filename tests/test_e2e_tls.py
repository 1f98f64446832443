"""
End-to-end TLS and logins through `twistd -n popproxy`: verified TLS to a
real Dovecot (STLS and implicit), refusal of bad upstream certificates with
no credential sent, TLS towards real clients in every mode they support,
AUTH PLAIN (curl) and APOP (poplib), STARTTLS command injection, and
require = "auto" behind a haproxy: listener.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import clientSafe
from tests.peers.certs import GeneratedCertificates, clientTlsContext
from tests.peers.clients import CLIENT_TLS_MODES, CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox, RawPop3Client, fetchMailbox

SMALL = clientSafe()[:3]


def logins(mailbox: DovecotMailbox) -> list[tuple[str, str]]:
    """
    (mechanism, "TLS" or "plain") for each login of the mailbox's user.
    """
    found = []
    pattern = rf"Login: user=<{re.escape(mailbox.user)}>, method=([A-Z0-9-]+), (.*)"
    for match in re.finditer(pattern, mailbox.log()):
        found.append((match.group(1), "TLS" if "TLS" in match.group(2).split(", ") else "plain"))
    return found


def proxyConfig(upstream: str, *extra: str) -> str:
    return "\n".join(
        [
            "[proxy]",
            'listen = ["tcp:{PORT}:interface=127.0.0.1"]',
            "login_failure_delay = 0",
            "[upstream]",
            f'default = "{upstream}"',
            *extra,
        ]
    )


def filled(mailbox: DovecotMailbox) -> DovecotMailbox:
    for message in SMALL:
        mailbox.deliver(message)
    return mailbox


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_verifiedUpstreamTls(
    mode: str,
    dovecotTls: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    popproxyFactory: Any,
) -> None:
    """
    With tls = starttls or implicit and the test CA, the proxy logs in to
    Dovecot over verified TLS (Dovecot logs the login as TLS) and relays
    every message byte for byte.
    """
    mailbox = filled(dovecotTls)
    port = mailbox.port if mode == "starttls" else mailbox.pop3sPort
    proxy = popproxyFactory(
        proxyConfig(
            f"tcp:localhost:{port}", f'tls = "{mode}"', f'ca_file = "{testCertificates.caFile}"'
        )
    )
    through = fetchMailbox("127.0.0.1", proxy.port, mailbox.user, mailbox.password)
    assert [m.data for m in through] == SMALL
    assert logins(mailbox) == [("PLAIN", "TLS")]


def test_twistedTlsEndpoint(
    dovecotTls: DovecotMailbox, testCertificates: GeneratedCertificates, popproxyFactory: Any
) -> None:
    """
    A Twisted tls: endpoint string with trustRoots= is implicit TLS too.
    """
    mailbox = filled(dovecotTls)
    proxy = popproxyFactory(
        proxyConfig(f"tls:localhost:{mailbox.pop3sPort}:trustRoots={testCertificates.caDirectory}")
    )
    through = fetchMailbox("127.0.0.1", proxy.port, mailbox.user, mailbox.password)
    assert [m.data for m in through] == SMALL
    assert logins(mailbox) == [("PLAIN", "TLS")]


@pytest.mark.parametrize("certificate", ["wrongHost", "selfSigned", "expired"])
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_badUpstreamCertificateRefused(
    certificate: str,
    mode: str,
    dovecotWithCertificate: Any,
    testCertificates: GeneratedCertificates,
    popproxyFactory: Any,
) -> None:
    """
    An upstream whose certificate has the wrong name, is self-signed or
    expired is refused: the client gets -ERR [SYS/PERM] and Dovecot never
    sees a login attempt (no credential crossed in clear or otherwise).
    """
    server = dovecotWithCertificate(getattr(testCertificates, certificate))
    mailbox = server.createMailbox()
    port = server.port if mode == "starttls" else server.pop3sPort
    proxy = popproxyFactory(
        proxyConfig(
            f"tcp:localhost:{port}", f'tls = "{mode}"', f'ca_file = "{testCertificates.caFile}"'
        )
    )
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        reply = client.command(f"USER {mailbox.user}".encode())
    assert reply.startswith(b"-ERR [SYS/PERM] "), reply
    assert "Login:" not in mailbox.log() and "auth failed" not in mailbox.log()
    assert mailbox.user not in mailbox.log()


def test_upstreamWithoutStls(
    dovecot: DovecotMailbox, testCertificates: GeneratedCertificates, popproxyFactory: Any
) -> None:
    """
    tls = starttls towards an upstream that offers no STLS (the plain test
    Dovecot) is refused with [SYS/PERM]; the user name never reaches it.
    """
    proxy = popproxyFactory(
        proxyConfig(
            f"tcp:localhost:{dovecot.port}",
            'tls = "starttls"',
            f'ca_file = "{testCertificates.caFile}"',
        )
    )
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        reply = client.command(f"USER {dovecot.user}".encode())
    assert reply.startswith(b"-ERR [SYS/PERM] the mail server refused STLS")
    assert dovecot.user not in dovecot.log()


def clientSideConfig(
    upstreamPort: int, certificates: GeneratedCertificates, tlsPort: int, *extra: str
) -> str:
    server = certificates.localhost
    return proxyConfig(
        f"tcp:127.0.0.1:{upstreamPort}",
        "[tls]",
        f'certificate = "{server.chain}"',
        f'key = "{server.privateKey}"',
        f'listen = ["tcp:{tlsPort}:interface=127.0.0.1"]',
        *extra,
    )


CLIENT_MODES = [
    (client, mode) for client in sorted(CLIENTS) for mode in CLIENT_TLS_MODES[client] if mode
]


@pytest.mark.parametrize(("client", "mode"), CLIENT_MODES)
def test_clientsOverTls(
    client: str,
    mode: str,
    dovecot: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    popproxyFactory: Any,
    tmp_path: Path,
) -> None:
    """
    Every real client, in every TLS mode it supports (implicit TLS on the
    proxy's 995-style listener, STLS on its plain one), verifies the proxy's
    certificate and retrieves the mailbox byte for byte.
    """
    from tests.peers.ports import freePort

    mailbox = filled(dovecot)
    tlsPort = freePort()
    proxy = popproxyFactory(clientSideConfig(mailbox.port, testCertificates, tlsPort))
    port = tlsPort if mode == "implicit" else proxy.port
    received = CLIENTS[client](
        "127.0.0.1",
        port,
        mailbox.user,
        mailbox.password,
        tmp_path,
        tls=mode,
        caFile=testCertificates.caFile,
    )
    assert [stripClientHeaders(m, client) for m in received] == SMALL


def test_curlAuthPlainThroughProxy(
    dovecot: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    popproxyFactory: Any,
    tmp_path: Path,
) -> None:
    """
    curl logs in with AUTH PLAIN as soon as CAPA shows SASL PLAIN; the proxy
    relays it (Dovecot offers SASL PLAIN) and the mail arrives intact.
    """
    mailbox = filled(dovecot)
    proxy = popproxyFactory(proxyConfig(f"tcp:127.0.0.1:{mailbox.port}"))
    received = CLIENTS["curl"]("127.0.0.1", proxy.port, mailbox.user, mailbox.password, tmp_path)
    assert received == SMALL
    transcript = (tmp_path / "curl" / "curl-list.log").read_text("utf-8", "replace")
    assert "> AUTH PLAIN" in transcript and "< +OK" in transcript
    assert ("PLAIN", "plain") in logins(mailbox)


def test_poplibApopThroughProxy(
    dovecot: DovecotMailbox, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    poplib's apop() works through a static route: the proxy shows Dovecot's
    timestamp and relays the digest unchanged (Dovecot logs an APOP login).
    """
    mailbox = filled(dovecot)
    proxy = popproxyFactory(proxyConfig(f"tcp:127.0.0.1:{mailbox.port}"))
    received = CLIENTS["poplib"](
        "127.0.0.1", proxy.port, mailbox.user, mailbox.password, tmp_path, auth="apop"
    )
    assert received == SMALL
    assert logins(mailbox) == [("APOP", "plain")]


def test_stlsInjectionThroughRealProxy(
    dovecot: DovecotMailbox, testCertificates: GeneratedCertificates, popproxyFactory: Any
) -> None:
    """
    A USER pipelined behind STLS in the same packet is not executed once
    TLS is up: after the handshake PASS is refused for lack of USER, and
    Dovecot saw no login attempt.
    """
    from tests.peers.ports import freePort

    proxy = popproxyFactory(clientSideConfig(dovecot.port, testCertificates, freePort()))
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.recv(1024)
    sock.sendall(f"STLS\r\nUSER {dovecot.user}\r\n".encode())
    assert sock.recv(1024).startswith(b"+OK")
    context = clientTlsContext(testCertificates.caFile)
    tls = context.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(f"PASS {dovecot.password}\r\n".encode())
    reply = tls.recv(1024)
    tls.close()
    assert reply == b"-ERR send USER first\r\n"
    assert "Login:" not in dovecot.log()


def test_requireTlsBeforeLogin(
    dovecot: DovecotMailbox, testCertificates: GeneratedCertificates, popproxyFactory: Any
) -> None:
    """
    With require = "always", USER before STLS is refused with [AUTH] and
    CAPA does not offer USER; after STLS the login works.
    """
    from tests.peers.ports import freePort

    proxy = popproxyFactory(
        clientSideConfig(dovecot.port, testCertificates, freePort(), 'require = "always"')
    )
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        assert b"USER\r\n" not in b"".join(client.multiline(b"CAPA"))
        assert client.command(b"USER x").startswith(b"-ERR [AUTH] ")
        client.stls(clientTlsContext(testCertificates.caFile), "localhost")
        assert b"USER\r\n" in b"".join(client.multiline(b"CAPA"))
        client.login(dovecot.user, dovecot.password)
        client.quit()


def test_requireAutoBehindHaproxy(
    rawPop3: Any, testCertificates: GeneratedCertificates, popproxyFactory: Any
) -> None:
    """
    Through a real `haproxy:` listener on loopback with a certificate and
    require = "auto": a v2 header claiming 127.0.0.1 as destination for a
    remote client does not exempt it (CAPA offers STLS and no USER, USER is
    refused); a v2 header whose SSL TLV says the balancer terminated TLS
    lets the client log in without STLS (CAPA offers USER, not STLS) and
    fetch its mail; a plain loopback client on a tcp: listener of the same
    proxy still logs in without TLS.
    """
    from tests.peers.ports import freePort
    from tests.test_proxyheader import PP2_CLIENT_SSL, readUntil, sslTLV, tlv, v2TCP4

    message = b"Subject: hi\r\n\r\nbody\r\n"
    server = rawPop3(messages=[message], user="u", password="p")
    plainPort = freePort()
    certificate = testCertificates.localhost
    proxy = popproxyFactory(
        "\n".join(
            [
                "[proxy]",
                'listen = ["haproxy:tcp:{PORT}:interface=127.0.0.1",'
                f' "tcp:{plainPort}:interface=127.0.0.1"]',
                "login_failure_delay = 0",
                "[upstream]",
                f'default = "tcp:127.0.0.1:{server.port}"',
                "[tls]",
                f'certificate = "{certificate.chain}"',
                f'key = "{certificate.privateKey}"',
                'require = "auto"',
            ]
        )
    )

    def session(port: int, header: bytes) -> tuple[socket.socket, bytearray]:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(header)
        buffer = bytearray()
        assert readUntil(sock, buffer, b"\r\n").startswith(b"+OK")
        return sock, buffer

    def capa(sock: socket.socket, buffer: bytearray) -> list[bytes]:
        sock.sendall(b"CAPA\r\n")
        return readUntil(sock, buffer, b"\r\n.\r\n").split(b"\r\n")[1:-2]

    claimed = v2TCP4("203.0.113.7", "127.0.0.1", 51234, 110)
    sock, buffer = session(proxy.port, claimed)
    with sock:
        lines = capa(sock, buffer)
        assert b"STLS" in lines and b"USER" not in lines
        sock.sendall(b"USER u\r\n")
        refusal = readUntil(sock, buffer, b"\r\n")
        assert refusal == b"-ERR [AUTH] TLS is required first: use STLS\r\n"

    terminated = v2TCP4(
        "203.0.113.8", "192.0.2.10", 51235, 995, sslTLV(PP2_CLIENT_SSL, 0, tlv(0x21, b"TLSv1.3"))
    )
    sock, buffer = session(proxy.port, terminated)
    with sock:
        lines = capa(sock, buffer)
        assert b"STLS" not in lines and b"USER" in lines
        sock.sendall(b"STLS\r\n")
        assert readUntil(sock, buffer, b"\r\n") == b"-ERR TLS is already active\r\n"
        sock.sendall(b"USER u\r\nPASS p\r\nRETR 1\r\n")
        assert readUntil(sock, buffer, b"+OK logged in\r\n").startswith(b"+OK")
        assert readUntil(sock, buffer, b"\r\n.\r\n") == b"+OK %d octets\r\n%s.\r\n" % (
            len(message),
            message,
        )
        sock.sendall(b"QUIT\r\n")
        assert readUntil(sock, buffer, b"\r\n").startswith(b"+OK")

    sock, buffer = session(plainPort, b"")
    with sock:
        sock.sendall(b"USER u\r\nPASS p\r\n")
        assert readUntil(sock, buffer, b"+OK logged in\r\n").startswith(b"+OK")

    log = proxy.log()
    assert "opened by 203.0.113.8:51235" in log, log
    assert "TLS terminated by the balancer (TLSv1.3)" in log, log
