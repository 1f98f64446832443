"""
The composition root: the runtime objects a checked configuration describes.

From a L{Config} this module builds the filter chain (with the threads its
filters compute in), the session factories (with their router, upstream
connector and memory trimmer), the listeners and the service tree that runs
them, and the generation a reload builds from the file read again (see
L{popproxy._reload}).  The twistd plugin (L{popproxy.tap}), the worker processes
(L{popproxy._workers}), the test kit and the offline runner all build
through here, so they run the same objects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from popproxy._activity import ActivityWatch
from popproxy._addresscounts import LocalLedger
from popproxy._admission import Admission, descriptorLimit
from popproxy._chain import ChainEntry, FilterChain
from popproxy._config import Config, ConfigError, checkConfig
from popproxy._counterstore import ICounterStore
from popproxy._filterthreads import FilterThreads
from popproxy._generation import Generation, ListenerPlan
from popproxy._gracefulstop import GracefulStop, ignoreRepeatedStops
from popproxy._health import Health
from popproxy._lifecycle import Lifecycle
from popproxy._listenerfactory import ListenerFactory
from popproxy._loginsinflight import LoginsInFlight
from popproxy._loginthrottle import LoginThrottle
from popproxy._memorycounters import MemoryCounters
from popproxy._memorytrim import MemoryTrimmer, glibcTrim
from popproxy._metrics import NO_METRICS, Metrics, listenerLabel
from popproxy._metricsservice import MetricsService
from popproxy._opensessions import OpenSessions
from popproxy._pgquarantine import PostgresQuarantine
from popproxy._plugins import PluginError, loadFilter
from popproxy._preloginpool import PreloginPool
from popproxy._proxyheader import ProxyHeaderFactory
from popproxy._quarantine import DirectoryQuarantine
from popproxy._quarantineaddress import QuarantineAddress
from popproxy._redisstore import SharedStores, sharedStoresFor
from popproxy._refusallog import RefusalLog
from popproxy._reload import CannotListen, Reloader, ReloadOnHangup
from popproxy._retrieval import PassThrough
from popproxy._routing import Router
from popproxy._session import SessionFactory, SessionSettings
from popproxy._sessionledger import ISessionLedger
from popproxy._sessionrecord import SessionSnapshot
from popproxy._sharedadmission import ProcessAdmission, SharedAdmission, admissionWait
from popproxy._tls import ServerTLS, endpointHost, isLoopback, minimumVersion
from popproxy._upstream import UpstreamConnector
from popproxy._workerpool import WorkerLaunch, WorkerPool
from popproxy._xclient import XclientConnector
from popproxy.console._links import itemLinks

if TYPE_CHECKING:
    from popproxy.console._adminpanels import ConsoleActivity
    from popproxy.console._current import ConsoleSettings
    from popproxy.console._service import ConsoleReload

log = Logger(namespace="popproxy")


def reactorThreads(reactor: Any) -> Callable[[Callable[[], Any]], Deferred[Any]]:
    """
    How the chain and the quarantine run blocking work: in C{reactor}'s
    thread pool.
    """

    def runInThread(function: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function)

    return runInThread


def directoryQuarantine(
    source: str,
    directory: Path,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    metrics: Metrics = NO_METRICS,
) -> DirectoryQuarantine:
    """
    The directory quarantine of a configuration.

    @raise ConfigError: it cannot be created, naming the file and the key.
    """
    try:
        return DirectoryQuarantine(directory, runInThread, metrics=metrics)
    except OSError as e:
        raise ConfigError(f"{source}: [chain] quarantine: {directory}: {e.strerror}") from None


def configuredQuarantine(
    source: str,
    address: QuarantineAddress,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    reactor: Any,
    metrics: Metrics = NO_METRICS,
) -> Any:
    """
    The quarantine C{[chain] quarantine} names: a directory, or a
    PostgreSQL database (L{popproxy._pgquarantine}), its connections
    closed when the reactor shuts down.

    @raise ConfigError: it cannot be used, naming the file and the key.
    """
    if isinstance(address, Path):
        return directoryQuarantine(source, address, runInThread, metrics)
    try:
        from popproxy._pgstore import PostgresStore, connectionSettings
    except ImportError:
        raise ConfigError(
            f"{source}: [chain] quarantine: a PostgreSQL quarantine needs psycopg: "
            "pip install 'popproxy[postgresql]'"
        ) from None
    try:
        connectionSettings(address)
    except ValueError as e:
        raise ConfigError(f"{source}: [chain] quarantine: {e}") from None
    store = PostgresStore(address, POSTGRES_CONNECTIONS)
    if IReactorCore.providedBy(reactor):
        reactor.addSystemEventTrigger("after", "shutdown", store.close)
    return PostgresQuarantine(
        store, address.describe(), runInThread, reactor, metrics, POSTGRES_CONNECTIONS
    )


#: Connections one process opens to a PostgreSQL quarantine at most.
POSTGRES_CONNECTIONS = 4


def checkQuarantineSchema(config: Config) -> None:
    """
    At start-up, before serving: refuse a PostgreSQL quarantine that
    answers but is not migrated (never migrate it silently).  One that
    does not answer is no reason to refuse: its store says so, and
    retrievals that must quarantine get a temporary failure until it does.

    @raise ConfigError: saying to run C{popproxy-quarantine migrate}.
    """
    address = config.chain.quarantine
    if address is None or isinstance(address, Path):
        return
    from popproxy._pgschema import SchemaError
    from popproxy._pgstore import openConnection

    try:
        openConnection(address).close()
    except SchemaError as e:
        raise ConfigError(
            f"{config.source}: [chain] quarantine: {e} "
            f"(popproxy-quarantine --config {config.source} migrate)"
        ) from None
    except Exception as e:
        log.warn(
            "quarantine store {address} does not answer at start-up: {reason}",
            address=address.describe(),
            reason=" ".join(str(e).split()),
        )


def buildChain(
    config: Config,
    reactor: Any,
    threads: FilterThreads | None = None,
    metrics: Metrics = NO_METRICS,
) -> FilterChain:
    """
    Load every configured filter, in order; the chain and its quarantine
    count into C{metrics}.

    @param threads: where filters compute; by default new threads (a
        reload passes those of the running chain).

    @raise ConfigError: a plugin cannot be loaded or used.
    """
    entries = []
    for number, entry in enumerate(config.filters, 1):
        try:
            found = loadFilter(
                entry.plugin, entry.settings, config.base, config.chain.pluginDirs, reactor
            )
        except PluginError as e:
            raise ConfigError(f"{config.source}: [filter #{number}] plugin: {e}") from None
        entries.append(ChainEntry(entry.name or found.name, found, entry.timeout, entry.onError))

    runInThread = reactorThreads(reactor)
    quarantine = None
    if config.chain.quarantine is not None:
        quarantine = configuredQuarantine(
            config.source, config.chain.quarantine, runInThread, reactor, metrics
        )
    return FilterChain(
        entries,
        reactor,
        quarantine,
        runInThread,
        config.chain.threadThreshold,
        limits=config.chain.limits,
        overLimits=config.chain.overLimits,
        threads=threads if threads is not None else filterThreadsFor(reactor),
        metrics=metrics,
        itemUrl=itemLinks(config.console.publicUrl if config.console else None),
    )


def filterThreadsFor(reactor: Any) -> FilterThreads | None:
    """
    The threads where filters compute, stopped when the reactor stops; none
    for a reactor without threads (the test kit's inline one), where
    filters run in the caller's thread.
    """
    threaded = IReactorThreads.providedBy(reactor)
    if not threaded:
        return None
    threads = FilterThreads(reactor.callFromThread, reactor)
    reactor.addSystemEventTrigger("during", "shutdown", threads.stop)
    return threads


class Listener(StreamServerEndpointService):
    """
    A listening service that, when it cannot listen (port in use, no
    permission), stops start-up with one line instead of a traceback.
    """

    def __init__(self, description: str, endpoint: object, factory: object) -> None:
        super().__init__(endpoint, factory)
        self.description = description
        self._raiseSynchronously = True

    #: The listening port, once listening (workers adopt its socket).
    port: Any = None

    def privilegedStartService(self) -> None:
        try:
            self.listen()
        except CannotListen as e:
            sys.stderr.write(f"popproxy: {e}\n")
            raise SystemExit(1) from None

    def listen(self) -> None:
        """
        Listen now, unless already listening (a listener a reload opened).

        @raise CannotListen: naming the listener and the reason.
        """
        if self._waitingForPort is not None:
            return
        try:
            super().privilegedStartService()
            self._waitingForPort.addCallback(self._listening)  # type: ignore[attr-defined]
        except Exception as e:
            self._waitingForPort = None
            reason = getattr(e, "socketError", None) or e
            raise CannotListen(f"cannot listen on {self.description}: {reason}") from None

    def _listening(self, port: Any) -> Any:
        self.port = port
        return port


def wrappedFactory(
    reactor: Any, description: str, factory: ServerFactory, serverTLS: ServerTLS | None
) -> tuple[str, Any]:
    """
    The endpoint description to listen on and the factory to give it:
    C{haproxy:} first reads the PROXY header, C{serverTLS} (implicit-TLS
    listeners) wraps TLS around the sessions.
    """
    wrapped: Any = factory
    if serverTLS is not None:
        wrapped = TLSMemoryBIOFactory(serverTLS, False, factory)
    prefix, _, rest = description.partition(":")
    if prefix.lower() == "haproxy":
        # Twisted's own haproxy: wrapper lets the session greet before the
        # PROXY header has arrived; ours holds it back until then.
        return rest, ProxyHeaderFactory(wrapped, reactor)
    return description, wrapped


#: Listen backlog for TCP listeners that do not set one.  Twisted's default
#: (50) overflows when hundreds of clients connect at once, and a POP3
#: client whose connection was dropped from the queue waits for a greeting
#: that never comes.
DEFAULT_BACKLOG = 1024


def withBacklog(description: str) -> str:
    """
    Add C{backlog=} to a tcp/tcp6/ssl server endpoint string without one.
    """
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


def listenerFor(
    reactor: Any, description: str, factory: ServerFactory, serverTLS: ServerTLS | None
) -> Listener:
    """
    The listening service for one listen description, with the PROXY
    header and TLS wrappers it asks for and a large default backlog.
    """
    endpointDescription, wrapped = wrappedFactory(reactor, description, factory, serverTLS)
    return listenerFromPlan(
        reactor, description, ListenerPlan(withBacklog(endpointDescription), wrapped)
    )


def listenerFromPlan(reactor: Any, description: str, plan: ListenerPlan) -> Listener:
    """
    The listening service of one listener of a generation; a reload
    replaces the factory it builds sessions with (L{ListenerFactory}).
    """
    endpoint = serverFromString(reactor, plan.endpoint)
    return Listener(description, endpoint, ListenerFactory(plan.factory))


class ChainStart(Service):
    """
    Starts the chain's filters (L{FilterChain.start}: scanners ask their
    daemons whether they are there) once the proxy has started: after
    listening and dropping privileges, with the reactor running.
    """

    def __init__(self, chain: FilterChain) -> None:
        self.chain = chain

    def startService(self) -> None:
        super().startService()
        self.chain.start()
        if isinstance(self.chain.quarantine, PostgresQuarantine):
            self.chain.quarantine.start()


class ReportSessionLimit(Service):
    """
    Puts the process's session limit in the metrics once they are begun
    (the C{[metrics]} service starts first).
    """

    def __init__(self, metrics: Metrics, admission: ProcessAdmission) -> None:
        self._metrics = metrics
        self._admission = admission

    def startService(self) -> None:
        super().startService()
        self._metrics.sessionLimit(self._admission.maxSessions)


@dataclass(frozen=True)
class ReloadKept:
    """
    What a process's sessions count that a reload must not start afresh:
    the upstream connections held before login (sessions of the old
    generation give their places back to the same pool, so a reload never
    lets C{prelogin_upstream} more in) and the refusal log's intervals.
    """

    prelogin: PreloginPool
    refusals: RefusalLog

    @classmethod
    def fromConfig(cls, config: Config, reactor: Any) -> ReloadKept:
        limits = config.limits
        return cls(
            PreloginPool(limits.preloginUpstream, reactor),
            RefusalLog(reactor, limits.refusalLogInterval),
        )

    @classmethod
    def forConfig(cls, kept: ReloadKept | None, config: Config, reactor: Any) -> ReloadKept:
        """
        C{kept} given C{config}'s limits (a reload: what is counted stays),
        or new ones if there are none yet.
        """
        if kept is None:
            return cls.fromConfig(config, reactor)
        kept.prelogin.reconfigure(config.limits.preloginUpstream)
        kept.refusals.reconfigure(config.limits.refusalLogInterval)
        return kept


def sessionFactories(
    config: Config,
    reactor: Any,
    chain: FilterChain | None = None,
    metrics: Metrics = NO_METRICS,
    stop: GracefulStop | None = None,
    admission: ProcessAdmission | None = None,
    counters: ICounterStore | None = None,
    kept: ReloadKept | None = None,
) -> tuple[SessionFactory, SessionFactory, ServerTLS | None]:
    """
    The session factories for plain and implicit-TLS listeners (shared by
    the main process and its workers; see L{forListener}), and the proxy's
    certificate.

    @param stop: the process's graceful stop, which their sessions report to.
    @param admission: the process's connection counts, given the limits of
        C{config} (a reload keeps the counts); a new one if not given.
    @param counters: the process's login counters (L{counterStore}), which
        outlive a reload; without them, the sessions get counters of their own.
    @param kept: the process's pre-login places and refusal log, given
        C{config}'s limits (a reload keeps what they count); new ones if
        not given.
    """
    kept = ReloadKept.forConfig(kept, config, reactor)
    if admission is None:
        admission = processAdmission(config, reactor)
    else:
        admission.reconfigure(config.limits)
    metrics.sessionLimit(admission.maxSessions)
    connector = UpstreamConnector(reactor, config.connectTimeout, config.responseTimeout)
    serverTLS = None
    if config.tls.certificate is not None:
        serverTLS = ServerTLS(
            config.tls.certificate, config.tls.key, minimumVersion(config.tls.minVersion)
        )
    settings = SessionSettings(
        router=Router(config.routing),
        connect=XclientConnector(connector.connect).connect,
        clock=reactor,
        idleTimeout=config.idleTimeout,
        maxFailedLogins=config.maxFailedLogins,
        loginFailureDelay=config.loginFailureDelay,
        hook=chain if chain is not None else PassThrough(),
        chain=config.chain,
        serverTLS=serverTLS,
        requireTLS=config.tls.require,
        sessionClosed=MemoryTrimmer(reactor, glibcTrim()).sessionClosed,
        metrics=metrics,
        stop=stop,
        admission=admission,
        limits=config.limits,
        loginThrottle=loginThrottle(config, reactor, counters, metrics, admission),
        refusalLog=kept.refusals,
        preloginPool=kept.prelogin,
    )
    factory = SessionFactory(settings)
    secure = SessionFactory(replace(settings, implicitTLS=True))
    return factory, secure, serverTLS


def processAdmission(
    config: Config, reactor: Any, stores: SharedStores | None = None
) -> ProcessAdmission:
    """
    The connection counts of this process, under C{config}'s C{[limits]}
    (the session limit derived from the descriptor limit if not set); with
    a ledger in C{stores}, the per-address counts are that ledger's, shared
    with the other processes or instances.
    """
    admission = Admission(config.limits, reactor.seconds, descriptorLimit())
    if stores is None or stores.ledger is None:
        return admission
    return SharedAdmission(
        admission,
        stores.ledger,
        reactor,
        wait=admissionWait(config.counterStore),
        outage=stores.outage,
    )


def sharedStores(config: Config, reactor: Any, metrics: Metrics = NO_METRICS) -> SharedStores:
    """
    Where the process keeps its abuse-protection counters: in the process,
    or with C{[limits] store = "redis://…"} in Redis (falling back to the
    process's own while Redis cannot answer); with workers and no Redis,
    the main process also keeps the sessions per client network for all
    of them (L{LocalLedger}).
    """
    stores = sharedStoresFor(config.counterStore, MemoryCounters(reactor), reactor, metrics)
    if stores.ledger is None and config.workers > 1:
        ledger: ISessionLedger = LocalLedger(reactor.seconds)
        return replace(stores, ledger=ledger)
    return stores


def counterStore(config: Config, reactor: Any) -> ICounterStore:
    """
    The process's login counters (see L{sharedStores}).
    """
    return sharedStores(config, reactor).counters


def loginThrottle(
    config: Config,
    reactor: Any,
    counters: ICounterStore | None,
    metrics: Metrics,
    admission: ProcessAdmission | None = None,
) -> LoginThrottle | None:
    """
    The login throttle of C{config}'s C{[limits.logins]} over C{counters}
    (C{None}: throttling is off), its logins in flight counted where
    C{admission} shares its per-address counts (if it does).
    """
    settings = config.loginThrottle
    if not settings.enabled:
        return None
    store = counters if counters is not None else counterStore(config, reactor)
    shared = admission if isinstance(admission, SharedAdmission) else None
    inFlight = LoginsInFlight(
        reactor,
        settings.inFlight,
        maxWait=settings.maxDelay,
        ipv6Prefix=settings.ipv6Prefix,
        trusted=config.limits.trusted,
        ledger=shared.ledger if shared is not None else None,
        outage=shared.outage if shared is not None else None,
        metrics=metrics,
    )
    return LoginThrottle(store, reactor, settings, metrics, inFlight)


def forListener(factory: SessionFactory, label: str) -> SessionFactory:
    """
    C{factory}'s sessions, as the listener of C{label} (see
    L{listenerLabel}) serves them: its metrics are labelled with it.
    """
    return SessionFactory(replace(factory.settings, listener=label))


def generationFrom(
    config: Config,
    reactor: Any,
    chain: FilterChain | None = None,
    metrics: Metrics = NO_METRICS,
    stop: GracefulStop | None = None,
    admission: ProcessAdmission | None = None,
    counters: ICounterStore | None = None,
    kept: ReloadKept | None = None,
) -> Generation:
    """
    What a checked configuration serves: its listeners, each with its
    label (L{listenerLabel}) and the factory of the sessions it will build,
    labelled with it (and reporting to C{stop}, admitted by C{admission}).
    """
    factory, secure, serverTLS = sessionFactories(
        config, reactor, chain, metrics, stop, admission=admission, counters=counters, kept=kept
    )
    plans: dict[str, ListenerPlan] = {}
    for table, descriptions, sessions, tls in (
        ("proxy", config.listen, factory, None),
        ("tls", config.tls.listen, secure, serverTLS),
    ):
        for position, description in enumerate(descriptions):
            label = listenerLabel(table, position)
            labelled = forListener(sessions, label)
            endpoint, wrapped = wrappedFactory(reactor, description, labelled, tls)
            plans[description] = ListenerPlan(withBacklog(endpoint), wrapped, label)
    return Generation(config, chain, plans)


def checkOnReactor(config: Config, reactor: Any) -> None:
    """
    Check the endpoints of C{config} with C{reactor}'s endpoint parsers.

    @raise ConfigError: one does not parse, or users have nowhere to go.
    """
    checkConfig(
        config,
        lambda description: serverFromString(reactor, description),
        lambda description: clientFromString(reactor, description),
    )


def rebuildGeneration(
    readConfig: Callable[[], Config],
    reactor: Any,
    threads: FilterThreads | None,
    metrics: Metrics = NO_METRICS,
    stop: GracefulStop | None = None,
    admission: ProcessAdmission | None = None,
    counters: ICounterStore | None = None,
    kept: ReloadKept | None = None,
) -> Generation:
    """
    The generation of the configuration read again: checked, with its own
    chain, computing in C{threads} (the running chain's: a reload starts
    no threads); its sessions report to the process's C{stop} and are
    counted by its C{admission}, like the running ones.

    @raise ConfigError: the file is broken.
    """
    config = readConfig()
    checkOnReactor(config, reactor)
    chain = buildChain(config, reactor, threads, metrics)
    return generationFrom(
        config, reactor, chain, metrics, stop, admission=admission, counters=counters, kept=kept
    )


class ServiceListeners:
    """
    The main process's listeners, as a reload opens, changes and closes
    them: L{Listener} services under C{parent}; the worker pool, if any,
    is told of the new set and passes the reload on to its workers.
    """

    def __init__(
        self,
        reactor: Any,
        parent: MultiService,
        listeners: list[Listener],
        generation: Generation | None = None,
    ) -> None:
        """
        @param generation: the one running, whose listeners' labels and
            chain are the current ones.
        """
        self._reactor = reactor
        self._parent = parent
        self._listeners = {listener.description: listener for listener in listeners}
        self._labels: dict[str, str] = {}
        self._chain: FilterChain | None = None
        if generation is not None:
            self._labels = {d: plan.label for d, plan in generation.listeners.items()}
            self._chain = generation.chain
        self.pool: WorkerPool | None = None

    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def labelled(self) -> list[tuple[str, Listener]]:
        """
        Each listener with its label, for the health check.
        """
        return [(self._labels.get(d, d), listener) for d, listener in self._listeners.items()]

    def descriptions(self) -> list[str]:
        return list(self._listeners)

    def open(self, description: str, plan: ListenerPlan) -> None:
        listener = listenerFromPlan(self._reactor, description, plan)
        listener.listen()
        listener.setServiceParent(self._parent)
        self._listeners[description] = listener
        self._labels[description] = plan.label

    def replace(self, description: str, plan: ListenerPlan) -> None:
        self._listeners[description].factory.replace(plan.factory)
        self._labels[description] = plan.label

    def close(self, description: str) -> None:
        self._listeners.pop(description).disownServiceParent()
        self._labels.pop(description, None)

    def currentChain(self) -> FilterChain | None:
        """
        The chain new sessions use (the last generation's).
        """
        return self._chain

    def reloaded(self, generation: Generation) -> None:
        """
        Note and start the new generation's chain (its scanners probe their
        daemons); hand the workers its listeners and tell them to reload too.
        """
        self._chain = generation.chain
        if generation.chain is not None:
            generation.chain.start()
        if self.pool is not None:
            self.pool.reload(self.listeners())


def serviceFromConfig(
    config: Config,
    reactor: Any,
    chain: FilterChain | None = None,
    readConfig: Callable[[], Config] | None = None,
    metrics: Metrics = NO_METRICS,
    lifecycle: Lifecycle | None = None,
) -> MultiService:
    """
    The services that run a checked configuration on C{reactor}; with
    C{[metrics]}, C{metrics} (that of C{chain} too) is begun and served.

    @param readConfig: reads the configuration again; given, SIGHUP reloads
        it (L{popproxy._reload}).
    @param lifecycle: the process's; its L{GracefulStop} marks the stop.
    """
    top = MultiService()
    lifecycle = lifecycle or Lifecycle()
    stop = GracefulStop(reactor, config.stopGrace, lifecycle)
    ignoreRepeatedStops(reactor)
    stores = sharedStores(config, reactor, metrics)
    counters, admission = stores.counters, processAdmission(config, reactor, stores)
    kept = ReloadKept.fromConfig(config, reactor)
    generation = generationFrom(config, reactor, chain, metrics, stop, admission, counters, kept)
    _warnAboutPlainText(config, config.tls.certificate)
    plans = generation.listeners.items()
    listeners = [listenerFromPlan(reactor, description, plan) for description, plan in plans]
    opened = ServiceListeners(reactor, top, listeners, generation)
    health = Health(lifecycle, opened.labelled, opened.currentChain)
    workerEnded = _serveMetrics(config, reactor, metrics, health, top)
    for listener in listeners:
        listener.setServiceParent(top)
    ReportSessionLimit(metrics, admission).setServiceParent(top)
    sessions = OpenSessions(stop.sessions.snapshot, partial(_askWorkers, opened))
    activity, onReload = _serveConsole(config, reactor, counters, metrics, health, sessions, top)
    if chain is not None:
        # In the main process only: workers' filters learn from their scans.
        ChainStart(chain).setServiceParent(top)
    if config.workers > 1:
        watch = activity.watch() if activity is not None else None
        opened.pool = workerPool(config, reactor, listeners, workerEnded, stores, watch)
        opened.pool.setServiceParent(top)
    if readConfig is not None:
        rebuild = partial(
            rebuildGeneration,
            readConfig,
            reactor,
            chain.threads if chain is not None else None,
            metrics,
            stop,
            admission=admission,
            counters=counters,
            kept=kept,
        )
        reloader = Reloader(rebuild, opened, generation, partial(tellReloaded, opened, onReload))
        ReloadOnHangup(reactor.callFromThread, reloader.reload).setServiceParent(top)
    if config.demo is not None:
        demoListener(config, reactor).setServiceParent(top)
    stop.setServiceParent(top)
    return top


def workerPool(
    config: Config,
    reactor: Any,
    listeners: list[Listener],
    workerEnded: Callable[[int], None] | None,
    stores: SharedStores,
    watch: ActivityWatch | None = None,
) -> WorkerPool:
    """
    The worker processes of C{config}, sharing C{stores} (the main
    process's counters and session ledger) over their socket pairs, and
    telling C{watch} (the console's) what they do.
    """
    launch = WorkerLaunch.fromConfig(config)
    return WorkerPool(
        reactor, launch, listeners, workerEnded, stores.counters, stores.ledger, watch
    )


def demoListener(config: Config, reactor: Any) -> Listener:
    """
    The listener of the C{[demo]} server of C{config} (which has one).
    """
    from popproxy.demo import defaultMailboxPath, demoServerFactory

    assert config.demo is not None
    mailbox = config.demo.mailbox or defaultMailboxPath()
    demo = demoServerFactory(mailbox, config.demo.user, config.demo.password)
    endpoint = serverFromString(reactor, config.demo.listen)
    return Listener(config.demo.listen, endpoint, demo)


def _serveMetrics(
    config: Config, reactor: Any, metrics: Metrics, health: Health, top: MultiService
) -> Callable[[int], None] | None:
    """
    With C{[metrics]}, add its service to C{top} (first in the tree: it
    begins the metrics before workers start) and return what the worker
    pool tells of an ended worker.
    """
    if config.metrics is None:
        return None
    service = metricsService(config, reactor, metrics, health)
    service.setServiceParent(top)
    return service.workerEnded


def metricsService(
    config: Config, reactor: Any, metrics: Metrics, health: Health
) -> MetricsService:
    """
    The C{[metrics]} listener of C{config}, serving C{metrics} and
    C{health}.
    """
    assert config.metrics is not None
    description = config.metrics.listen
    service = MetricsService(
        reactor,
        metrics,
        multiprocess=config.workers > 1,
        report=health.report,
        entries=health.chainEntries,
        quarantine=health.chainQuarantine,
    )
    endpoint = serverFromString(reactor, description)
    Listener(description, endpoint, service.site).setServiceParent(service)
    return service


def _askWorkers(
    opened: ServiceListeners,
) -> list[tuple[int, Deferred[tuple[SessionSnapshot, ...]]]]:
    """
    Ask the workers (if any run) for their open sessions.
    """
    return opened.pool.askSessions() if opened.pool is not None else []


def _serveConsole(
    config: Config,
    reactor: Any,
    counters: ICounterStore,
    metrics: Metrics,
    health: Health,
    sessions: OpenSessions,
    top: MultiService,
) -> tuple[ConsoleActivity | None, ConsoleReload | None]:
    """
    With C{[console]}, add its listener to C{top}; the activity it shows,
    which this process's C{metrics} feed (the workers' comes over their
    socket pairs), and what a reload does to it.
    """
    if config.console is None:
        return None, None
    from popproxy.console._adminpanels import ConsoleActivity

    activity = ConsoleActivity.starting(reactor)
    if metrics is not NO_METRICS:
        metrics.watch(activity.watch())
    listener, reload = consoleListener(
        config, reactor, counters, metrics, health, activity, sessions
    )
    listener.setServiceParent(top)
    return activity, reload


def consoleSettings(
    config: Config, reactor: Any, counters: ICounterStore, metrics: Metrics
) -> ConsoleSettings:
    """
    The console's settings of C{config} (at start-up, and at each reload),
    whose sign-ins count in the same login counters as the POP3 sessions'.
    """
    from popproxy.console._service import consoleSettingsFrom

    throttle = loginThrottle(config, reactor, counters, metrics)
    return consoleSettingsFrom(config, reactor, throttle, reactorThreads(reactor))


def consoleListener(
    config: Config,
    reactor: Any,
    counters: ICounterStore,
    metrics: Metrics,
    health: Health | None = None,
    activity: ConsoleActivity | None = None,
    sessions: OpenSessions | None = None,
) -> tuple[Listener, ConsoleReload]:
    """
    The C{[console]} listener of C{config} (in the main process only: its
    sign-in sessions live in this process's memory), whose administrators'
    pages show C{health} and C{activity}; and what a reload does to it
    (puts the new file's settings in force, L{consoleSettings}).
    """
    from popproxy.console._adminpanels import AdminConsole
    from popproxy.console._service import ConsoleReload, consoleFrom, consoleSite

    assert config.console is not None
    build = partial(consoleSettings, reactor=reactor, counters=counters, metrics=metrics)
    console = consoleFrom(config, reactor, build(config), reactorThreads(reactor))
    admin = AdminConsole(reactor, health, activity, sessions)
    description = config.console.listen
    listener = Listener(
        description, serverFromString(reactor, description), consoleSite(console, admin)
    )
    return listener, ConsoleReload(console.current, build, config)


def tellReloaded(
    listeners: ServiceListeners, console: ConsoleReload | None, generation: Generation
) -> None:
    """
    What follows a reload that put C{generation} in force: the listeners
    (and through them the workers) and the console take it on; a
    C{[console]} the process did not start with is only warned about.
    """
    # The console first: signing out the administrators the file removes
    # must not depend on the listeners taking the new generation.
    if console is not None:
        console.reloaded(generation.config)
    elif generation.config.console is not None:
        log.warn("reload: [console] added; it takes effect at the next start")
    listeners.reloaded(generation)


def _warnAboutPlainText(config: Config, certificate: Path | None) -> None:
    """
    Log, at start-up, every place where credentials may cross in clear.
    """
    router = Router(config.routing)
    targets = list(router.targets())
    for target in targets:
        if not target.tls.verify:
            log.warn(
                "upstream {upstream}: certificate verification is OFF (verify = false)",
                upstream=target.endpoint,
            )
        if target.tls.mode == "none" and not isLoopback(endpointHost(target.endpoint)):
            log.warn(
                "upstream {upstream}: passwords go to it in clear text (tls = none)",
                upstream=target.endpoint,
            )
    if certificate is None:
        for description in config.listen:
            if "interface=127." not in description and "interface=\\:\\:1" not in description:
                log.warn(
                    "listener {listener}: no [tls] certificate, so clients send passwords "
                    "in clear text",
                    listener=description,
                )
