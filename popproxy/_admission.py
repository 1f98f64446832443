"""
Who may open a session: L{Admission} counts the sessions open in the
process, in total and per client network (an IPv4 address, an IPv6 /64 by
default), and the connections each network opened in the last interval,
and answers each new connection with a L{Ticket} or a L{Refusal}.

Sans-IO: it is given addresses as text and a clock (a callable returning
seconds), never a transport; L{popproxy._session} asks it once per
connection and gives the ticket back when the session ends.  The limits are
a frozen L{ConnectionLimits} (the C{[limits]} table), replaced as a whole on
reload while the counts carry on.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

from popproxy._addresscounts import ADDRESS, RATE, AddressCounts, AddressLimits
from popproxy._clientnetwork import Network, clientAddress, clientNetwork, trustedNetworks

__all__ = [
    "Admission",
    "ConnectionLimits",
    "Refusal",
    "Ticket",
    # Re-exported from popproxy._clientnetwork: callers imported them from here.
    "clientAddress",
    "clientNetwork",
    "descriptorLimit",
    "sessionsForDescriptors",
]

#: Descriptors an admitted session may hold at once: the client, the
#: upstream, clamd and spamd while a message is scanned, a spool file.
DESCRIPTORS_PER_SESSION = 5

#: Descriptors kept for the process itself: listeners, logs, the metrics
#: listener, workers' pipes, Python's own files.
RESERVED_DESCRIPTORS = 64

#: What a session limit derived from an unlimited descriptor table is.
UNLIMITED_DESCRIPTORS = 65536


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """
    The C{[limits]} connection settings.

    @ivar maxSessions: sessions open at once in one process; C{None}:
        derived from the descriptor limit (L{sessionsForDescriptors}).
    @ivar perAddress: sessions open at once from one client network.
    @ivar ipv4Prefix: the prefix length that makes an IPv4 client network.
    @ivar ipv6Prefix: the prefix length that makes an IPv6 client network.
    @ivar connectionRate: new connections one client network may open per
        C{rateInterval} seconds.
    @ivar loginTimeout: seconds a client has to log in.
    @ivar commandDeadline: seconds a command line has to complete once its
        first byte has arrived.
    @ivar upstreamHold: seconds an upstream connection made for the greeting
        is kept without a login command (0: none is made before login).
    @ivar trusted: networks exempt from the per-address and rate limits.
    @ivar preloginUpstream: upstream connections one process holds at once
        for sessions that have not sent a login command
        (L{popproxy._preloginpool}).
    @ivar refusalLogInterval: seconds between the log lines that count a
        client network's refused connections (L{popproxy._refusallog}).
    """

    maxSessions: int | None = None
    perAddress: int = 50
    ipv4Prefix: int = 32
    ipv6Prefix: int = 64
    connectionRate: int = 60
    rateInterval: float = 60.0
    loginTimeout: float = 60.0
    commandDeadline: float = 30.0
    upstreamHold: float = 10.0
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    preloginUpstream: int = 32
    refusalLogInterval: float = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    A connection refused: C{reason} labels it (logs, metrics), C{line} is
    what the client is told before the proxy closes the connection.
    """

    reason: str
    line: bytes


TOO_MANY_SESSIONS = Refusal(
    "sessions", b"-ERR [SYS/TEMP] too many sessions on this server, try again later\r\n"
)
TOO_MANY_FROM_ADDRESS = Refusal(
    ADDRESS, b"-ERR [SYS/TEMP] too many sessions from your address, try again later\r\n"
)
TOO_FAST = Refusal(RATE, b"-ERR [SYS/TEMP] too many connections from your address, slow down\r\n")

#: The per-address refusals, by reason.
ADDRESS_REFUSALS = {ADDRESS: TOO_MANY_FROM_ADDRESS, RATE: TOO_FAST}

#: Every refusal reason, as the metrics label them.
REFUSAL_REASONS = tuple(r.reason for r in (TOO_MANY_SESSIONS, TOO_MANY_FROM_ADDRESS, TOO_FAST))


@dataclass(frozen=True, slots=True)
class Ticket:
    """
    One admitted session, to be given back to L{Admission.release}.

    @ivar network: the client network it counts against, or C{None}
        (trusted, or an address that is no IP address).
    @ivar lease: its name in the count shared with other processes
        (L{popproxy._sharedadmission}), if it is counted there.
    """

    network: Network | None
    lease: str | None = None


def descriptorLimit() -> int:
    """
    The process's soft limit on open file descriptors.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_DESCRIPTORS if soft == resource.RLIM_INFINITY else soft


def sessionsForDescriptors(descriptors: int) -> int:
    """
    The default session limit for a process that may open C{descriptors}
    files: what is left after the reserve, divided among sessions so that
    each admitted one can still reach the upstream and the scanners.
    """
    return max(1, (descriptors - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_SESSION)


class Admission:
    """
    Admits or refuses new connections under L{ConnectionLimits}.

    @ivar open: sessions admitted and not yet released.
    """

    def __init__(
        self, limits: ConnectionLimits, clock: Callable[[], float], descriptors: int
    ) -> None:
        """
        @param clock: the current time in seconds.
        @param descriptors: the process's descriptor limit, for a
            C{maxSessions} left unset.
        """
        self._descriptors = descriptors
        self.open = 0
        self._counts: AddressCounts[Network] = AddressCounts(clock)
        self.reconfigure(limits)

    def reconfigure(self, limits: ConnectionLimits) -> None:
        """
        Apply new limits (a reload); the sessions open stay counted.
        """
        self.limits = limits
        self.maxSessions = limits.maxSessions or sessionsForDescriptors(self._descriptors)
        self.addressLimits = AddressLimits(
            limits.perAddress, limits.connectionRate, limits.rateInterval
        )
        self._trusted = trustedNetworks(limits.trusted)

    @property
    def full(self) -> bool:
        """
        Whether C{maxSessions} sessions are open.
        """
        return self.open >= self.maxSessions

    def admit(self, host: str | None) -> Ticket | Refusal:
        """
        Admit a connection from C{host} (C{None}: no address known).
        """
        if self.full:
            return TOO_MANY_SESSIONS
        network = self.networkOf(host)
        if network is not None:
            reason = self._counts.enter(network, self.addressLimits)
            if reason is not None:
                return ADDRESS_REFUSALS[reason]
        self.open += 1
        return Ticket(network)

    def release(self, ticket: Ticket) -> None:
        """
        The session admitted with C{ticket} has ended.
        """
        self.open -= 1
        if ticket.network is not None:
            self._counts.leave(ticket.network)

    def sessionsFrom(self, host: str) -> int:
        """
        Sessions open from C{host}'s network.
        """
        network = self.networkOf(host)
        return 0 if network is None else self._counts.sessions(network)

    @property
    def networksRemembered(self) -> int:
        """
        How many networks the connection-rate window remembers.
        """
        return self._counts.networksRemembered

    def networkOf(self, host: str | None) -> Network | None:
        """
        The client network C{host} counts against: C{None} for no address,
        an address that is no IP address, or a trusted one.
        """
        if host is None:
            return None
        limits = self.limits
        return clientNetwork(host, limits.ipv4Prefix, limits.ipv6Prefix, self._trusted)
