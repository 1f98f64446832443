"""
End-to-end: the reference deployment of docs/scaling.md on loopback.  A real
HAProxy takes the clients and sends each connection, with a PROXY v2 header,
to one of two `twistd -n popproxy` instances listening with `haproxy:`; they
pass the client's address on to a real Dovecot (`client_address =
"proxy-v2"`).  Test clients connect to HAProxy from 127.0.0.2.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.clients import CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox, DovecotServer, RawPop3Client
from tests.peers.haproxy import HaproxyBalancer
from tests.peers.proxy import ProxyProcess

CLIENT = "127.0.0.2"
TIMEOUT = 15.0

MESSAGES = [
    b"From: a@example.test\r\nSubject: one\r\n\r\nFirst.\r\n",
    b"From: b@example.test\r\nSubject: two\r\n\r\n.A line starting with a dot.\r\n..\r\n.\r\n",
    b"From: c@example.test\r\nSubject: three\r\n\r\n" + b"x" * 70 + b"\r\n" * 2000,
]


def instanceConfig(upstreamPort: int) -> str:
    """
    One popproxy instance of the deployment: behind the balancer (a
    `haproxy:` listener), passing the client's address to Dovecot.
    """
    return "\n".join(
        [
            "[proxy]",
            'listen = ["haproxy:tcp:{PORT}:interface=127.0.0.1"]',
            "login_failure_delay = 0",
            "[upstream]",
            f'default = "tcp:127.0.0.1:{upstreamPort}"',
            'client_address = "proxy-v2"',
        ]
    )


@pytest.fixture
def deployment(
    dovecotClientAddressServer: DovecotServer,
    popproxyFactory: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Any:
    """
    HAProxy in front of two popproxy instances in front of Dovecot; the
    balancer's log is printed if the test failed.
    """
    port = dovecotClientAddressServer.haproxyPort
    assert port is not None
    instances = [popproxyFactory(instanceConfig(port)) for _ in range(2)]
    directory = tmp_path / "haproxy"
    directory.mkdir()
    balancer = HaproxyBalancer(directory, [("s1", instances[0].port), ("s2", instances[1].port)])
    balancer.start()
    yield balancer, instances
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
        found = [proxy for proxy in instances if user in proxy.log()]
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
    balancer, instances = deployment
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
    balancer, instances = deployment
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
