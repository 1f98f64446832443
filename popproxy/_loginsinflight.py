"""
Login attempts awaiting their verdict, per client network: L{LoginsInFlight}
lets at most C{[limits.logins] in_flight} attempts from one network (an IPv4
address, an IPv6 prefix) have a password at the upstream at once.  Another
attempt waits its turn, for C{max_delay} seconds at most, and is refused
after that; trusted networks (and clients without an IP address) are
exempt.

Why: the throttle (L{popproxy._loginthrottle}) spaces an address's attempts
by the failures it has on record, and an address opening many sessions at
once would otherwise send all their first passwords before any of them has
failed.  With a cap, each verdict is recorded before the next attempt
beyond the cap goes, so the throttle's delays and block apply to all but
C{in_flight - 1} of them.

The counts live where the per-address session counts do
(L{ISessionLedger}): in the process, in the main process for its workers,
or in Redis for several instances, each attempt a lease the ledger drops
if its process dies.  A shared ledger that cannot answer is replaced, for
that attempt, by this process's own count.  Given the ledger and the clock,
never a session.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from popproxy._addresscounts import AddressLimits, LocalLedger
from popproxy._clientnetwork import clientNetwork, trustedNetworks
from popproxy._counterstore import CounterStoreUnavailable
from popproxy._fallbackstore import StoreOutage
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._sessionledger import ISessionLedger
from popproxy._sharedadmission import leaseNames

__all__ = ["FIRST_RETRY", "LAST_RETRY", "InFlight", "LoginsInFlight"]

#: Seconds between a waiting attempt's first tries for a place, doubling ...
FIRST_RETRY = 0.05
#: ... up to this.
LAST_RETRY = 0.4

#: The rate part of a ledger's limits, which this count does not use: any
#: number of attempts may start within any interval.
_NO_RATE = (2**31 - 1, 0.001)


@dataclass(frozen=True, slots=True)
class InFlight:
    """
    One attempt's place, to be given back to L{LoginsInFlight.leave}.

    @ivar key: the ledger key it is counted under (C{None}: not counted:
        the client's network is trusted, or it has no IP address).
    @ivar lease: its name in the ledger.
    @ivar shared: counted in the shared ledger, not this process's own.
    """

    key: str | None = None
    lease: str = ""
    shared: bool = False


class LoginsInFlight:
    """
    Caps the login attempts from one client network awaiting their verdict.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limit: int,
        *,
        maxWait: float,
        ipv6Prefix: int = 64,
        trusted: tuple[str, ...] = (),
        ledger: ISessionLedger | None = None,
        outage: StoreOutage | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """
        @param limit: attempts from one network in flight at once.
        @param maxWait: seconds an attempt waits for a place before it is
            refused.
        @param ledger: the count shared with other processes or instances
            (C{None}: this process's own only).
        @param outage: the shared store's state: told of the ledger's
            failures, and while it is down the ledger is not asked.
        """
        self._clock = clock
        self._limits = AddressLimits(limit, *_NO_RATE)
        self._maxWait = maxWait
        self._ipv6Prefix = ipv6Prefix
        self._trusted = trustedNetworks(trusted)
        self._shared = ledger
        self._outage = outage
        self._local = LocalLedger(clock.seconds)
        self._metrics = metrics
        self._names = leaseNames()

    def enter(self, address: str) -> Deferred[InFlight | None]:
        """
        A place for an attempt from C{address}: fires with it once the
        network has fewer than C{limit} attempts in flight, or with C{None}
        after C{maxWait} seconds without one (refuse the attempt).
        """
        return Deferred.fromCoroutine(self._enter(address))

    async def _enter(self, address: str) -> InFlight | None:
        key = self._keyOf(address)
        if key is None:
            return InFlight()
        lease = next(self._names)
        deadline = self._clock.seconds() + self._maxWait
        retry = FIRST_RETRY
        while True:
            place = await self._try(key, lease)
            if place is not None:
                if retry > FIRST_RETRY:
                    self._metrics.loginThrottled("in_flight_wait")
                return place
            wait = min(retry, deadline - self._clock.seconds())
            if wait <= 0:
                self._metrics.loginThrottled("in_flight_full")
                return None
            await deferLater(self._clock, wait)
            retry = min(retry * 2, LAST_RETRY)

    async def _try(self, key: str, lease: str) -> InFlight | None:
        """
        Take a place under C{key} if there is one: in the shared ledger,
        or in this process's own count if that cannot answer.
        """
        outage = self._outage
        if self._shared is not None and not (outage is not None and outage.down):
            try:
                reason = await self._shared.enter(key, lease, self._limits)
            except CounterStoreUnavailable as e:
                if outage is not None:
                    outage.failed(str(e))
            else:
                if outage is not None:
                    outage.answered()
                return InFlight(key, lease, shared=True) if reason is None else None
        reason = await self._local.enter(key, lease, self._limits)
        return InFlight(key, lease) if reason is None else None

    def leave(self, place: InFlight) -> None:
        """
        The attempt holding C{place} has its verdict (or was given up).
        """
        if place.key is None:
            return
        if place.shared and self._shared is not None:
            self._shared.leave(place.key, place.lease)
        else:
            self._local.leave(place.key, place.lease)

    def inFlight(self, address: str) -> int:
        """
        Attempts from C{address}'s network in flight in this process's own
        count (the shared ledger's are not known here).
        """
        key = self._keyOf(address)
        return 0 if key is None else self._local.counts.sessions(key)

    def _keyOf(self, address: str) -> str | None:
        """
        What C{address}'s attempts are counted under: its network (an IPv4
        address, an IPv6 prefix); C{None} for a trusted address or one
        that is no IP address (a UNIX socket's client): not counted.
        """
        network = clientNetwork(address, 32, self._ipv6Prefix, self._trusted)
        return None if network is None else f"logins:{network}"
