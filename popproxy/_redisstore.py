"""
L{ICounterStore} in Redis, so several popproxy instances enforce one limit:
each operation is one atomic command (a Lua script where it reads and
writes), keys are namespaced by a prefix, and every key expires on its own.

A counter C{k} is the integer C{<prefix>count:k} (created with its expiry
by its first hit, a fixed window); a deadline is C{<prefix>block:k}
holding the deadline as text, expiring shortly after it.  Deadlines are on
the caller's clock, compared by the caller's clock: Redis's own clock only
decides when the key is cleaned up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from popproxy._counterstore import CounterStoreUnavailable, ICounterStore
from popproxy._fallbackstore import FallbackCounterStore, StoreOutage
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._redisclient import Argument, RedisClient
from popproxy._redisledger import RedisLedger
from popproxy._resp import RespValue
from popproxy._sessionledger import ISessionLedger
from popproxy._storeaddress import DEFAULT_PREFIX, RedisAddress

__all__ = [
    "RedisCounterStore",
    "SharedStores",
    "counterStoreFor",
    "redisClientFor",
    "sharedStoresFor",
]

# INCRBY, then give the counter its window if it has none yet (a new key,
# or one written without expiry): one script, so two instances hitting a
# new key at once cannot leave it without expiry.
_HIT = """\
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# SET with "greater than" semantics: a later deadline replaces an earlier
# one, never the other way round.
_BLOCK = """\
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
"""

#: How long a deadline's key outlives the deadline (seconds): a clock
#: difference between instances and Redis never drops a deadline early.
KEEP_AFTER_DEADLINE = 60.0


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _integer(reply: RespValue) -> int:
    if isinstance(reply, int):
        return reply
    if reply is None:
        return 0
    if isinstance(reply, bytes) and reply.lstrip(b"-").isdigit():
        return int(reply)
    raise CounterStoreUnavailable(f"Redis holds a non-integer counter: {reply!r:.40}")


class RedisCounterStore:
    """
    Counters and deadlines in one Redis database, under C{prefix}.

    @param clock: the caller's clock, to turn deadlines into expiries.
    """

    def __init__(
        self, client: RedisClient, clock: IReactorTime, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix

    def _counterKey(self, key: str) -> str:
        return f"{self._prefix}count:{key}"

    def _blockKey(self, key: str) -> str:
        return f"{self._prefix}block:{key}"

    def _execute(self, *arguments: Argument) -> Deferred[Any]:
        return self._client.execute(*arguments)

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        answer = self._execute("EVAL", _HIT, 1, self._counterKey(key), amount, _milliseconds(ttl))
        return answer.addCallback(_integer)

    def count(self, key: str) -> Deferred[int]:
        return self._execute("GET", self._counterKey(key)).addCallback(_integer)

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        remaining = until - self._clock.seconds()
        if remaining <= 0:
            return succeed(None)
        expiry = _milliseconds(remaining + KEEP_AFTER_DEADLINE)
        answer = self._execute("EVAL", _BLOCK, 1, self._blockKey(key), repr(float(until)), expiry)
        return answer.addCallback(lambda _: None)

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        return self._execute("GET", self._blockKey(key)).addCallback(self._deadline)

    def _deadline(self, reply: RespValue) -> float | None:
        if not isinstance(reply, bytes):
            return None
        try:
            until = float(reply)
        except ValueError:
            raise CounterStoreUnavailable(
                f"Redis holds a non-numeric deadline: {reply!r:.40}"
            ) from None
        return until if until > self._clock.seconds() else None

    def forget(self, key: str) -> Deferred[None]:
        answer = self._execute("DEL", self._counterKey(key), self._blockKey(key))
        return answer.addCallback(lambda _: None)


def _endpointFor(reactor: Any, address: RedisAddress, timeout: float) -> IStreamClientEndpoint:
    if not address.isLiteral():
        return HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    if ":" in address.host:
        return TCP6ClientEndpoint(reactor, address.host, address.port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout=timeout)


def redisClientFor(reactor: Any, address: RedisAddress) -> RedisClient:
    """
    A client of the Redis at C{address}: it logs in and selects the
    database on each new connection.
    """
    handshake: list[tuple[Argument, ...]] = []
    if address.password is not None:
        if address.username:
            handshake.append(("AUTH", address.username, address.password))
        else:
            handshake.append(("AUTH", address.password))
    if address.db:
        handshake.append(("SELECT", address.db))
    return RedisClient(
        reactor,
        _endpointFor(reactor, address, address.timeout),
        timeout=address.timeout,
        handshake=tuple(handshake),
    )


@dataclass(frozen=True)
class SharedStores:
    """
    What C{[limits] store} gives a process: its login counters, and the
    ledger of its sessions per client network (C{None}: in the process)
    with the shared store's state (C{None}: nothing is shared).
    """

    counters: ICounterStore
    ledger: ISessionLedger | None = None
    outage: StoreOutage | None = None


def sharedStoresFor(
    address: RedisAddress | None,
    local: ICounterStore,
    reactor: Any,
    metrics: Metrics = NO_METRICS,
) -> SharedStores:
    """
    The stores C{[limits] store} asks for: C{local} (the in-process store)
    for C{"memory"}; else Redis for the login counters (falling back to
    C{local} while Redis cannot answer) and the session ledger, over one
    connection, with one outage state for both.
    """
    if address is None:
        return SharedStores(local)
    client = redisClientFor(reactor, address)
    outage = StoreOutage(address.describe(), metrics)
    redis = RedisCounterStore(client, reactor, address.prefix)
    counters = FallbackCounterStore(redis, local, address.describe(), outage)
    ledger = RedisLedger(client, reactor, address.prefix, address.lease, outage)
    return SharedStores(counters, ledger, outage)


def counterStoreFor(
    address: RedisAddress | None, local: ICounterStore, reactor: Any
) -> ICounterStore:
    """
    The login counters C{[limits] store} asks for (see L{sharedStoresFor}).
    """
    return sharedStoresFor(address, local, reactor).counters
