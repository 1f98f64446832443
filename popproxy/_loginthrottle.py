"""
Brute-force throttling across sessions: L{LoginThrottle} decides, from
counters in an L{ICounterStore} shared by every session (and by every
process using the same store), whether a login attempt from a client
address for an account may go upstream now, later, or not at all, and
records how attempts ended.  In the spirit of Dovecot's auth penalty:

  - per address (an IPv4 address, an IPv6 prefix): each failure doubles
    the wait before the address's next attempt, on any session, from
    C{delay} up to C{maxDelay}; a success resets it.  Attempts queued by
    parallel sessions are spaced out too, and one that would wait longer
    than C{maxDelay} is refused at once;
  - per address, a score within C{window}: a retry of an account already
    tried adds 1, a new account adds C{newAccountWeight}; at C{blockAfter}
    the address is blocked for C{blockFor} (a spray trips it, a phone
    with a stale password does not);
  - per account: failures from any address slow the account's next
    attempt the same way, except from an address it logged in from
    successfully within C{rememberSuccess} (its owner is not locked out);
  - per address, at most C{inFlight} attempts awaiting their verdict at
    once (L{popproxy._loginsinflight}, given as C{inFlight}), so parallel
    sessions' first attempts cannot all go before any has failed.

Each failure and each block is logged as one line of a fixed format (see
L{FAILURE_FORMAT}, L{BLOCK_FORMAT}) that C{contrib/fail2ban} matches.
Given the store, the clock and the metrics, never a session.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from popproxy._activity import LoginBlock
from popproxy._clientnetwork import clientNetwork
from popproxy._counterstore import ICounterStore
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._printable import PrintableLogger

#: The log line of each failed login (fail2ban matches it: keep it fixed).
FAILURE_FORMAT = "login failure: client={client} account={account}"
#: The log line of each block (fail2ban matches it: keep it fixed).
BLOCK_FORMAT = "login block: client={client} seconds={seconds} account={account}"

#: Account names are cut to this many characters in counter keys.
_ACCOUNT_KEY_LENGTH = 256

#: A module-level logger: its namespace, which the fail2ban filter matches,
#: stays C{popproxy.throttle} (a class attribute would be renamed after it).
log = PrintableLogger(namespace="popproxy.throttle")

T = TypeVar("T")

if TYPE_CHECKING:
    from popproxy._loginsinflight import LoginsInFlight


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """
    The C{[limits.logins]} settings (see docs/limits.md).
    """

    enabled: bool = True
    #: Seconds an address or account waits after its first failure.
    delay: float = 1.0
    #: The longest wait; doubling stops there.
    maxDelay: float = 15.0
    #: Seconds failures are remembered for (a fixed window from the first).
    window: float = 600.0
    #: The score within C{window} at which an address is blocked.
    blockAfter: int = 30
    #: Seconds a block lasts.
    blockFor: float = 900.0
    #: What a failure against an account not yet tried from the address adds.
    newAccountWeight: int = 5
    #: IPv6 addresses are counted per prefix of this length.
    ipv6Prefix: int = 64
    #: Seconds an address an account logged in from stays exempt from
    #: the account's own slowing.
    rememberSuccess: float = 30 * 86400.0
    #: Attempts from one address awaiting their verdict at once
    #: (L{popproxy._loginsinflight}); more wait their turn.
    inFlight: int = 2


@dataclass(frozen=True, slots=True)
class Admission:
    """
    Whether a login attempt may go upstream.

    @ivar wait: seconds to wait first.
    @ivar blockedUntil: the address is blocked until then: refuse.
    @ivar queueFull: earlier attempts already fill the longest wait: refuse.
    """

    wait: float = 0.0
    blockedUntil: float | None = None
    queueFull: bool = False

    @property
    def refused(self) -> bool:
        return self.blockedUntil is not None or self.queueFull


def addressPrefix(address: str, ipv6Prefix: int) -> str:
    """
    What C{address} is counted as: its client network
    (L{popproxy._clientnetwork.clientNetwork}), an IPv4 address written
    without its /32 (as the counter keys always were), an IPv6 address's
    prefix of C{ipv6Prefix} bits; anything else (a UNIX socket) as it is.
    """
    network = clientNetwork(address, 32, ipv6Prefix)
    if network is None:
        return address
    return str(network.network_address) if network.version == 4 else str(network)


def accountKey(account: str) -> str:
    """
    What C{account} is counted as: case-folded, cut to a bounded length.
    """
    return account.casefold()[:_ACCOUNT_KEY_LENGTH]


class LoginThrottle:
    """
    Paces and blocks login attempts across sessions.

    @ivar clock: the clock the waits run on.
    @ivar inFlight: caps the attempts from one address awaiting their
        verdict (C{None}: no cap).
    """

    def __init__(
        self,
        store: ICounterStore,
        clock: IReactorTime,
        settings: ThrottleSettings = ThrottleSettings(),
        metrics: Metrics = NO_METRICS,
        inFlight: LoginsInFlight | None = None,
    ) -> None:
        self._store = store
        self.clock = clock
        self.inFlight = inFlight
        self._settings = settings
        self._metrics = metrics

    def delayAfter(self, failures: int) -> float:
        """
        The wait after C{failures} failures: C{delay} doubled for each
        failure after the first, at most C{maxDelay}.
        """
        if failures <= 0:
            return 0.0
        settings = self._settings
        return min(settings.maxDelay, settings.delay * 2.0 ** min(failures - 1, 30))

    def admit(self, address: str, account: str) -> Deferred[Admission]:
        """
        Whether an attempt from C{address} for C{account} may go upstream,
        and after how long; an admitted attempt takes its turn (the next
        one from the address waits after it).
        """
        return Deferred.fromCoroutine(_orElse(self._admit(address, account), Admission()))

    def blocked(self, address: str) -> Deferred[bool]:
        """
        Whether C{address} is blocked now (checked before a login even
        connects upstream).
        """
        return Deferred.fromCoroutine(_orElse(self._blocked(address), False))

    async def _blocked(self, address: str) -> bool:
        prefix = addressPrefix(address, self._settings.ipv6Prefix)
        if await self._store.blockedUntil(f"block:{prefix}") is None:
            return False
        self._metrics.loginThrottled("blocked")
        return True

    def failed(self, address: str, account: str) -> Deferred[None]:
        """
        Record a failed login from C{address} for C{account} (an empty
        account: the failure had none, e.g. an invalid command): log it,
        slow the address and the account, block the address past the
        threshold.
        """
        return Deferred.fromCoroutine(_orElse(self._failed(address, account), None))

    def succeeded(self, address: str, account: str) -> Deferred[None]:
        """
        Record a successful login: the address's wait starts again from
        nothing, and the address is remembered as the account's own.
        """
        return Deferred.fromCoroutine(_orElse(self._succeeded(address, account), None))

    async def _admit(self, address: str, account: str) -> Admission:
        store, now = self._store, self.clock.seconds()
        prefix = addressPrefix(address, self._settings.ipv6Prefix)
        blocked = await store.blockedUntil(f"block:{prefix}")
        if blocked is not None:
            self._metrics.loginThrottled("blocked")
            return Admission(blockedUntil=blocked)
        turns = [(f"next:{prefix}", await store.count(f"penalty:{prefix}"))]
        user = accountKey(account)
        if user and not await store.count(f"owner:{user}|{prefix}"):
            turns.append((f"accountnext:{user}", await store.count(f"accountpenalty:{user}")))
        start = now
        for key, failures in turns:
            if failures:
                start = max(start, await store.blockedUntil(key) or now)
        if start - now > self._settings.maxDelay:
            self._metrics.loginThrottled("queue_full")
            return Admission(queueFull=True)
        for key, failures in turns:
            if failures:
                await store.blockUntil(key, start + self.delayAfter(failures))
        if start > now:
            self._metrics.loginThrottled("delayed")
        return Admission(wait=start - now)

    async def _failed(self, address: str, account: str) -> None:
        store, settings, now = self._store, self._settings, self.clock.seconds()
        prefix = addressPrefix(address, settings.ipv6Prefix)
        user = accountKey(account)
        log.info(FAILURE_FORMAT, client=address, account=account)
        penalty = await store.hit(f"penalty:{prefix}", 1, settings.window)
        await store.blockUntil(f"next:{prefix}", now + self.delayAfter(penalty))
        tries = await store.hit(f"tried:{prefix}|{user}", 1, settings.window)
        weight = settings.newAccountWeight if tries == 1 else 1
        score = await store.hit(f"score:{prefix}", weight, settings.window)
        if user:
            failures = await store.hit(f"accountpenalty:{user}", 1, settings.window)
            await store.blockUntil(f"accountnext:{user}", now + self.delayAfter(failures))
        if score >= settings.blockAfter and await store.blockedUntil(f"block:{prefix}") is None:
            await store.blockUntil(f"block:{prefix}", now + settings.blockFor)
            self._metrics.loginBlocked(LoginBlock(address, account, now, now + settings.blockFor))
            log.warn(
                BLOCK_FORMAT, client=address, seconds=round(settings.blockFor), account=account
            )

    async def _succeeded(self, address: str, account: str) -> None:
        store, settings = self._store, self._settings
        prefix = addressPrefix(address, settings.ipv6Prefix)
        await store.forget(f"penalty:{prefix}")
        await store.forget(f"next:{prefix}")
        user = accountKey(account)
        if user:
            await store.hit(f"owner:{user}|{prefix}", 1, settings.rememberSuccess)


async def _orElse(work: Coroutine[Any, Any, T], fallback: T) -> T:
    """
    What C{work} comes to, or C{fallback} if the counters failed: the
    attempt goes on unthrottled rather than every login failing with the
    store.
    """
    try:
        return await work
    except Exception:
        log.failure("login throttle: the counters failed", Failure())
        return fallback
