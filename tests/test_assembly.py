"""
Tests for popproxy._assembly, the composition root: from a checked
configuration it builds the filter chain and its threads, the session
factories, the listeners and the service tree twistd runs, and the
listeners as a reload changes them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import alsoProvides

from popproxy import _assembly
from popproxy._assembly import (
    Listener,
    ServiceListeners,
    buildChain,
    filterThreadsFor,
    generationFrom,
    listenerFor,
    listenerFromPlan,
    rebuildGeneration,
    serviceFromConfig,
    sessionFactories,
    tellReloaded,
    wrappedFactory,
)
from popproxy._config import (
    Config,
    ConfigError,
    DemoConfig,
    DomainRoute,
    MetricsConfig,
    TlsConfig,
    parseConfig,
)
from popproxy._filterthreads import FilterThreads
from popproxy._generation import Generation
from popproxy._gracefulstop import GracefulStop
from popproxy._listenerfactory import ListenerFactory
from popproxy._metrics import Metrics
from popproxy._metricsservice import MetricsService
from popproxy._proxyheader import ProxyHeaderFactory
from popproxy._reload import Reloader, ReloadOnHangup
from popproxy._retrieval import PassThrough
from popproxy._session import STOPPING, SessionFactory
from popproxy._testkit import InlineReactor
from popproxy._tls import ServerTLS
from popproxy._workerpool import WorkerPool
from tests.peers.certs import GeneratedCertificates

MARK = (
    "from zope.interface import implementer\n"
    "from popproxy.interfaces import IMessageFilter, Deliver\n"
    "@implementer(IMessageFilter)\n"
    "class Mark:\n"
    "    name = 'mark'\n"
    "    def __init__(self, level): self.level = level\n"
    "    def filterMessage(self, message, context): return Deliver()\n"
    "def makeFilter(settings):\n"
    "    return Mark(int(settings.get('level', 1)))\n"
)


class ThreadedReactor(MemoryReactorClock):
    """
    A memory reactor that says it has threads, and keeps the system event
    triggers it is given.
    """

    def __init__(self) -> None:
        super().__init__()
        alsoProvides(self, IReactorThreads)
        self.triggers: list[tuple[str, str, Callable[[], Any]]] = []

    def addSystemEventTrigger(  # type: ignore[override]
        self, phase: str, eventType: str, callable: Callable[[], Any], *args: Any, **kw: Any
    ) -> tuple[str, str, Callable[[], Any]]:
        trigger = (phase, eventType, callable)
        self.triggers.append(trigger)
        return trigger

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)


def configWithPlugins(tmp_path: Path, text: str) -> Config:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mark.py").write_text(MARK)
    return parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:110"\n' + text, "test.conf", base=tmp_path
    )


def test_buildChainLoadsFiltersInOrder(tmp_path: Path) -> None:
    """
    Every [[filter]] becomes a chain entry, in the file's order, with its
    settings, its name (the plugin's own unless the entry names it), its
    timeout and its error policy.
    """
    config = configWithPlugins(
        tmp_path,
        '[[filter]]\nplugin = "mark"\nsettings = { level = 2 }\n'
        '[[filter]]\nplugin = "plugins/mark.py"\nname = "second"\ntimeout = 5.0\n'
        'on_error = "deliver"\n',
    )
    chain = buildChain(config, InlineReactor())
    described = [(e.name, e.filter.level, e.timeout, e.onError) for e in chain.entries]
    assert described == [("mark", 2, 30.0, "tempfail"), ("second", 1, 5.0, "deliver")]


def test_buildChainNamesTheBadFilter(tmp_path: Path) -> None:
    """
    A plugin that cannot be loaded is a configuration error naming the file
    and the entry's position.
    """
    config = configWithPlugins(
        tmp_path, '[[filter]]\nplugin = "mark"\n[[filter]]\nplugin = "nosuch"\n'
    )
    with pytest.raises(ConfigError, match=r"test.conf: \[filter #2\] plugin: .*nosuch"):
        buildChain(config, InlineReactor())


def test_buildChainQuarantineUnusable(tmp_path: Path) -> None:
    """
    A quarantine directory that cannot be created is a configuration error
    naming it.
    """
    (tmp_path / "file").write_text("not a directory")
    config = configWithPlugins(tmp_path, '[chain]\nquarantine = "file/q"\n')
    with pytest.raises(ConfigError, match=r"\[chain\] quarantine: .*file/q"):
        buildChain(config, InlineReactor())


def test_filterThreadsStoppedAtShutdown() -> None:
    """
    A reactor with threads gets filter threads, stopped during its
    shutdown; the chain built on it computes in them.
    """
    reactor = ThreadedReactor()
    threads = filterThreadsFor(reactor)
    assert isinstance(threads, FilterThreads)
    ((phase, event, stop),) = reactor.triggers
    assert (phase, event, stop) == ("during", "shutdown", threads.stop)
    chain = buildChain(Config(upstream="tcp:127.0.0.1:110"), ThreadedReactor())
    assert isinstance(chain.threads, FilterThreads)


def test_noFilterThreadsWithoutReactorThreads() -> None:
    """
    A reactor without threads (the test kit's inline one) gets none:
    filters then run in the caller's thread.
    """
    assert filterThreadsFor(InlineReactor()) is None
    assert buildChain(Config(), InlineReactor()).threads is None


def test_sessionFactoriesPlainAndImplicitTLS() -> None:
    """
    The two session factories share one chain and differ only in speaking
    TLS from the first byte; without a certificate there is no server TLS.
    """
    chain = buildChain(Config(), InlineReactor())
    plain, secure, serverTLS = sessionFactories(
        Config(upstream="tcp:127.0.0.1:110"), MemoryReactorClock(), chain
    )
    assert serverTLS is None
    assert (plain.settings.implicitTLS, secure.settings.implicitTLS) == (False, True)
    assert plain.settings.hook is chain and secure.settings.hook is chain
    alone, _, _ = sessionFactories(Config(upstream="tcp:127.0.0.1:110"), MemoryReactorClock())
    assert isinstance(alone.settings.hook, PassThrough)


def test_sessionFactoriesWithCertificate(testCertificates: GeneratedCertificates) -> None:
    """
    With a [tls] certificate both session factories offer the proxy's
    certificate, which is also returned for the implicit-TLS listeners.
    """
    plain, secure, serverTLS = sessionFactories(
        withCertificate(testCertificates), MemoryReactorClock()
    )
    assert isinstance(serverTLS, ServerTLS)
    assert plain.settings.serverTLS is serverTLS and secure.settings.serverTLS is serverTLS


def withCertificate(certificates: GeneratedCertificates) -> Config:
    return Config(
        upstream="tcp:127.0.0.1:110",
        tls=TlsConfig(
            certificate=certificates.localhost.chain, key=certificates.localhost.privateKey
        ),
    )


def test_wrappedFactory(testCertificates: GeneratedCertificates) -> None:
    """
    C{haproxy:} listeners read the PROXY header first, on the endpoint
    after the prefix; implicit-TLS ones wrap TLS around the sessions;
    others get the session factory itself.
    """
    reactor = MemoryReactorClock()
    factory, _, serverTLS = sessionFactories(withCertificate(testCertificates), reactor)
    assert wrappedFactory(reactor, "tcp:110", factory, None) == ("tcp:110", factory)
    description, proxied = wrappedFactory(reactor, "haproxy:tcp:110", factory, None)
    assert description == "tcp:110"
    assert isinstance(proxied, ProxyHeaderFactory) and proxied.wrappedFactory is factory
    _, secured = wrappedFactory(reactor, "tcp:995", factory, serverTLS)
    assert isinstance(secured, TLSMemoryBIOFactory) and secured.wrappedFactory is factory


def test_listenerFailsWithOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A listener that cannot listen stops start-up with one line naming it,
    not a traceback.
    """
    reactor = MemoryReactorClock()
    factory, _, _ = sessionFactories(Config(upstream="tcp:127.0.0.1:110"), reactor)
    listener = listenerFor(reactor, "unix:/nonexistent/dir/p.sock", factory, None)
    listener.endpoint = _RefusingEndpoint()
    with pytest.raises(SystemExit):
        listener.privilegedStartService()
    assert capsys.readouterr().err == (
        "popproxy: cannot listen on unix:/nonexistent/dir/p.sock: no permission\n"
    )


class _RefusingEndpoint:
    def listen(self, factory: object) -> Any:
        raise PermissionError("no permission")


def test_serviceFromConfig() -> None:
    """
    The service tree holds one listener per plain and per implicit-TLS
    listen description, a worker pool when workers > 1, and the demo
    server when [demo] is set.
    """
    config = Config(
        upstream="tcp:127.0.0.1:110",
        listen=("tcp:1110:interface=127.0.0.1", "tcp:1111:interface=127.0.0.1"),
        workers=2,
        demo=DemoConfig(),
    )
    services = list(serviceFromConfig(config, MemoryReactorClock()))
    listeners = [s for s in services if isinstance(s, Listener)]
    assert [listener.description for listener in listeners] == [
        "tcp:1110:interface=127.0.0.1",
        "tcp:1111:interface=127.0.0.1",
        DemoConfig().listen,
    ]
    # Each listener builds sessions with the factory a reload may replace.
    assert isinstance(listeners[0].factory.current, SessionFactory)
    assert [type(s) for s in services].count(WorkerPool) == 1
    assert not any(
        isinstance(s, WorkerPool) for s in serviceFromConfig(Config(), MemoryReactorClock())
    )


def test_memoryTrimmerWired(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Each session factory tells the memory trimmer, which gives memory back
    with the platform's trim, when a session has ended.
    """
    made: list[object] = []

    def glibcTrim() -> None:
        made.append("trim")

    monkeypatch.setattr(_assembly, "glibcTrim", glibcTrim)
    factory, _, _ = sessionFactories(Config(upstream="tcp:127.0.0.1:110"), MemoryReactorClock())
    assert made == ["trim"]
    assert factory.settings.sessionClosed is not None


def parentOf(service: Service) -> object:
    """
    The service tree C{service} is in, if any.  Twisted declares
    C{Service.parent = None} unannotated, so mypy types the attribute
    C{None} and would take "service.parent is top" for never true.
    """
    return service.parent


def test_reloadChangesTheServiceTree() -> None:
    """
    Reloading a service tree: an added listener listens and joins the
    tree, an unchanged one keeps its port and builds sessions with the new
    settings, a removed one stops listening and leaves the tree.
    """
    reactor = MemoryReactorClock()
    reactor.callFromThread = lambda function, *args: function(*args)  # type: ignore[attr-defined]
    first = Config(upstream="tcp:127.0.0.1:110", listen=("tcp:1110", "tcp:1111"))
    top = serviceFromConfig(first, reactor, readConfig=lambda: first)
    assert [type(s) for s in top].count(ReloadOnHangup) == 1
    listeners = [s for s in top if isinstance(s, Listener)]
    top.privilegedStartService()
    running = generationFrom(first, reactor)
    second = Config(upstream="tcp:127.0.0.1:110", idleTimeout=42, listen=("tcp:1110", "tcp:1112"))
    reloader = Reloader(
        lambda: rebuildGeneration(lambda: second, reactor, None),
        ServiceListeners(reactor, top, listeners),
        running,
    )
    assert reloader.reload()
    assert [port for port, *_ in reactor.tcpServers] == [1110, 1111, 1112]
    kept, removed = listeners
    assert kept.factory.current.settings.idleTimeout == 42
    # (Sockets closing or staying open are seen in tests/test_e2e_reload.py.)
    assert parentOf(kept) is top and parentOf(removed) is None
    added = [s for s in top if isinstance(s, Listener)][-1]
    assert added.description == "tcp:1112" and parentOf(added) is top
    assert added.factory.current.settings.idleTimeout == 42


def test_reloadKeepsThePreloginPlacesTaken() -> None:
    """
    A session of the running generation that holds one of the
    C{prelogin_upstream} places still holds it after SIGHUP: raised from 1
    to 2, the limit lets exactly one more session connect upstream before
    login, not two (a reload used to start the count afresh, so each one
    let another C{prelogin_upstream} in).
    """
    reactor = MemoryReactorClock()
    reactor.callFromThread = lambda function, *args: function(*args)  # type: ignore[attr-defined]
    base = Config(upstream="tcp:127.0.0.1:110", listen=("tcp:1110",))
    first = replace(base, limits=replace(base.limits, preloginUpstream=1))
    second = replace(base, limits=replace(base.limits, preloginUpstream=2))
    top = serviceFromConfig(first, reactor, readConfig=lambda: second)
    top.privilegedStartService()
    (listener,) = [s for s in top if isinstance(s, Listener)]
    before = listener.factory.current.settings.preloginPool
    assert before.take() and not before.take()
    (hangup,) = [s for s in top if isinstance(s, ReloadOnHangup)]
    hangup._reload()
    after = listener.factory.current.settings.preloginPool
    assert after.limit == 2 and after.take() and not after.take()


def test_listenerFromPlanListensOnce() -> None:
    """
    A listener a reload opened (listening already) does not listen again
    when it joins the running service tree.
    """
    reactor = MemoryReactorClock()
    generation = generationFrom(Config(upstream="tcp:127.0.0.1:110"), reactor)
    (description, plan), *_ = generation.listeners.items()
    listener = listenerFromPlan(reactor, description, plan)
    listener.listen()
    listener.privilegedStartService()
    listener.startService()
    assert len(reactor.tcpServers) == 1


def test_metricsServiceFirstAndListenersLabelled() -> None:
    """
    With [metrics], the metrics service comes first in the tree (it
    begins the metrics before the workers start) and listens on its own
    endpoint; every listener's sessions carry its label and the process's
    metrics.
    """
    metrics = Metrics()
    config = Config(
        upstream="tcp:127.0.0.1:110",
        listen=("tcp:1110:interface=127.0.0.1", "tcp:1111:interface=127.0.0.1"),
        workers=2,
        metrics=MetricsConfig("tcp:9110:interface=127.0.0.1"),
    )
    services = list(serviceFromConfig(config, MemoryReactorClock(), None, metrics=metrics))
    assert isinstance(services[0], MetricsService)
    (site,) = list(services[0])
    assert isinstance(site, Listener) and site.description == "tcp:9110:interface=127.0.0.1"
    listeners = [s for s in services if isinstance(s, Listener)]
    settings = [listener.factory.current.settings for listener in listeners]
    assert [(s.listener, s.metrics) for s in settings] == [
        ("proxy.listen[0]", metrics),
        ("proxy.listen[1]", metrics),
    ]
    plain = list(serviceFromConfig(Config(upstream="tcp:127.0.0.1:110"), MemoryReactorClock()))
    assert not any(isinstance(s, MetricsService) for s in plain)


def test_gracefulStopWired() -> None:
    """
    The service tree holds one graceful stop with the configured grace
    period, and the sessions of its listeners report to it, those built
    after a reload too: stopping the tree marks the process as stopping
    and ends an idle session at once, telling it why.
    """
    reactor = MemoryReactorClock()
    reactor.callFromThread = lambda function, *args: function(*args)  # type: ignore[attr-defined]
    # With a route the greeting does not wait for an upstream.
    route = DomainRoute("example.org", "tcp:127.0.0.1:110")
    config = Config(upstream="tcp:127.0.0.1:110", routes=(route,), stopGrace=7.0)
    reloaded = replace(config, idleTimeout=42)
    tree = serviceFromConfig(config, reactor, readConfig=lambda: reloaded)
    (stop,) = [s for s in tree if isinstance(s, GracefulStop)]
    assert stop._grace == 7.0
    tree.privilegedStartService()
    tree.startService()
    ((_, factory, _, _),) = reactor.tcpServers
    assert isinstance(factory, ListenerFactory)
    assert factory.current.settings.stop is stop
    (hangup,) = [s for s in tree if isinstance(s, ReloadOnHangup)]
    hangup._hangup(signal.SIGHUP, None)
    assert factory.current.settings.idleTimeout == 42
    assert factory.current.settings.stop is stop
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    session = factory.buildProtocol(peer)
    assert session is not None
    client = StringTransport(peerAddress=peer)
    session.makeConnection(client)
    assert client.value() == b"+OK popproxy ready\r\n"
    client.clear()
    tree.stopService()
    assert stop.lifecycle.stopping
    assert client.value() == STOPPING
    assert client.disconnecting


def test_counterStoreFollowsLimitsStore() -> None:
    """
    Without C{[limits] store} the abuse-protection counters live in the
    process; with C{store = "redis://…"} they go to that Redis server, with
    the process's own counters answering while it is down.
    """
    from popproxy._assembly import counterStore
    from popproxy._fallbackstore import FallbackCounterStore
    from popproxy._memorycounters import MemoryCounters

    local = parseConfig('[upstream]\ndefault = "tcp:127.0.0.1:110"\n', "t.conf")
    assert local.counterStore is None
    assert isinstance(counterStore(local, MemoryReactorClock()), MemoryCounters)
    shared = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:110"\n'
        '[limits]\nstore = "redis://:secret@127.0.0.1:6390/2"\n'
        "[limits.logins]\nblock_after = 5\n",
        "t.conf",
    )
    assert shared.counterStore is not None and shared.counterStore.port == 6390
    assert shared.loginThrottle.blockAfter == 5
    assert isinstance(counterStore(shared, MemoryReactorClock()), FallbackCounterStore)


def test_badLimitsStoreIsOneLine() -> None:
    """
    A C{[limits] store} that is neither C{"memory"} nor a Redis URL stops
    start-up with one line naming the key, never the password.
    """
    with pytest.raises(ConfigError, match=r"^t.conf: \[limits\] store: ") as caught:
        parseConfig('[limits]\nstore = "memcache://:hunter2@host"\n', "t.conf")
    assert "hunter2" not in str(caught.value)


def test_consoleAddedByAReloadIsWarnedAbout(tmp_path: Path) -> None:
    """
    A reload that adds [console] to a process started without one says,
    at each reload, that the console starts only at the next start.
    """
    text = (
        f'[upstream]\ndefault = "tcp:127.0.0.1:110"\n[chain]\nquarantine = "{tmp_path}"\n'
        '[console]\nlisten = "tcp:8110"\n'
    )
    generation = Generation(parseConfig(text), None, {})
    listeners = ServiceListeners(MemoryReactorClock(), MultiService(), [])
    for _ in range(2):
        with capturedLogs() as events:
            tellReloaded(listeners, None, generation)
        assert [formatEvent(e) for e in events] == [
            "reload: [console] added; it takes effect at the next start"
        ]
