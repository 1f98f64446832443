"""
The main process's side of C{[proxy] workers = N}: starts N - 1 worker
processes (C{python -m popproxy._workers}) that adopt its listening sockets,
relays their log lines (each prefixed with the worker's number), starts
again any that dies, passes a reload on to them (SIGHUP), replaces each by
a new process when a reload adds a listener, and stops them with itself.
Its listening ports, like the workers', accept one connection per wake-up
so the kernel spreads new sessions over the processes.  Given
the process's login counters (and its sessions per client network), it
serves them to each worker over a socket pair the worker inherits
(L{popproxy._sharedcounters}).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from popproxy._activity import ActivityWatch
from popproxy._config import Config
from popproxy._counterstore import ICounterStore
from popproxy._sessionledger import ISessionLedger
from popproxy._sessionrecord import SessionSnapshot
from popproxy._sharedcounters import CounterServer

log = Logger(namespace="popproxy.workers")

#: Seconds before a crashed worker is started again.
RESTART_DELAY = 1.0
#: Seconds a worker gets after SIGTERM, beyond the stop's grace period
#: (C{[proxy] stop_grace}), before SIGKILL.
STOP_TIMEOUT = 10.0


class _OneAcceptPort(tcp.Port):
    """
    A listening port that accepts one connection per wake-up.

    Twisted accepts a whole burst at once (up to 100 and growing), so with
    several processes on one socket whichever wakes first takes every
    pending client.  One at a time lets each woken process take one, which
    spreads connections (and their CPU) over the processes; POP3 sessions
    are long, so the extra wake-ups cost nothing that matters.
    """

    @property
    def numberAccepts(self) -> int:
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        pass


def acceptOneAtATime(port: Any) -> None:
    """
    Make a TCP listening port accept one connection per wake-up (see
    L{_OneAcceptPort}); other kinds of ports are left alone.
    """
    if type(port) is tcp.Port:
        port.__class__ = _OneAcceptPort


class _WorkerProcess(ProcessProtocol):
    """
    One worker: relays its log lines and reports when it serves and when
    it ended.

    @ivar adopted: the main process's listeners whose sockets it was given.
    @ivar serving: it has said (on its descriptor C{readyDescriptor}) that
        it serves them.
    @ivar retired: it was told to retire (SIGUSR2): a new worker serves in
        its place.
    """

    def __init__(
        self, pool: WorkerPool, number: int, adopted: tuple[Any, ...], readyDescriptor: int
    ) -> None:
        self.pool = pool
        self.number = number
        self.adopted = adopted
        self.readyDescriptor = readyDescriptor
        self.serving = False
        self.retired = False
        #: A reload came before it served: SIGHUP it once it does.
        self.reloadMissed = False
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        #: The main process's end of its socket pair.
        self.server: CounterServer | None = None
        self._buffer = b""

    def lacks(self, listeners: list[Any]) -> list[str]:
        """
        The descriptions of C{listeners} whose sockets it was not given.
        """
        return [
            listener.description
            for listener in listeners
            if not any(listener is mine for mine in self.adopted)
        ]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self.readyDescriptor:
            super().childDataReceived(childFD, data)
        elif not self.serving:
            self.serving = True
            self.pool._serving(self)

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                log.info(
                    "worker {number}: {line}",
                    number=self.number,
                    line=line.decode("utf-8", "replace"),
                )

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool._ended(self, reason)


@dataclass(frozen=True)
class WorkerLaunch:
    """
    What the pool needs to start its workers.

    @ivar workers: how many processes serve, this one included.
    @ivar configPath: the configuration file every worker reads (absolute),
        or C{None} for a configuration made of command-line flags only.
    @ivar upstream: the C{--upstream} flag to pass on, if one was given.
    @ivar listen: the C{--listen} flags to pass on, if any were given.
    @ivar stopGrace: seconds the workers' sessions may take to finish once
        they are told to stop.
    """

    workers: int
    configPath: Path | None
    upstream: str | None
    listen: tuple[str, ...] = ()
    stopGrace: float = 30.0

    @classmethod
    def fromConfig(cls, config: Config) -> WorkerLaunch:
        """
        The launch of the workers of C{config}.
        """
        return cls(
            workers=config.workers,
            configPath=(
                None if config.source == "<command line>" else Path(config.source).resolve()
            ),
            upstream=config.upstream if "upstream" in config.overridden else None,
            listen=config.listen if "listen" in config.overridden else (),
            stopGrace=config.stopGrace,
        )


class WorkerPool(Service):
    """
    Starts, restarts and stops the worker processes of the main process.

    @param listeners: the main process's L{popproxy._assembly.Listener} services; their
        sockets are handed to the workers once they listen.
    @param workerEnded: called with the process id of each worker that ended.
    @param counters: the login counters the workers share (C{None}: each
        worker keeps its own).
    @param ledger: the sessions per client network the workers share, over
        the same socket pair.
    @param watch: where the workers' activity (filter verdicts, login
        blocks) goes, over the same socket pair (the console's).
    """

    def __init__(
        self,
        reactor: Any,
        launch: WorkerLaunch,
        listeners: list[Any],
        workerEnded: Callable[[int], None] | None = None,
        counters: ICounterStore | None = None,
        ledger: ISessionLedger | None = None,
        watch: ActivityWatch | None = None,
    ) -> None:
        self._reactor = reactor
        self._counters = counters
        self._ledger = ledger
        self._watch = watch
        self._launch = launch
        self._listeners = listeners
        self._workerEnded = workerEnded
        self._workers: dict[int, _WorkerProcess] = {}
        #: By number, the worker a new one replaces (L{reload}), until it ended.
        self._retiring: dict[int, _WorkerProcess] = {}

    def startService(self) -> None:
        super().startService()
        for listener in self._listeners:
            acceptOneAtATime(listener.port)
        for number in range(1, self._launch.workers):
            self._startOrRetry(number)

    def _arguments(self, number: int) -> tuple[list[str], dict[int, int | str]]:
        launch = self._launch
        arguments = [sys.executable, "-m", "popproxy._workers", "--number", str(number)]
        if launch.configPath is not None:
            arguments += ["--config", str(launch.configPath)]
        if launch.upstream:
            arguments += ["--upstream", launch.upstream]
        for description in launch.listen:
            arguments += ["--listen", description]
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for listener in self._listeners:
            descriptor = listener.port.fileno()
            arguments += ["--adopt", f"{descriptor}:{listener.description}"]
            childFDs[descriptor] = descriptor
        return arguments, childFDs

    def reload(self, listeners: list[Any]) -> None:
        """
        The main process has reloaded: the running workers are told to
        reload (SIGHUP) from the same file, and workers started from now on
        adopt C{listeners}.  A worker that lacks one of them (the reload
        added it) is replaced: a new worker adopting all of them starts,
        and once it serves, the old one retires (L{popproxy._retirement}:
        it accepts no more and exits once its connections have ended by
        themselves).
        """
        self._listeners = listeners
        for listener in listeners:
            acceptOneAtATime(listener.port)
        # One being replaced still accepts until its successor serves.
        for worker in self._retiring.values():
            if not worker.retired:
                self._passReload(worker)
        for number, worker in sorted(self._workers.items()):
            self._passReload(worker)
            self._replaceIfLacking(number)

    def _passReload(self, worker: _WorkerProcess) -> None:
        """
        Tell C{worker} to reload (SIGHUP); one that does not serve yet gets
        it once it does (before its handler is installed, SIGHUP would end it).
        """
        if worker.serving:
            _signal(worker, "HUP")
        else:
            worker.reloadMissed = True

    def _replaceIfLacking(self, number: int) -> None:
        """
        Start a new worker C{number} if the running one lacks a listener.
        At most two processes hold a number: while the one replaced before
        still serves its connections, this one waits until it has ended.
        """
        worker = self._workers.get(number)
        if worker is None or not self.running:
            return
        lacking = worker.lacks(self._listeners)
        if not lacking:
            return
        if number in self._retiring:
            log.info(
                "worker {number} serves {listeners} once the one it replaced has ended",
                number=number,
                listeners=", ".join(lacking),
            )
            return
        log.info(
            "worker {number} is replaced by one that serves {listeners} too",
            number=number,
            listeners=", ".join(lacking),
        )
        replaced = self._workers[number]
        # If it cannot start, the old one serves on until a later reload.
        if self._spawn(number):
            self._retiring[number] = replaced

    def _serving(self, worker: _WorkerProcess) -> None:
        """
        C{worker} serves its listeners: the one it replaces may stop.
        """
        if worker.reloadMissed:
            worker.reloadMissed = False
            _signal(worker, "HUP")
        replaced = self._retiring.get(worker.number)
        if replaced is None or replaced.retired or self._workers.get(worker.number) is not worker:
            return
        log.info(
            "worker {number} (pid {pid}) serves; the one it replaces (pid {old}) "
            "accepts no more and exits once its connections have ended",
            number=worker.number,
            pid=worker.pid,
            old=replaced.pid,
        )
        replaced.retired = True
        # A number: Twisted turns only the names of a few signals into theirs.
        _signal(replaced, signal.SIGUSR2)

    def _stop(self, worker: _WorkerProcess) -> None:
        """
        Tell C{worker} to stop (SIGTERM: it stops accepting and lets each
        session finish its command in flight), and kill it if it is still
        running once the stop's grace period and L{STOP_TIMEOUT} have passed.
        """
        _signal(worker, "TERM")
        self._reactor.callLater(self._launch.stopGrace + STOP_TIMEOUT, _kill, worker)

    def _spawn(self, number: int) -> bool:
        """
        Start worker C{number}; whether it could be started (a failed fork,
        e.g. out of descriptors or processes, is logged and leaves nothing
        registered).
        """
        arguments, childFDs = self._arguments(number)
        ours, theirs = socket.socketpair() if self._counters is not None else (None, None)
        if theirs is not None:
            arguments += ["--counters", str(theirs.fileno())]
            childFDs[theirs.fileno()] = theirs.fileno()
        # A pipe of its own on which the worker says it serves.
        ready = max(childFDs) + 1
        childFDs[ready] = "r"
        arguments += ["--ready", str(ready)]
        worker = _WorkerProcess(self, number, tuple(self._listeners), ready)
        try:
            process = self._reactor.spawnProcess(
                worker, sys.executable, arguments, env=dict(os.environ), childFDs=childFDs
            )
        except Exception:
            log.failure("cannot start worker {number}", number=number)
            if ours is not None:
                ours.close()
            return False
        finally:
            if theirs is not None:
                theirs.close()
        self._workers[number] = worker
        if ours is not None:
            worker.server = self._serveCounters(ours)
        worker.pid = getattr(process, "pid", None)
        log.info("started worker {number}", number=number)
        return True

    def _serveCounters(self, ours: socket.socket) -> CounterServer:
        """
        Answer a worker's counter requests on our end of its socket pair
        (the reactor takes a copy of the descriptor).
        """
        assert self._counters is not None
        server = CounterServer(self._counters, self._ledger, self._watch, self._reactor)
        factory = Factory.forProtocol(lambda: server)
        self._reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
        ours.close()
        return server

    def askSessions(self) -> list[tuple[int, Deferred[tuple[SessionSnapshot, ...]]]]:
        """
        Ask every running worker for its open sessions (those a replaced
        worker is finishing too): by worker number, the answer to come.
        """
        return [
            (worker.number, worker.server.askSessions())
            for worker in sorted(self._processes(), key=lambda worker: worker.number)
            if worker.server is not None
        ]

    def _ended(self, worker: _WorkerProcess, reason: Failure) -> None:
        if self._workerEnded is not None and worker.pid is not None:
            self._workerEnded(worker.pid)
        if self._retiring.get(worker.number) is worker:
            del self._retiring[worker.number]
            log.info(
                "worker {number} replaced (pid {pid}) ended ({reason})",
                number=worker.number,
                pid=worker.pid,
                reason=reason.getErrorMessage(),
            )
            self._replaceIfLacking(worker.number)
            return
        if self._workers.get(worker.number) is worker:
            del self._workers[worker.number]
        if self.running:
            log.warn(
                "worker {number} ended ({reason}); starting it again",
                number=worker.number,
                reason=reason.getErrorMessage(),
            )
            self._reactor.callLater(RESTART_DELAY, self._respawn, worker.number)

    def _respawn(self, number: int) -> None:
        if self.running and number not in self._workers:
            self._startOrRetry(number)

    def _startOrRetry(self, number: int) -> None:
        """
        Start worker C{number}, or try again after L{RESTART_DELAY}.
        """
        if not self._spawn(number):
            self._reactor.callLater(RESTART_DELAY, self._respawn, number)

    def _processes(self) -> list[_WorkerProcess]:
        """
        Every worker process running: the current ones and those replaced
        that are finishing their connections.
        """
        return [*self._workers.values(), *self._retiring.values()]

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        endings = []
        for worker in self._processes():
            endings.append(worker.ended)
            self._stop(worker)
        return DeferredList(endings)


def _signal(worker: _WorkerProcess, signalID: str | int) -> None:
    if worker.transport is None:  # never started
        return
    try:
        worker.transport.signalProcess(signalID)
    except (ProcessExitedAlready, ProcessLookupError):  # already gone (its end is on its way)
        pass


def _kill(worker: _WorkerProcess) -> None:
    if not worker.ended.called:
        _signal(worker, "KILL")
