"""
End-to-end tests of the C{[limits]} connection limits with a real twistd
process and a real POP3 upstream on loopback: the connection over the
per-address limit is refused with one line and costs the upstream nothing,
a slowloris client is closed at the command-line deadline, and a client
refused again and again makes a few log lines, not one per refusal.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from tests.peers.rawpop3 import RawPop3Server

PER_ADDRESS = 3
REFUSAL = b"-ERR [SYS/TEMP] too many sessions from your address, try again later\r\n"
TOO_FAST = b"-ERR [SYS/TEMP] too many connections from your address, slow down\r\n"


def limitedConfig(upstreamPort: int, limits: str) -> str:
    return f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
idle_timeout = 300
[upstream]
default = "tcp:127.0.0.1:{upstreamPort}"
[limits]
trusted_networks = []
{limits}
"""


def waitForLog(proxy: Any, text: str, timeout: float = 10.0) -> None:
    """
    Return once the proxy's log contains C{text}.
    """
    deadline = time.monotonic() + timeout
    while text not in proxy.log():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{proxy.log()}"
        time.sleep(0.05)


def readLine(connection: socket.socket) -> bytes:
    """
    One CRLF-terminated line (bounded by the socket's timeout).
    """
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = connection.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def readToEnd(connection: socket.socket) -> bytes:
    """
    Everything until the proxy closes the connection.
    """
    data = b""
    while chunk := connection.recv(4096):
        data += chunk
    return data


def test_connectionOverAddressLimit(
    rawPop3: Callable[..., RawPop3Server], popproxyFactory: Any
) -> None:
    """
    With C{max_sessions_per_address = 3}, three clients on 127.0.0.1 are
    greeted and log in; the fourth gets one C{-ERR [SYS/TEMP]} line and is
    closed, and the upstream saw no connection for it (with
    C{upstream_hold = 0} the proxy connects upstream only for a login
    command, so the upstream's connection count is the logins').  When one
    of the three leaves, a new client logs in.
    """
    server = rawPop3([b"Subject: x\r\n\r\nbody\r\n"], user="alice", password="secret")
    proxy = popproxyFactory(
        limitedConfig(server.port, f"max_sessions_per_address = {PER_ADDRESS}\nupstream_hold = 0")
    )
    # The start-up check's own connection is a session too: wait until it
    # has ended, so the count starts at zero.
    waitForLog(proxy, "session 1 closed")
    clients = [socket.create_connection(("127.0.0.1", proxy.port), 10) for _ in range(PER_ADDRESS)]
    try:
        for client in clients:
            assert readLine(client) == b"+OK popproxy ready\r\n"
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as refused:
            assert readToEnd(refused) == REFUSAL
        for client in clients:
            client.sendall(b"USER alice\r\nPASS secret\r\n")
            assert readLine(client).startswith(b"+OK")
            assert readLine(client).startswith(b"+OK")
        assert server.connectionCount == PER_ADDRESS
        clients[0].sendall(b"QUIT\r\n")
        assert readToEnd(clients[0]).startswith(b"+OK")
        waitForLog(proxy, "closed: client quit")
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as later:
            assert readLine(later) == b"+OK popproxy ready\r\n"
            later.sendall(b"USER alice\r\nPASS secret\r\n")
            assert readLine(later).startswith(b"+OK")
            assert readLine(later).startswith(b"+OK")
    finally:
        for client in clients:
            client.close()
    assert server.connectionCount == PER_ADDRESS + 1
    assert "connection from 127.0.0.1:" in proxy.log()
    assert "refused: address" in proxy.log()


def test_slowlorisClosedAtCommandDeadline(
    rawPop3: Callable[..., RawPop3Server], popproxyFactory: Any
) -> None:
    """
    A client sending one byte every second, never a whole line, is closed
    C{command_deadline} (3 s) after its first byte, with one line saying
    why, although the idle timeout is 300 s.
    """
    server = rawPop3([], user="alice", password="secret")
    proxy = popproxyFactory(limitedConfig(server.port, "command_deadline = 3"))
    with socket.create_connection(("127.0.0.1", proxy.port), 10) as client:
        assert readLine(client).startswith(b"+OK popproxy ready")
        started = time.monotonic()
        client.settimeout(1.0)
        answer = b""
        for byte in b"USER alice-who-types-very-slowly":
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break
            try:
                answer += client.recv(4096)
            except TimeoutError:
                continue
            if answer.endswith(b"\r\n"):
                break
        closedAfter = time.monotonic() - started
        client.settimeout(5)
        try:
            answer += readToEnd(client)
        except ConnectionResetError:
            pass
    assert answer == b"-ERR [SYS/PERM] autologout: command line not completed in time\r\n"
    assert 2.5 <= closedAfter < 6, closedAfter
    assert b"USER" not in server.rawInput


def test_refusalsMakeAFewLogLines(
    rawPop3: Callable[..., RawPop3Server], popproxyFactory: Any
) -> None:
    """
    A client on 127.0.0.3 reconnecting 300 times over the connection rate
    (2 a minute): each connection is refused with the -ERR [SYS/TEMP]
    line, but the log has one line for the first refusal and, once the
    interval (3 s) is over, one line counting the other 299, not 300
    lines.
    """
    server = rawPop3([], user="alice", password="secret")
    proxy = popproxyFactory(
        limitedConfig(server.port, "connection_rate = 2\nrefusal_log_interval = 3")
    )
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", proxy.port), 10, ("127.0.0.3", 0)) as client:
            assert readLine(client) == b"+OK popproxy ready\r\n"
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", proxy.port), 10, ("127.0.0.3", 0)) as client:
            assert readToEnd(client) == TOO_FAST
    waitForLog(proxy, "refused 299 more connections from 127.0.0.3/32 in the last 3s: rate")
    log = proxy.log()
    assert log.count("connection from 127.0.0.3:") == 1
    assert log.count("refused: rate") == 1 and log.count("more connections from") == 1
