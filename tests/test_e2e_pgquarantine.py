"""
End to end: `twistd -n popproxy` with the strip filter and
C{[chain] quarantine = "postgresql://…"} on a real PostgreSQL 15.  A
client retrieves a message with a blocked attachment: the record and the
blob are in PostgreSQL, the installed C{popproxy-quarantine list} shows
it and C{export} gives the original bytes.  With PostgreSQL stopped, RETR
of another such message gets C{-ERR [SYS/TEMP]}, the upstream is sent no
DELE and keeps it, health and metrics say the store is unreachable;
started again, the next RETR works with no restart of the proxy.  With
PostgreSQL up but the blobs table locked by another session, RETR gets
C{-ERR [SYS/TEMP]} once the proxy's default statement bound (10 s) has
passed, not never; health says why; once the lock is released, RETR works.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from tests.peers.ports import freePort
from tests.peers.postgres import PostgresDatabase
from tests.peers.rawpop3 import RawPop3Server

EXE = b"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAA\r\n"


def withAttachment(subject: bytes, name: bytes) -> bytes:
    return (
        b"From: sender@example.com\r\nSubject: " + subject + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--XX\r\nContent-Type: application/octet-stream; name="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + EXE + b"--XX--\r\n"
    )


FIRST = withAttachment(b"first", b"invoice.pdf.exe")
SECOND = withAttachment(b"second", b"setup.exe")

CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:%d"
[tls]
require = "never"
[metrics]
listen = "tcp:%d:interface=127.0.0.1"
[chain]
quarantine = "%s"
[[filter]]
plugin = "strip"
"""


class Client:
    """
    A POP3 client on a socket: status lines and multi-line bodies as bytes.
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.socket.makefile("rb")
        assert self.reader.readline().startswith(b"+OK")

    def command(self, line: bytes) -> bytes:
        self.socket.sendall(line + b"\r\n")
        return self.reader.readline().rstrip(b"\r\n")

    def retrieve(self, index: int) -> tuple[bytes, bytes]:
        status = self.command(b"RETR %d" % index)
        if not status.startswith(b"+OK"):
            return status, b""
        lines = []
        while (line := self.reader.readline()) != b".\r\n":
            assert line, "the connection closed before the message's end"
            lines.append(line[1:] if line.startswith(b".") else line)
        return status, b"".join(lines)

    def close(self) -> None:
        self.reader.close()
        self.socket.close()


def quarantineCli(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    """
    The installed popproxy-quarantine, beside the Python running the tests.
    """
    command = [str(Path(sys.executable).parent / "popproxy-quarantine"), *arguments]
    return subprocess.run(command, capture_output=True, timeout=60)


def health(port: int) -> dict[str, Any]:
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
    except urllib.error.HTTPError as e:
        answer = e
    return json.loads(answer.read())


def metric(port: int, name: str) -> list[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return [line for line in text.decode().splitlines() if line.startswith(name)]


def test_quarantineInPostgresSurvivesItsOutage(
    postgres: PostgresDatabase, rawPop3: Any, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    The record and blob of a stripped attachment land in PostgreSQL and
    come back byte for byte; while PostgreSQL is down RETR gets
    -ERR [SYS/TEMP] and nothing reaches the upstream as DELE; once it is
    back, the same proxy quarantines again.
    """
    assert quarantineCli("migrate", postgres.url).returncode == 0
    server: RawPop3Server = rawPop3([FIRST, SECOND], user=b"alice", password=b"secret")
    metricsPort = freePort("127.0.0.1")
    proxy = popproxyFactory(CONFIG % (server.port, metricsPort, postgres.url))

    client = Client(proxy.port)
    assert client.command(b"USER alice").startswith(b"+OK")
    assert client.command(b"PASS secret").startswith(b"+OK")
    status, first = client.retrieve(1)
    assert status.startswith(b"+OK") and b"invoice.pdf.exe was removed" in first, first
    assert EXE not in first
    client.close()
    [(identifier, user)] = postgres.execute("SELECT id, user_name FROM popproxy_quarantine_records")
    assert user == "alice" and str(identifier).encode() in first
    listed = quarantineCli("list", postgres.url)
    assert listed.returncode == 0 and listed.stdout.decode().startswith(str(identifier)), listed
    exported = quarantineCli("export", postgres.url, str(identifier))
    part = FIRST[FIRST.index(b"Content-Type: application/octet") : FIRST.index(b"\r\n--XX--")]
    assert exported.returncode == 0 and exported.stdout == part
    assert health(metricsPort)["quarantine"]["state"] == "reachable"

    postgres.server.stop()
    try:
        client = Client(proxy.port)
        client.command(b"USER alice")
        client.command(b"PASS secret")
        status, _ = client.retrieve(2)
        assert status.startswith(b"-ERR [SYS/TEMP]"), status
        assert client.command(b"QUIT").startswith(b"+OK")
        client.close()
        assert not [c for c in server.commands if c.upper().startswith(b"DELE")]
        assert server.deletedAtQuit == []
        state = health(metricsPort)["quarantine"]
        assert state["store"] == "postgresql" and state["state"] == "unreachable", state
        assert "secret" not in json.dumps(state)
        assert metric(metricsPort, "popproxy_quarantine_store_reachable") == [
            'popproxy_quarantine_store_reachable{store="postgresql"} 0.0'
        ]
    finally:
        postgres.server.start()

    client = Client(proxy.port)
    client.command(b"USER alice")
    client.command(b"PASS secret")
    status, second = client.retrieve(2)
    client.close()
    assert status.startswith(b"+OK") and b"setup.exe was removed" in second, second
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_records") == [(2,)]
    assert "quarantine store" in proxy.log() and "cannot be used" in proxy.log()
    assert "quarantine-secret" not in proxy.log()


def test_lockedTableGivesATemporaryFailureWithinTheBound(
    postgres: PostgresDatabase, rawPop3: Any, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    While another session holds the blobs table locked, RETR of a message
    that must be quarantined answers -ERR [SYS/TEMP] once the default
    statement bound (10 s, nothing set in the URL) has passed, nothing
    reaches the upstream as DELE and health shows the store unreachable
    with PostgreSQL's reason; with the lock released, the same RETR
    gives the notice and the record is kept.
    """
    assert quarantineCli("migrate", postgres.url).returncode == 0
    server: RawPop3Server = rawPop3([FIRST], user=b"alice", password=b"secret")
    metricsPort = freePort("127.0.0.1")
    proxy = popproxyFactory(CONFIG % (server.port, metricsPort, postgres.url))
    client = Client(proxy.port)
    assert client.command(b"USER alice").startswith(b"+OK")
    assert client.command(b"PASS secret").startswith(b"+OK")
    with psycopg.connect(postgres.url) as holder:
        holder.execute("LOCK TABLE popproxy_quarantine_blobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, _ = client.retrieve(1)
        waited = time.monotonic() - started
        assert status.startswith(b"-ERR [SYS/TEMP]"), status
        assert 10 <= waited < 25, waited
        state = health(metricsPort)["quarantine"]
        assert state["state"] == "unreachable" and "statement timeout" in state["detail"], state
        holder.rollback()
    status, first = client.retrieve(1)
    assert status.startswith(b"+OK") and b"invoice.pdf.exe was removed" in first, first
    assert client.command(b"QUIT").startswith(b"+OK")
    client.close()
    assert not [c for c in server.commands if c.upper().startswith(b"DELE")]
    assert postgres.execute("SELECT count(*) FROM popproxy_quarantine_records") == [(1,)]
    assert "canceling statement due to statement timeout" in proxy.log()
