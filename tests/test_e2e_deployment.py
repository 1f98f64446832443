"""
End-to-end: the reference deployment of docs/scaling.md on loopback.  A real
HAProxy takes the clients and sends each connection, with a PROXY v2 header,
to one of two `twistd -n popproxy` instances listening with `haproxy:`; they
pass the client's address on to a real Dovecot (`client_address =
"proxy-v2"`), strip attachments into one PostgreSQL quarantine, and keep
their limits in one Redis.  Test clients connect to HAProxy from 127.0.0.2;
the balancer's own address (127.0.0.1, its health checks) is trusted.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.clients import CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox, DovecotServer, RawPop3Client
from tests.peers.haproxy import HaproxyBalancer
from tests.peers.postgres import PostgresDatabase
from tests.peers.proxy import ProxyProcess
from tests.peers.redis import RedisServer

CLIENT = "127.0.0.2"
TIMEOUT = 15.0
PER_ADDRESS = 4
REFUSAL = b"-ERR [SYS/TEMP] too many sessions from your address, try again later\r\n"
EXE = b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAA\r\n"


def withProgram(name: bytes) -> bytes:
    """
    A message with a Windows program attached, which strip removes.
    """
    return (
        b"From: sender@example.test\r\nSubject: a program\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--XX\r\nContent-Type: application/octet-stream; name="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + EXE + b"--XX--\r\n"
    )


MESSAGES = [
    b"From: a@example.test\r\nSubject: one\r\n\r\nFirst.\r\n",
    b"From: b@example.test\r\nSubject: two\r\n\r\n.A line starting with a dot.\r\n..\r\n.\r\n",
    b"From: c@example.test\r\nSubject: three\r\n\r\n" + b"x" * 70 + b"\r\n" * 2000,
]


def instanceConfig(upstreamPort: int, quarantine: str, redis: RedisServer) -> str:
    """
    One popproxy instance of the deployment (docs/scaling.md shows the
    same): behind the balancer (a `haproxy:` listener), passing the
    client's address to Dovecot, quarantining into PostgreSQL, counting
    in Redis; the balancer's address is trusted.
    """
    return "\n".join(
        [
            "[proxy]",
            'listen = ["haproxy:tcp:{PORT}:interface=127.0.0.1"]',
            "login_failure_delay = 0",
            "[upstream]",
            f'default = "tcp:127.0.0.1:{upstreamPort}"',
            'client_address = "proxy-v2"',
            "[tls]",
            'require = "never"',
            "[limits]",
            'trusted_networks = ["127.0.0.1/32"]',
            f"max_sessions_per_address = {PER_ADDRESS}",
            "connection_rate = 1000",
            f'store = "redis://127.0.0.1:{redis.port}/0"',
            "[chain]",
            f'quarantine = "{quarantine}"',
            "[[filter]]",
            'plugin = "strip"',
        ]
    )


def quarantineCli(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    """
    The installed popproxy-quarantine, beside the Python running the tests.
    """
    command = [str(Path(sys.executable).parent / "popproxy-quarantine"), *arguments]
    return subprocess.run(command, capture_output=True, timeout=60)


@pytest.fixture
def deployment(
    dovecotClientAddressServer: DovecotServer,
    popproxyFactory: Any,
    postgres: PostgresDatabase,
    redis: RedisServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Any:
    """
    HAProxy in front of two popproxy instances in front of Dovecot, one
    PostgreSQL quarantine (migrated as an operator would), one Redis; the
    balancer's log is printed if the test failed.
    """
    port = dovecotClientAddressServer.haproxyPort
    assert port is not None
    migrated = quarantineCli("migrate", postgres.url)
    assert migrated.returncode == 0, migrated
    config = instanceConfig(port, postgres.url, redis)
    instances = [popproxyFactory(config) for _ in range(2)]
    directory = tmp_path / "haproxy"
    directory.mkdir()
    balancer = HaproxyBalancer(directory, [("s1", instances[0].port), ("s2", instances[1].port)])
    balancer.start()
    yield balancer, instances, postgres
    balancer.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"--- haproxy log ---\n{balancer.log()}")


def filledMailbox(server: DovecotServer) -> DovecotMailbox:
    mailbox = server.createMailbox()
    for message in MESSAGES:
        mailbox.deliver(message)
    return mailbox


def servedBy(instances: list[ProxyProcess], user: str) -> list[ProxyProcess]:
    """
    The instances whose log shows a login of C{user} (bounded wait).
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [proxy for proxy in instances if f": {user} logged in at " in proxy.log()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_realClientsThroughTheBalancer(
    deployment: Any, dovecotClientAddressServer: DovecotServer, tmp_path: Path
) -> None:
    """
    fetchmail, mpop, getmail and poplib fetch through HAProxy: every message
    arrives byte for byte, both instances served clients, and Dovecot
    logged the client's own address (127.0.0.2, carried from HAProxy's
    header through popproxy's), not the balancer's or the proxy's.
    """
    balancer, instances, _ = deployment
    mailbox = filledMailbox(dovecotClientAddressServer)
    for name in ("fetchmail", "mpop", "getmail", "poplib"):
        received = CLIENTS[name](
            "127.0.0.1", balancer.port, mailbox.user, mailbox.password, tmp_path
        )
        assert [stripClientHeaders(m, name) for m in received] == MESSAGES, name
    with RawPop3Client("127.0.0.1", balancer.port, sourceAddress=CLIENT) as client:
        client.login(mailbox.user, mailbox.password)
        assert client.retrieve(2) == MESSAGES[1]
        client.quit()
    assert mailbox.messagesOnServer() == len(MESSAGES)
    addresses = re.findall(
        rf"Login: user=<{re.escape(mailbox.user)}>, [^\n]*rip=([0-9.]+)", mailbox.log()
    )
    assert addresses[-1] == CLIENT, mailbox.log()
    # Round robin: both instances logged logins of this user.
    assert len(servedBy(instances, mailbox.user)) == 2


def test_instanceKilledMidSession(
    deployment: Any, dovecotClientAddressServer: DovecotServer
) -> None:
    """
    An instance killed (SIGKILL) in the middle of a session, after the
    client's RETR and DELE but before its QUIT: the client's connection
    ends, its retry through the balancer reaches the other instance, and
    every message is still there, byte for byte: nothing was lost or
    deleted (a DELE counts only at QUIT, which never came).
    """
    balancer, instances, _ = deployment
    mailbox = filledMailbox(dovecotClientAddressServer)
    with RawPop3Client("127.0.0.1", balancer.port, sourceAddress=CLIENT) as client:
        client.login(mailbox.user, mailbox.password)
        assert client.retrieve(1) == MESSAGES[0]
        assert client.command(b"DELE 1").startswith(b"+OK")
        (serving,) = servedBy(instances, mailbox.user)
        serving._process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        serving.waitForExit(TIMEOUT)
        with pytest.raises(ConnectionError):
            client.command(b"STAT")
    # The client tries again at once, through the balancer.
    for _ in range(3):
        with RawPop3Client("127.0.0.1", balancer.port, sourceAddress=CLIENT) as client:
            client.login(mailbox.user, mailbox.password)
            assert [client.retrieve(n) for n in (1, 2, 3)] == MESSAGES
            client.quit()
    assert mailbox.messagesOnServer() == len(MESSAGES)


def test_oneQuarantineForBothInstances(
    deployment: Any, dovecotClientAddressServer: DovecotServer
) -> None:
    """
    Two users fetch through the balancer, each served by another instance
    (round robin): strip removed each one's program, and one
    `popproxy-quarantine list` of the shared PostgreSQL names both items,
    each exported as the part that was removed.
    """
    balancer, instances, postgres = deployment
    first, second = (dovecotClientAddressServer.createMailbox() for _ in range(2))
    first.deliver(withProgram(b"first.exe"))
    second.deliver(withProgram(b"second.exe"))
    fetchThrough(balancer.port, first, b"first.exe")
    (servedFirst,) = servedBy(instances, first.user)
    # Round robin sends the next connections to the other instance; health
    # checks and earlier tests' connections may shift it by one.
    for _ in range(4):
        fetchThrough(balancer.port, second, b"second.exe")
        if any(proxy is not servedFirst for proxy in servedBy(instances, second.user)):
            break
    else:
        pytest.fail("the balancer never sent the second user to the other instance")
    users = [first.user, second.user]
    listed = quarantineCli("list", postgres.url)
    assert listed.returncode == 0, listed
    lines = listed.stdout.decode().splitlines()
    assert sorted(line.split()[3] for line in lines) == sorted(users), lines
    parts = set()
    for line in lines:
        exported = quarantineCli("export", postgres.url, line.split()[0])
        assert exported.returncode == 0, exported
        parts.add(exported.stdout)
    assert parts == {removedPart(b"first.exe"), removedPart(b"second.exe")}


def fetchThrough(port: int, mailbox: DovecotMailbox, name: bytes) -> None:
    """
    Retrieve the mailbox's one message through the balancer from CLIENT;
    strip removed the program called C{name}.
    """
    with RawPop3Client("127.0.0.1", port, sourceAddress=CLIENT) as client:
        client.login(mailbox.user, mailbox.password)
        delivered = client.retrieve(1)
        client.quit()
    assert name + b" was removed" in delivered, delivered


def removedPart(name: bytes) -> bytes:
    """
    The part strip removes from L{withProgram}'s message: the attachment's
    own bytes, without the CRLF that belongs to the closing boundary.
    """
    message = withProgram(name)
    return message[message.index(b"Content-Type: application/octet") : message.index(b"\r\n--XX--")]


def greetedThroughBalancer(port: int) -> socket.socket:
    """
    A connection from CLIENT through the balancer that a popproxy greeted.
    """
    client = socket.create_connection(("127.0.0.1", port), TIMEOUT, source_address=(CLIENT, 0))
    assert client.recv(1024).startswith(b"+OK"), "not greeted"
    return client


def test_perAddressLimitAcrossInstances(deployment: Any) -> None:
    """
    The client's address (from HAProxy's header) may hold PER_ADDRESS
    sessions in all: with them open, spread over both instances, the next
    connection through the balancer gets the refusal line, whichever
    instance it reaches; once one closes, a new one is greeted.
    """
    balancer, instances, _ = deployment
    held = [greetedThroughBalancer(balancer.port) for _ in range(PER_ADDRESS)]
    try:
        for _ in range(2):  # one attempt per instance (round robin)
            with socket.create_connection(
                ("127.0.0.1", balancer.port), TIMEOUT, source_address=(CLIENT, 0)
            ) as extra:
                received = b""
                while chunk := extra.recv(1024):
                    received += chunk
                assert received == REFUSAL
        assert all("refused: address" in proxy.log() for proxy in instances), [
            proxy.log() for proxy in instances
        ]
        held.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                held.append(greetedThroughBalancer(balancer.port))
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the freed place was never given again"
                time.sleep(0.1)
    finally:
        for client in held:
            client.close()
