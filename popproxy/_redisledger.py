"""
L{ISessionLedger} in Redis, so several instances enforce one per-address
session limit and connection rate.

Each client network has two sorted sets: C{<prefix>sessions:<network>},
one member per open session (its lease name) scored with the time its
lease runs out, and C{<prefix>connections:<network>}, one member per
connection admitted within the rate interval, scored with its time.  One
Lua script drops what ran out, counts, and adds the new session, so
instances admitting at once never both take the last place.  Times are
Redis's own (C{TIME}): the instances' clocks do not matter.

Why leases: a count kept in Redis must not outlive the instance that holds
the sessions.  An instance that is killed (SIGKILL, a power cut, a
partition) sends no "session ended"; its leases are no longer renewed and
stop counting when they run out, C{lease} seconds at most after its last
renewal.  A live instance renews all of its sessions every C{lease / 3}
seconds (one command per client network it holds sessions of), which also
puts them back after Redis restarted empty or after an outage during
which the instance admitted on its own.  Every key expires with its last
lease, so Redis needs no cleaning.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from popproxy._addresscounts import ADDRESS, RATE, AddressLimits
from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import StoreOutage
from popproxy._redisclient import RedisClient
from popproxy._resp import RespValue

__all__ = ["RedisLedger"]

_NOW = """\
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: sessions, connections; ARGV: per address, rate, interval ms,
# lease ms, lease name.  0: admitted, 1: too many sessions, 2: too fast.
_ENTER = (
    _NOW
    + """\
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 2 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""
)

# KEYS: sessions; ARGV: lease ms, lease names: renew (or put back) each.
_RENEW = (
    _NOW
    + """\
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""
)

_REASONS: dict[int, str | None] = {0: None, 1: ADDRESS, 2: RATE}


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisLedger:
    """
    Sessions per client network in one Redis database, under C{prefix},
    each a lease of C{lease} seconds renewed while it is held.

    @param outage: told whether the renewals reach Redis.
    """

    def __init__(
        self,
        client: RedisClient,
        clock: IReactorTime,
        prefix: str,
        lease: float,
        outage: StoreOutage | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._leaseMs = _milliseconds(lease)
        self._outage = outage
        self._held: dict[str, set[str]] = {}
        self._renewal = LoopingCall(self.renew)
        self._renewal.clock = clock
        self.renewEvery = lease / 3

    def _track(self, key: str, lease: str) -> None:
        """
        Hold C{lease}: renewed every C{lease / 3} seconds until it is left
        (renewals start with the first lease held).
        """
        self._held.setdefault(key, set()).add(lease)
        if not self._renewal.running:
            self._renewal.start(self.renewEvery, now=False)

    def stop(self) -> None:
        """
        Renew nothing from now on.
        """
        if self._renewal.running:
            self._renewal.stop()

    def _sessionsKey(self, key: str) -> str:
        return f"{self._prefix}sessions:{key}"

    def _connectionsKey(self, key: str) -> str:
        return f"{self._prefix}connections:{key}"

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        answer = self._client.execute(
            "EVAL",
            _ENTER,
            2,
            self._sessionsKey(key),
            self._connectionsKey(key),
            limits.perAddress,
            limits.connectionRate,
            _milliseconds(limits.rateInterval),
            self._leaseMs,
            lease,
        )
        return answer.addCallback(self._entered, key, lease)

    def _entered(self, reply: RespValue, key: str, lease: str) -> str | None:
        if not isinstance(reply, int) or reply not in _REASONS:
            raise CounterStoreUnavailable(f"Redis answered {reply!r:.40} to an admission")
        reason = _REASONS[reply]
        if reason is None:
            self._track(key, lease)
        return reason

    def hold(self, key: str, lease: str) -> None:
        self._track(key, lease)
        self._renewKey(key, [lease])

    def leave(self, key: str, lease: str) -> None:
        held = self._held.get(key)
        if held is None or lease not in held:
            return
        held.discard(lease)
        if not held:
            del self._held[key]
        # If this is lost, the lease, no longer renewed, runs out on its own.
        self._client.execute("ZREM", self._sessionsKey(key), lease).addErrback(lambda _: None)

    @property
    def held(self) -> int:
        """
        Sessions this process holds leases for.
        """
        return sum(len(leases) for leases in self._held.values())

    def renew(self) -> Deferred[Any] | None:
        """
        Renew every held lease (put it back if Redis lost it); while the
        store is down and nothing is held, ask Redis whether it is back.
        """
        if not self._held:
            if self._outage is not None and self._outage.down:
                return self._report(self._client.execute("PING"))
            return None
        renewals = [self._renewKey(key, list(leases)) for key, leases in self._held.items()]
        return renewals[-1]

    def _renewKey(self, key: str, leases: list[str]) -> Deferred[Any]:
        answer = self._client.execute(
            "EVAL", _RENEW, 1, self._sessionsKey(key), self._leaseMs, *leases
        )
        return self._report(answer)

    def _report(self, answer: Deferred[Any]) -> Deferred[Any]:
        return answer.addCallbacks(self._renewed, self._renewFailed)

    def _renewed(self, reply: object) -> None:
        if self._outage is not None:
            self._outage.answered()

    def _renewFailed(self, failure: Failure) -> None:
        failure.trap(CounterStoreUnavailable)
        if self._outage is not None:
            self._outage.failed(failure.getErrorMessage())
