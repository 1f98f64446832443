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
    upstream: int,
    redis: RedisServer | None,
    metricsPort: int | None = None,
    workers: int = 1,
    query: str = "lease=2",
) -> str:
    store = f'store = "redis://127.0.0.1:{redis.port}/0?{query}"' if redis else ""
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


SESSIONS_KEY = f"popproxy:sessions:{CLIENT}/32".encode()

# Redis's own clock in milliseconds, as the ledger's scripts read it.
_REDIS_NOW = b"""\
local clock = redis.call('TIME')
return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# When the first (ARGV[1] = 0) or last (-1) of CLIENT's leases runs out.
_LEASE_END = b"""\
local found = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1], 'WITHSCORES')
return tonumber(found[2])
"""


def sessionsInRedis(redis: RedisServer) -> int:
    return int(command(redis.host, redis.port, b"ZCARD", SESSIONS_KEY)[1:])


def redisNow(redis: RedisServer) -> int:
    return int(command(redis.host, redis.port, b"EVAL", _REDIS_NOW, b"0", timeout=10)[1:])


def leaseEnd(redis: RedisServer, which: bytes) -> int:
    """
    When (Redis's clock, ms) the first (C{b"0"}) or last (C{b"-1"}) lease
    of CLIENT's sessions runs out.
    """
    script = (b"EVAL", _LEASE_END, b"1", SESSIONS_KEY, which)
    return int(command(redis.host, redis.port, *script, timeout=10)[1:])


def justRenewed(redis: RedisServer, deadline: float) -> None:
    """
    Return as soon as a renewal has moved CLIENT's leases on: they then
    have about a whole lease left (bounded by C{deadline}).
    """
    before = leaseEnd(redis, b"0")
    while leaseEnd(redis, b"0") == before:
        assert time.monotonic() < deadline, "the leases were never renewed"
        time.sleep(0.01)


def refusedBetween(port: int, redis: RedisServer) -> tuple[bool, int, int]:
    """
    Whether the proxy on C{port} refused CLIENT, with Redis's clock read
    just before connecting and just after the answer.
    """
    before = redisNow(redis)
    answer = refused(port)
    return answer, before, redisNow(redis)


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


#: The dead instance's leases (s), long enough that a check right after the
#: kill finds them live on a slow machine; the test reads from Redis when
#: they actually run out instead of assuming it.
LEASE = 4


def test_killedInstanceStopsCountingWithinItsLease(
    rawPop3: Any, popproxyFactory: Any, redis: RedisServer
) -> None:
    """
    Instance A holds the 3 sessions of CLIENT and is killed with SIGKILL (it says nothing to
    Redis): B refuses CLIENT at first, then admits it once A's leases have run out, at most
    their length after the kill.  Times are Redis's (when each lease runs out is its score
    there): every connection made wholly before the first lease ran out is refused, every one
    begun after the last ran out is admitted, and one refusal after the kill came while they
    were all live.
    """
    server: RawPop3Server = rawPop3(user=b"alice", password=b"secret")
    query = f"lease={LEASE}&timeout=10"  # B's answers come from Redis, however slow
    doomed = popproxyFactory(configFor(server.port, redis, query=query))
    survivor = popproxyFactory(configFor(server.port, redis, query=query))
    held = [greeted(doomed.port) for _ in range(PER_ADDRESS)]
    try:
        assert refused(survivor.port)
        justRenewed(redis, time.monotonic() + 2 * LEASE)
        killedAt = redisNow(redis)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.waitForExit(10)
        firstEnd, lastEnd = leaseEnd(redis, b"0"), leaseEnd(redis, b"-1")
        assert lastEnd <= killedAt + LEASE * 1000, "a lease outlasts its length"
        checks = [refusedBetween(survivor.port, redis)]
        deadline = time.monotonic() + LEASE + 10
        while checks[-1][0]:
            assert time.monotonic() < deadline, survivor.log()
            time.sleep(0.05)
            checks.append(refusedBetween(survivor.port, redis))
    finally:
        for client in held:
            client.close()
    for wasRefused, before, after in checks:
        if after < firstEnd:
            assert wasRefused, f"admitted {firstEnd - after} ms before the leases ran out"
        if before > lastEnd:
            assert not wasRefused, f"refused {before - lastEnd} ms after the leases ran out"
    live = checks[0][2] < firstEnd
    assert live, f"the first check ended {checks[0][2] - firstEnd} ms after the leases ran out"
    assert "unavailable" not in survivor.log()
    print(
        f"\nlease {LEASE} s: first check {firstEnd - checks[0][2]} ms before the leases ran out,"
        f" admitted {checks[-1][1] - lastEnd} ms after, {len(checks)} checks"
    )


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
