"""
What every session of one listener shares: L{SessionSettings}, a frozen
value built once per listener by L{popproxy._assembly} (the router, the
upstream connector, the clock, the filter chain's hook, the session
limits, the listener's name and the process's metrics) and read by each
L{popproxy._session.ClientSession}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime

from popproxy._admission import Admission, ConnectionLimits
from popproxy._capabilities import CapabilityCache
from popproxy._config import ChainConfig
from popproxy._gracefulstop import GracefulStop
from popproxy._loginthrottle import LoginThrottle
from popproxy._metrics import NO_METRICS, Metrics
from popproxy._preloginpool import PreloginPool
from popproxy._refusallog import RefusalLog
from popproxy._retrieval import MessageHook, PassThrough
from popproxy._routing import Router
from popproxy._sharedadmission import SharedAdmission
from popproxy._upstreamslot import Connect


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """
    What every session of one listener shares (read-only).
    """

    router: Router
    connect: Connect
    clock: IReactorTime
    hook: MessageHook = PassThrough()
    idleTimeout: float = 600.0
    maxFailedLogins: int = 3
    #: The proxy's certificate: STLS is offered when set.
    serverTLS: object | None = None
    #: The listener speaks TLS from the first byte (port 995 style).
    implicitTLS: bool = False
    #: C{"auto"} (required unless the client is on this host, as
    #: L{popproxy._loginpolicy} decides), C{"always"} or C{"never"}: whether
    #: logins need TLS first.
    requireTLS: str = "auto"
    #: Seconds to hold back the answer to a failed login (slows guessing).
    loginFailureDelay: float = 1.0
    #: How RETR and TOP go through the filter chain: TOP mode, keepalive,
    #: per-session cache, spooling and size limits (the [chain] settings).
    chain: ChainConfig = ChainConfig()
    #: Called when a session has ended and dropped what it held (the
    #: proxy gives freed memory back to the system then).
    sessionClosed: Callable[[], None] | None = None
    #: Which listener, as the metrics label it (L{popproxy._metrics.listenerLabel}).
    listener: str = ""
    #: Where the sessions count what they do.
    metrics: Metrics = NO_METRICS
    #: The process's graceful stop: told when each session opens and
    #: ends, it asks them to finish when the process stops.
    stop: GracefulStop | None = None
    #: The process's connection counts, which admit or refuse each new
    #: session (C{None}: every connection is admitted).
    admission: Admission | SharedAdmission | None = None
    #: The timeouts of the C{[limits]} table (login, command line, upstream
    #: connection held before login) and the counting of invalid commands
    #: before login as failed logins; C{None} (protocol tests): none of them.
    limits: ConnectionLimits | None = None
    #: What upstreams said to CAPA before login, for sessions that hold no
    #: upstream connection then.
    capabilities: CapabilityCache = field(default_factory=CapabilityCache)
    #: Paces and blocks logins across sessions (C{None}: only per session).
    loginThrottle: LoginThrottle | None = None
    #: Logs the connections refused at the door, a few lines per client
    #: network (C{None}: one line for each).
    refusalLog: RefusalLog | None = None
    #: The upstream connections the process holds for sessions not yet
    #: logged in (C{None}: not counted, every session may connect).
    preloginPool: PreloginPool | None = None
