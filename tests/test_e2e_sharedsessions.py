"""
One per-address session limit for several processes, end to end: two `twistd -n popproxy`
instances with C{[limits] store = "redis://…"} and a real redis-server refuse the connection
over C{max_sessions_per_address} whichever instance it reaches, with the C{-ERR [SYS/TEMP]} line
and nothing upstream; an instance killed with SIGKILL stops counting within its lease; with Redis
killed, admission goes on on each instance's own counts with one warning (and the metrics say
so); with C{workers = 2} and no Redis, the processes share the limit through the main process.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from tests.metricsamples import parseSamples, value
from tests.peers.ports import freePort
from tests.peers.rawpop3 import RawPop3Server
from tests.peers.redis import RedisServer, command
from tests.test_e2e_limits import readLine, readToEnd, waitForLog
from tests.test_e2e_metrics import get

PER_ADDRESS = 3
REFUSAL = b"-ERR [SYS/TEMP] too many sessions from your address, try again later\r\n"
GREETING = b"+OK popproxy ready\r\n"
CLIENT = "127.0.0.2"

CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
%(workers)s
[upstream]
default = "tcp:127.0.0.1:%(upstream)d"
[tls]
require = "never"
[limits]
trusted_networks = []
max_sessions_per_address = %(perAddress)d
connection_rate = 1000
upstream_hold = 0
%(store)s
%(metrics)s
"""


def configFor(
    upstream: int, redis: RedisServer | None, metricsPort: int | None = None, workers: int = 1
) -> str:
    store = f'store = "redis://127.0.0.1:{redis.port}/0?lease=2"' if redis else ""
    metrics = f'[metrics]\nlisten = "tcp:{metricsPort}:interface=127.0.0.1"' if metricsPort else ""
    return CONFIG % {
        "upstream": upstream,
        "perAddress": PER_ADDRESS,
        "store": store,
        "metrics": metrics,
        "workers": f"workers = {workers}" if workers > 1 else "",
    }


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), 10, source_address=(CLIENT, 0))


def greeted(port: int) -> socket.socket:
    """
    A client from CLIENT that the proxy on C{port} greeted (kept open by the caller).
    """
    client = connect(port)
    assert readLine(client) == GREETING
    return client


def refused(port: int) -> bool:
    """
    Whether a new connection from CLIENT gets exactly the refusal line and is closed; a
    greeted one is closed again at once.
    """
    with connect(port) as client:
        first = readLine(client)
        if first == GREETING:
            return False
        assert first + readToEnd(client) == REFUSAL
        return True


def sessionsInRedis(redis: RedisServer) -> int:
    key = f"popproxy:sessions:{CLIENT}/32".encode()
    return int(command(redis.host, redis.port, b"ZCARD", key)[1:])


def test_twoInstancesShareOnePerAddressLimit(
    rawPop3: Any, popproxyFactory: Any, redis: RedisServer
) -> None:
    """
    Two sessions on A and one on B fill the limit of 3: the fourth connection is refused by B
    and by A alike, the upstream sees no connection for it, and another address is admitted.
    When a session on A ends, B admits one more.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    first = popproxyFactory(configFor(server.port, redis))
    second = popproxyFactory(configFor(server.port, redis))
    held = [greeted(first.port), greeted(first.port), greeted(second.port)]
    try:
        assert refused(second.port) and refused(first.port)
        assert server.connectionCount == 0
        with socket.create_connection(
            ("127.0.0.1", second.port), 10, source_address=("127.0.0.3", 0)
        ) as other:
            assert readLine(other) == GREETING
        held.pop(0).close()
        deadline = time.monotonic() + 10
        while refused(second.port):
            assert time.monotonic() < deadline, second.log()
            time.sleep(0.05)
    finally:
        for client in held:
            client.close()
    assert "refused: address" in first.log() and "refused: address" in second.log()


def test_killedInstanceStopsCountingWithinItsLease(
    rawPop3: Any, popproxyFactory: Any, redis: RedisServer
) -> None:
    """
    Instance A holds the 3 sessions of CLIENT and is killed with SIGKILL (it says nothing to
    Redis): B refuses CLIENT at first, then admits it once A's leases (2 s) have run out, within
    the lease and a renewal's margin.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    doomed = popproxyFactory(configFor(server.port, redis))
    survivor = popproxyFactory(configFor(server.port, redis))
    held = [greeted(doomed.port) for _ in range(PER_ADDRESS)]
    try:
        assert refused(survivor.port)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.waitForExit(10)
        killed = time.monotonic()
        assert refused(survivor.port), "admitted before the dead instance's leases ran out"
        while refused(survivor.port):
            assert time.monotonic() - killed < 2.0 + 1.5, survivor.log()
            time.sleep(0.1)
    finally:
        for client in held:
            client.close()


def test_redisKilledAdmissionGoesOnLocally(
    rawPop3: Any, popproxyFactory: Any, redis: RedisServer
) -> None:
    """
    With Redis killed, CLIENT is still admitted (up to the limit, on the instance's own
    counts), the log warns once, and /metrics shows the fallback.  With Redis started again
    (empty), the renewals put the sessions open back into it and the log says it answers again.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    metricsPort = freePort()
    proxy = popproxyFactory(configFor(server.port, redis, metricsPort))
    redis.kill()
    held = [greeted(proxy.port) for _ in range(PER_ADDRESS)]
    try:
        assert refused(proxy.port)
        samples = parseSamples(get(metricsPort, "/metrics")[1].decode())
        assert value(samples, "popproxy_counter_store_fallback") == 1
        assert value(samples, "popproxy_counter_store_outages_total") == 1
        assert value(samples, "popproxy_sessions_open", listener="proxy.listen[0]") == PER_ADDRESS
        warnings = [line for line in proxy.log().splitlines() if "#warn" in line]
        assert len(warnings) == 1 and "unavailable" in warnings[0], proxy.log()
        redis.start()
        waitForLog(proxy, "answers again")
        deadline = time.monotonic() + 10
        while sessionsInRedis(redis) != PER_ADDRESS:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.05)
        samples = parseSamples(get(metricsPort, "/metrics")[1].decode())
        assert value(samples, "popproxy_counter_store_fallback") == 0
    finally:
        for client in held:
            client.close()


def test_workersShareOnePerAddressLimit(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    With C{workers = 2} and no Redis, eight connections from CLIENT held open at once: exactly
    three are greeted, whichever process the kernel gave each to; the others get the refusal.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    proxy = popproxyFactory(configFor(server.port, None, workers=2))
    waitForLog(proxy, "worker serving")
    clients = [connect(proxy.port) for _ in range(8)]
    try:
        answers = [readLine(client) for client in clients]
    finally:
        for client in clients:
            client.close()
    assert answers.count(GREETING) == PER_ADDRESS, answers
    assert answers.count(REFUSAL) == 8 - PER_ADDRESS, answers


LIMITS_CONFIG = """
[proxy]
listen = ["tcp:{PORT}:interface=127.0.0.1"]
login_failure_delay = 0
[upstream]
default = "tcp:127.0.0.1:%(upstream)d"
[tls]
require = "never"
[limits]
trusted_networks = []
max_sessions = 4
max_sessions_per_address = 2
connection_rate = 3
login_timeout = 3
command_deadline = 1
upstream_hold = 0
[limits.logins]
delay = 0.1
max_delay = 0.2
block_after = 10
new_account_weight = 5
[metrics]
listen = "tcp:%(metrics)d:interface=127.0.0.1"
"""


def fromAddress(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0))


def lastWords(port: int, source: str, send: bytes = b"") -> bytes:
    """
    Connect from C{source}, read the first line, send C{send}, and return what the proxy
    says after its greeting (or its one refusal line) until it closes the connection.
    """
    with fromAddress(port, source) as client:
        first = readLine(client)
        if first != GREETING:
            return first + readToEnd(client)
        client.sendall(send)
        return readToEnd(client)


def test_everyLimitIsInTheMetrics(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    Each [limits] refusal or cut, made to happen once against a running twistd, shows in a
    real scrape of /metrics under its reason: refused connections (total, per address, rate),
    sessions ended by the login timeout and the command deadline, invalid commands before
    login, throttled and blocked logins; with the session limit and the store's state.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    metricsPort = freePort()
    proxy = popproxyFactory(LIMITS_CONFIG % {"upstream": server.port, "metrics": metricsPort})
    # The start-up check's own connection is a session too: the count starts once it ended.
    waitForLog(proxy, "session 1 closed")
    held = [fromAddress(proxy.port, "127.0.0.10") for _ in range(2)]
    held += [fromAddress(proxy.port, "127.0.0.11"), fromAddress(proxy.port, "127.0.0.12")]
    try:
        assert all(readLine(client) == GREETING for client in held)
        assert lastWords(proxy.port, "127.0.0.13").startswith(
            b"-ERR [SYS/TEMP] too many sessions on"
        )
        held.pop().close()
        assert lastWords(proxy.port, "127.0.0.10") == REFUSAL
    finally:
        for client in held:
            client.close()
    deadline = time.monotonic() + 10
    while proxy.log().count(" closed: ") < 5:  # the start-up check's and the four held
        assert time.monotonic() < deadline, proxy.log()
        time.sleep(0.05)
    for _ in range(3):
        lastWords(proxy.port, "127.0.0.20", b"QUIT\r\n")
    assert b"slow down" in lastWords(proxy.port, "127.0.0.20")
    assert b"no login in time" in lastWords(proxy.port, "127.0.0.30")
    assert b"not completed in time" in lastWords(proxy.port, "127.0.0.31", b"US")
    assert lastWords(proxy.port, "127.0.0.32", b"FOO\r\nQUIT\r\n").startswith(b"-ERR")
    for account in (b"user0", b"user1", b"user2"):
        lastWords(proxy.port, "127.0.0.40", b"USER " + account + b"\r\nPASS wrong\r\nQUIT\r\n")
    samples = parseSamples(get(metricsPort, "/metrics")[1].decode())
    listener = "proxy.listen[0]"
    for reason in ("sessions", "address", "rate"):
        assert (
            value(samples, "popproxy_connections_refused_total", listener=listener, reason=reason)
            == 1
        ), reason
    for ending in ("login_timeout", "command_deadline"):
        assert value(samples, "popproxy_sessions_total", listener=listener, ending=ending) == 1, (
            ending
        )
    assert value(samples, "popproxy_prelogin_invalid_commands_total", reason="invalid") == 1
    assert value(samples, "popproxy_logins_throttled_total", reason="blocked") == 1
    assert (value(samples, "popproxy_logins_throttled_total", reason="delayed") or 0) >= 1
    assert value(samples, "popproxy_login_blocks_total") == 1
    assert value(samples, "popproxy_session_limit") == 4
    assert value(samples, "popproxy_counter_store_fallback") == 0
