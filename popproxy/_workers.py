"""
One worker process (C{python -m popproxy._workers}): several processes
serving the same listening sockets, so sessions (and the CPU-heavy filtering
they do) spread over more than one core: one Python process runs on one core
at a time (the GIL).

With C{[proxy] workers = N}, the twistd process listens as usual (binding
privileged ports before dropping privileges), then its
L{popproxy._workerpool.WorkerPool} starts N - 1 worker processes that adopt
the same listening sockets; the kernel hands each new connection to one of
the N processes.  Each worker builds the same chain and session factories
from the same configuration (with L{popproxy._assembly}) and logs to its
standard output, which the main process relays.  On SIGHUP (passed on by
the main process after its own reload) a worker reads the same file again
and applies it to the listeners it adopted; when the reload added a
listener, the main process starts a new worker that adopts it too and,
once that one says it serves (on the C{--ready} pipe), retires this one
(SIGUSR2, L{popproxy._retirement}): it accepts no more and exits once its
connections have ended (at most C{[proxy] retire_after} seconds, then it
stops them gracefully).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from popproxy._assembly import (
    ReloadKept,
    buildChain,
    generationFrom,
    processAdmission,
    rebuildGeneration,
    sharedStores,
)
from popproxy._config import Config, loadConfig
from popproxy._generation import ListenerPlan
from popproxy._gracefulstop import GracefulStop, stopOnShutdown
from popproxy._lifecycle import Lifecycle
from popproxy._metrics import Metrics
from popproxy._redisstore import SharedStores
from popproxy._reload import Reloader, ReloadOnHangup
from popproxy._retirement import CountedListenerFactory, OpenConnections, Retirement
from popproxy._sessionrecord import SessionSnapshot
from popproxy._sharedcounters import RemoteCounters
from popproxy._workerpool import acceptOneAtATime

log = Logger(namespace="popproxy")


class AdoptedListeners:
    """
    A worker's listeners, as a reload changes them: the listening sockets
    it adopted from the main process, by listen description.  It cannot
    open one (only the main process can bind, before dropping privileges):
    a listener a reload adds is served by the main process and by the
    worker the main process starts in this one's place.
    """

    def __init__(self, ports: dict[str, Any]) -> None:
        self._ports = ports

    def descriptions(self) -> list[str]:
        return list(self._ports)

    def open(self, description: str, plan: ListenerPlan) -> None:
        log.info(
            "listener {listener} is served by the main process and by the worker "
            "that replaces this one",
            listener=description,
        )

    def replace(self, description: str, plan: ListenerPlan) -> None:
        self._ports[description].factory.replace(plan.factory)

    def close(self, description: str) -> None:
        self._ports.pop(description).stopListening()


def _readConfig(path: Path | None, listen: tuple[str, ...], upstream: str | None) -> Config:
    """
    The configuration the main process runs: the same file and flags.
    """
    config = loadConfig(path) if path is not None else Config()
    return config.withOverrides(listen, upstream)


def _adopt(
    reactor: Any, adopted: list[str], plans: dict[str, ListenerPlan], connections: OpenConnections
) -> dict[str, Any]:
    """
    Serve the inherited listening sockets (C{FD:DESCRIPTION} each) with
    the factories of C{plans}, noting each connection in C{connections}.
    """
    ports = {}
    for entry in adopted:
        descriptor, description = entry.split(":", 1)
        fd = int(descriptor)
        probe = socket.socket(fileno=fd)
        family = probe.family
        probe.detach()
        factory = CountedListenerFactory(plans[description].factory, connections)
        port = reactor.adoptStreamPort(fd, family, factory)
        acceptOneAtATime(port)
        os.close(fd)
        ports[description] = port
    return ports


def _onSigterm(reactor: Any, number: int, frame: object) -> None:
    reactor.callFromThread(_stopOnce, reactor)


def _onRetire(reactor: Any, retirement: Retirement, number: int, frame: object) -> None:
    reactor.callFromThread(retirement.begin)


def _handleSignals(reactor: Any, retirement: Retirement, ready: int | None) -> None:
    """
    Once the reactor runs (after its own handlers, which would stop it a
    second time): SIGTERM stops the worker, SIGUSR2 (the main process
    runs a new worker in its place) retires it; then tell the main process
    that this worker serves.
    """
    signal.signal(signal.SIGTERM, partial(_onSigterm, reactor))
    signal.signal(signal.SIGUSR2, partial(_onRetire, reactor, retirement))
    _tellServing(ready)


def _stopOnce(reactor: Any) -> None:
    """
    Stop the reactor, which runs the graceful stop; a worker may get SIGTERM
    twice (systemd signals every process of the unit, then the main process
    passes the stop on), and the second one changes nothing.
    """
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def _retireAfter(reloader: Reloader) -> float:
    """
    C{[proxy] retire_after} as this worker runs it now: the reload that
    replaced it (the main process passes SIGHUP on before it starts the
    new worker) has read the file this worker retires under.
    """
    return reloader.current.config.retireAfter


def _tellServing(descriptor: int | None) -> None:
    """
    Tell the main process, on the pipe C{descriptor} it gave, that this
    worker serves its listeners (a worker it replaces may stop now).
    """
    if descriptor is not None:
        os.write(descriptor, b"serving\n")
        os.close(descriptor)


def _dieWithParent() -> None:
    """
    Ask Linux to send this worker SIGTERM if the main process dies, so no
    worker outlives it (even a SIGKILLed one).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _storesFor(
    config: Config,
    reactor: Any,
    descriptor: int | None,
    metrics: Metrics,
    sessions: Callable[[], tuple[SessionSnapshot, ...]] = tuple,
) -> SharedStores:
    """
    The worker's counters and session ledger: with a Redis store each
    process talks to Redis itself; else the main process's, over the
    inherited socket pair.  With a console, C{metrics} tell the main
    process over the same pair what this worker's filters and throttle
    did (the console's charts and blocks), and answer its questions about
    this worker's open C{sessions}.
    """
    link = _sharedCounters(reactor, descriptor, sessions)
    if link is not None and config.console is not None:
        metrics.watch(link.activityWatch())
    if config.counterStore is None and link is not None:
        return SharedStores(link, link)
    return sharedStores(config, reactor, metrics)


def _sharedCounters(
    reactor: Any,
    descriptor: int | None,
    sessions: Callable[[], tuple[SessionSnapshot, ...]] = tuple,
) -> RemoteCounters | None:
    """
    The main process's login counters and session ledger, over the
    inherited socket C{descriptor} (C{None}: none was given).
    """
    if descriptor is None:
        return None
    counters = RemoteCounters(reactor, sessions)
    reactor.adoptStreamConnection(descriptor, socket.AF_UNIX, Factory.forProtocol(lambda: counters))
    # The reactor's shutdown closes the pair: that is this worker ending.
    reactor.addSystemEventTrigger("before", "shutdown", counters.stopping)
    os.close(descriptor)
    return counters


def _parseArguments(argv: list[str] | None) -> argparse.Namespace:
    """
    The worker's command line, as L{popproxy._workerpool.WorkerPool} writes it.
    """
    parser = argparse.ArgumentParser(prog="popproxy worker")
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--upstream")
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--adopt", action="append", default=[])
    parser.add_argument("--counters", type=int)
    parser.add_argument("--ready", type=int)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """
    A worker process: adopt the inherited listening sockets and serve.
    """
    arguments = _parseArguments(argv)
    _dieWithParent()

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stdout, timeFormat="")], redirectStandardIO=False
    )
    readConfig: Callable[[], Config] = partial(
        _readConfig, arguments.config, tuple(arguments.listen), arguments.upstream
    )
    config = readConfig()
    metrics = Metrics()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if config.metrics is not None and directory:
        # The main process made the directory and serves what is counted in it.
        metrics.begin(None, directory)
    stop = GracefulStop(reactor, config.stopGrace, Lifecycle())
    chain = buildChain(config, reactor, metrics=metrics)
    stores = _storesFor(config, reactor, arguments.counters, metrics, stop.sessions.snapshot)
    counters = stores.counters
    admission = processAdmission(config, reactor, stores)
    kept = ReloadKept.fromConfig(config, reactor)
    generation = generationFrom(
        config, reactor, chain, metrics, stop, admission=admission, counters=counters, kept=kept
    )
    connections = OpenConnections()
    ports = _adopt(reactor, arguments.adopt, dict(generation.listeners), connections)
    listeners = AdoptedListeners(ports)
    rebuild = partial(rebuildGeneration, readConfig, reactor, chain.threads, metrics, stop)
    reloader = Reloader(
        partial(rebuild, admission=admission, counters=counters, kept=kept),
        listeners,
        generation,
    )
    ReloadOnHangup(reactor.callFromThread, reloader.reload).startService()  # type: ignore[attr-defined]
    log.info("worker serving {listeners}", listeners=", ".join(ports) or "nothing")
    # SIGTERM stops the reactor, which first stops accepting and lets the
    # sessions finish (the graceful stop), like the main process.
    stopOnShutdown(reactor, ports.values(), stop)
    retirement = Retirement(
        reactor,
        listeners,
        connections,
        partial(_stopOnce, reactor),
        partial(_retireAfter, reloader),
    )
    reactor.callWhenRunning(_handleSignals, reactor, retirement, arguments.ready)
    reactor.run()


if __name__ == "__main__":
    main()
