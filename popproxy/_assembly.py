"""
The composition root: the runtime objects a checked configuration describes.

From a L{Config} this module builds the filter chain (with the threads its
filters compute in), the session factories (with their router, upstream
connector and memory trimmer), the listeners and the service tree that runs
them.  The twistd plugin (L{popproxy.tap}), the worker processes
(L{popproxy._workers}), the test kit and the offline runner all build
through here, so they run the same objects.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from popproxy._chain import ChainEntry, FilterChain
from popproxy._config import Config, ConfigError
from popproxy._filterthreads import FilterThreads
from popproxy._memorytrim import MemoryTrimmer, glibcTrim
from popproxy._plugins import PluginError, loadFilter
from popproxy._proxyheader import ProxyHeaderFactory
from popproxy._quarantine import DirectoryQuarantine
from popproxy._retrieval import PassThrough
from popproxy._routing import Router
from popproxy._session import SessionFactory, SessionSettings
from popproxy._tls import ServerTLS, endpointHost, isLoopback, minimumVersion
from popproxy._upstream import UpstreamConnector
from popproxy._workerpool import WorkerLaunch, WorkerPool

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
    source: str, directory: Path, runInThread: Callable[[Callable[[], Any]], Deferred[Any]]
) -> DirectoryQuarantine:
    """
    The directory quarantine of a configuration.

    @raise ConfigError: it cannot be created, naming the file and the key.
    """
    try:
        return DirectoryQuarantine(directory, runInThread)
    except OSError as e:
        raise ConfigError(f"{source}: [chain] quarantine: {directory}: {e.strerror}") from None


def buildChain(config: Config, reactor: Any) -> FilterChain:
    """
    Load every configured filter, in order.

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
        quarantine = directoryQuarantine(config.source, config.chain.quarantine, runInThread)
    return FilterChain(
        entries,
        reactor,
        quarantine,
        runInThread,
        config.chain.threadThreshold,
        limits=config.chain.limits,
        overLimits=config.chain.overLimits,
        threads=filterThreadsFor(reactor),
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
        super().__init__(endpoint, factory)  # type: ignore[arg-type]
        self.description = description
        self._raiseSynchronously = True

    #: The listening port, once listening (workers adopt its socket).
    port: Any = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
            self._waitingForPort.addCallback(self._listening)  # type: ignore[union-attr]
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            sys.stderr.write(f"popproxy: cannot listen on {self.description}: {reason}\n")
            raise SystemExit(1) from None

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
    endpoint = serverFromString(reactor, withBacklog(endpointDescription))
    return Listener(description, endpoint, wrapped)


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


def sessionFactories(
    config: Config, reactor: Any, chain: FilterChain | None = None
) -> tuple[SessionFactory, SessionFactory, ServerTLS | None]:
    """
    The session factories for plain and implicit-TLS listeners (shared by
    the main process and its workers), and the proxy's certificate.
    """
    connector = UpstreamConnector(reactor, config.connectTimeout, config.responseTimeout)  # type: ignore[arg-type]
    serverTLS = None
    if config.tls.certificate is not None:
        serverTLS = ServerTLS(
            config.tls.certificate, config.tls.key, minimumVersion(config.tls.minVersion)
        )
    settings = SessionSettings(
        router=Router(config.routing),
        connect=connector.connect,
        clock=reactor,  # type: ignore[arg-type]
        idleTimeout=config.idleTimeout,
        maxFailedLogins=config.maxFailedLogins,
        loginFailureDelay=config.loginFailureDelay,
        hook=chain if chain is not None else PassThrough(),
        chain=config.chain,
        serverTLS=serverTLS,
        requireTLS=config.tls.require,
        sessionClosed=MemoryTrimmer(reactor, glibcTrim()).sessionClosed,
    )
    factory = SessionFactory(settings)
    secure = SessionFactory(replace(settings, implicitTLS=True))
    return factory, secure, serverTLS


def serviceFromConfig(
    config: Config, reactor: Any, chain: FilterChain | None = None
) -> MultiService:
    """
    The services that run a checked configuration on C{reactor}.
    """
    top = MultiService()
    factory, secure, serverTLS = sessionFactories(config, reactor, chain)
    _warnAboutPlainText(config, serverTLS)
    listeners = [listenerFor(reactor, d, factory, None) for d in config.listen]
    listeners += [listenerFor(reactor, d, secure, serverTLS) for d in config.tls.listen]
    for listener in listeners:
        listener.setServiceParent(top)
    if chain is not None:
        # In the main process only: workers' filters learn from their scans.
        ChainStart(chain).setServiceParent(top)
    if config.workers > 1:
        WorkerPool(reactor, WorkerLaunch.fromConfig(config), listeners).setServiceParent(top)
    if config.demo is not None:
        from popproxy.demo import defaultMailboxPath, demoServerFactory

        mailbox = config.demo.mailbox or defaultMailboxPath()
        demo = demoServerFactory(mailbox, config.demo.user, config.demo.password)
        endpoint = serverFromString(reactor, config.demo.listen)
        Listener(config.demo.listen, endpoint, demo).setServiceParent(top)
    return top


def _warnAboutPlainText(config: Config, serverTLS: ServerTLS | None) -> None:
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
    if serverTLS is None:
        for description in config.listen:
            if "interface=127." not in description and "interface=\\:\\:1" not in description:
                log.warn(
                    "listener {listener}: no [tls] certificate, so clients send passwords "
                    "in clear text",
                    listener=description,
                )
