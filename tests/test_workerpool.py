"""
Tests for popproxy._workerpool, the main process's side of workers = N:
the command lines and sockets it hands to worker processes, restarting a
worker that dies, passing a reload on, replacing the workers when a reload
adds a listener, stopping them all, and accepting
one connection per wake-up (the processes themselves run in tests/test_workers.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from popproxy._config import Config, TlsConfig
from popproxy._memorycounters import MemoryCounters
from popproxy._sharedcounters import CounterServer
from popproxy._workerpool import (
    RESTART_DELAY,
    STOP_TIMEOUT,
    WorkerLaunch,
    WorkerPool,
    acceptOneAtATime,
)


@dataclass
class FakeTransport:
    signals: list[str | int] = field(default_factory=list)
    pid: int = 0

    def signalProcess(self, signalID: str | int) -> None:
        # As Twisted's: a name only for HUP, STOP, INT, KILL and TERM.
        assert isinstance(signalID, int) or signalID in ("HUP", "STOP", "INT", "KILL", "TERM")
        self.signals.append(signalID)


class ProcessReactor(Clock):
    """
    A clock that records the processes it is asked to spawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, int | str]]] = []
        #: Forks that fail (as with EAGAIN or EMFILE) before the next succeeds.
        self.failures = 0

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any
    ) -> FakeTransport:
        if self.failures:
            self.failures -= 1
            raise OSError(11, "Resource temporarily unavailable")
        transport = FakeTransport(pid=1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, args, childFDs))
        return transport


@dataclass
class FakePort:
    descriptor: int

    def fileno(self) -> int:
        return self.descriptor


@dataclass
class FakeListener:
    port: Any
    description: str = "tcp:110"


def startedPool(config: Config, listeners: list[Any]) -> tuple[WorkerPool, ProcessReactor]:
    """
    A started pool whose workers have said they serve.
    """
    reactor = ProcessReactor()
    pool = WorkerPool(reactor, WorkerLaunch.fromConfig(config), listeners)
    pool.startService()
    for worker, _, _ in reactor.spawned:
        sayServing(worker)
    return pool, reactor


def test_workerCommandLines() -> None:
    """
    N - 1 workers run C{python -m popproxy._workers} with their number,
    the configuration and command-line upstream, and every listening socket
    with its listen description, each kept open in the child under its own
    descriptor.
    """
    config = Config(
        source="/etc/popproxy/twistd.conf",
        workers=3,
        listen=("tcp:110",),
        tls=TlsConfig(listen=("tcp:995",)),
    ).withOverrides(upstream="tcp:pop.example.com:110")
    _, reactor = startedPool(
        config, [FakeListener(FakePort(7), "tcp:110"), FakeListener(FakePort(8), "tcp:995")]
    )
    commands = [args for _, args, _ in reactor.spawned]
    assert commands == [
        [
            *[sys.executable, "-m", "popproxy._workers", "--number", str(number)],
            *["--config", "/etc/popproxy/twistd.conf"],
            *["--upstream", "tcp:pop.example.com:110"],
            *["--adopt", "7:tcp:110", "--adopt", "8:tcp:995"],
            *["--ready", "9"],
        ]
        for number in (1, 2)
    ]
    childFDs = reactor.spawned[0][2]
    # A pipe on which it says it serves, on a descriptor of its own.
    assert childFDs == {0: "w", 1: "r", 2: "r", 7: 7, 8: 8, 9: "r"}


def test_workerLogRelayed() -> None:
    """
    A worker's output is logged line by line, whatever the chunks it
    arrives in, each line prefixed with the worker's number.
    """
    _, reactor = startedPool(Config(workers=2, listen=()), [])
    worker, _, _ = reactor.spawned[0]
    with capturedLogs() as events:
        worker.outReceived(b"first li")
        worker.errReceived(b"ne\n\nsecond line\nthi")
    assert [formatEvent(e) for e in events] == ["worker 1: first line", "worker 1: second line"]


def test_commandLineListenPassedOn() -> None:
    """
    C{--listen} flags reach the workers too, so they read the same
    listeners as the main process.
    """
    config = Config(workers=2).withOverrides(listen=("tcp:1110", "haproxy:tcp:1111"))
    _, reactor = startedPool(config, [])
    arguments = reactor.spawned[0][1]
    assert arguments[5:9] == ["--listen", "tcp:1110", "--listen", "haproxy:tcp:1111"]


def test_reloadPassedOn() -> None:
    """
    After a reload that adds no listener (here it removes one), every
    running worker gets SIGHUP and none is started or stopped; a worker
    started afterwards adopts the new set of listeners.
    """
    kept, removed = FakeListener(FakePort(7)), FakeListener(FakePort(8), "tcp:111")
    pool, reactor = startedPool(Config(workers=3, listen=()), [kept, removed])
    (first, _, _), (second, _, _) = reactor.spawned
    pool.reload([kept])
    assert first.transport.signals == second.transport.signals == ["HUP"]
    assert len(reactor.spawned) == 2
    first.processEnded(Failure(ProcessTerminated(signal=9)))
    reactor.advance(RESTART_DELAY)
    assert adopted(reactor.spawned[2][1]) == ["7:tcp:110"]
    # Descriptor 8 is now its --ready pipe.
    assert reactor.spawned[2][2] == {0: "w", 1: "r", 2: "r", 7: 7, 8: "r"}


def adopted(arguments: list[str]) -> list[str]:
    """
    The listening sockets a worker's command line gives it.
    """
    pairs = zip(arguments, arguments[1:], strict=False)
    return [value for flag, value in pairs if flag == "--adopt"]


def sayServing(worker: Any) -> None:
    """
    What a worker does once it serves: write on its --ready pipe.
    """
    worker.childDataReceived(worker.readyDescriptor, b"serving\n")


def test_reloadAddingAListenerReplacesTheWorkers() -> None:
    """
    A reload that adds a listener starts, for each worker, a new one with
    the same number that adopts every listener; the old one gets the
    reload (SIGHUP) and, only once its successor says it serves, is told
    to retire (SIGUSR2: it accepts no more and exits once its connections
    have ended, however long that takes: no SIGTERM, no SIGKILL); it is not
    started again when it ends.
    """
    first = FakeListener(FakePort(7))
    pool, reactor = startedPool(Config(workers=3, listen=(), stopGrace=5.0), [first])
    (old1, _, _), (old2, _, _) = reactor.spawned
    with capturedLogs() as events:
        pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    numbers = [args[3:5] for _, args, _ in reactor.spawned[2:]]
    assert numbers == [["--number", "1"], ["--number", "2"]]
    (new1, args1, childFDs1), (new2, _, _) = reactor.spawned[2:]
    assert adopted(args1) == ["7:tcp:110", "9:tcp:995"]
    assert childFDs1 == {0: "w", 1: "r", 2: "r", 7: 7, 9: 9, 10: "r"}
    assert args1[-2:] == ["--ready", "10"]
    assert old1.transport.signals == old2.transport.signals == ["HUP"]
    assert "worker 1 is replaced by one that serves tcp:995 too" in map(formatEvent, events)
    sayServing(new1)
    assert old1.transport.signals == ["HUP", signal.SIGUSR2]
    assert old2.transport.signals == ["HUP"]
    sayServing(new2)
    sayServing(new2)
    assert old2.transport.signals == ["HUP", signal.SIGUSR2]
    old1.processEnded(Failure(ProcessTerminated(exitCode=0)))
    reactor.advance(3600)
    assert old2.transport.signals == ["HUP", signal.SIGUSR2]
    old2.processEnded(Failure(ProcessTerminated(exitCode=0)))
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 4
    assert new1.transport.signals == new2.transport.signals == []


def test_replacedWorkerKeepsServingUntilItsSuccessorDoes() -> None:
    """
    A new worker that dies before it serves is started again like any
    worker, and the one it replaces keeps serving (no SIGUSR2) until a
    successor serves.
    """
    first = FakeListener(FakePort(7))
    pool, reactor = startedPool(Config(workers=2, listen=()), [first])
    old, _, _ = reactor.spawned[0]
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    failed, _, _ = reactor.spawned[1]
    failed.processEnded(Failure(ProcessTerminated(exitCode=1)))
    reactor.advance(RESTART_DELAY)
    again, args, _ = reactor.spawned[2]
    assert adopted(args) == ["7:tcp:110", "9:tcp:995"]
    assert old.transport.signals == ["HUP"]
    sayServing(again)
    assert old.transport.signals == ["HUP", signal.SIGUSR2]


def test_atMostTwoProcessesPerWorker() -> None:
    """
    A second reload adding a listener while a replaced worker still
    serves its connections starts nothing more (never more than two
    processes per worker number); once the replaced one has ended, the
    worker is replaced again by one that adopts every listener.
    """
    first, second = FakeListener(FakePort(7)), FakeListener(FakePort(8), "tcp:111")
    pool, reactor = startedPool(Config(workers=2, listen=()), [first])
    old, _, _ = reactor.spawned[0]
    pool.reload([first, second])
    middle, _, _ = reactor.spawned[1]
    sayServing(middle)
    pool.reload([first, second, FakeListener(FakePort(9), "tcp:995")])
    assert len(reactor.spawned) == 2
    assert middle.transport.signals == ["HUP"]
    old.processEnded(Failure(ProcessTerminated(exitCode=0)))
    newest, args, _ = reactor.spawned[2]
    assert adopted(args) == ["7:tcp:110", "8:tcp:111", "9:tcp:995"]
    sayServing(newest)
    assert middle.transport.signals == ["HUP", signal.SIGUSR2]
    assert old.transport.signals == ["HUP", signal.SIGUSR2]


def test_stopDuringAHandOver() -> None:
    """
    Stopping the pool while a worker is being replaced stops both
    processes (SIGTERM: the stop's grace period applies to both, then
    SIGKILL), waits for both, and starts neither again.
    """
    first = FakeListener(FakePort(7))
    pool, reactor = startedPool(Config(workers=2, listen=(), stopGrace=5.0), [first])
    old, _, _ = reactor.spawned[0]
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    new, _, _ = reactor.spawned[1]
    sayServing(new)
    stopped: list[object] = []
    pool.stopService().addBoth(stopped.append)
    assert old.transport.signals == ["HUP", signal.SIGUSR2, "TERM"]
    assert new.transport.signals == ["TERM"]
    new.processEnded(Failure(ProcessTerminated(signal=15)))
    reactor.advance(5.0 + STOP_TIMEOUT)
    assert old.transport.signals == ["HUP", signal.SIGUSR2, "TERM", "KILL"]
    assert stopped == []
    old.processEnded(Failure(ProcessTerminated(signal=9)))
    assert len(stopped) == 1
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 2


def test_deadWorkerStartsAgain() -> None:
    """
    A worker that dies is started again RESTART_DELAY seconds later, with
    the same number.
    """
    pool, reactor = startedPool(Config(workers=2, listen=()), [])
    worker, _, _ = reactor.spawned[0]
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 2
    assert reactor.spawned[1][1][3:5] == ["--number", "1"]


def test_stopTermsThenKills() -> None:
    """
    Stopping the pool sends every worker SIGTERM, SIGKILL to one still
    running STOP_TIMEOUT seconds after the stop's grace period (not
    before: its sessions may be finishing), and does not start them again.
    """
    pool, reactor = startedPool(Config(workers=3, listen=(), stopGrace=5.0), [])
    (first, _, _), (second, _, _) = reactor.spawned
    stopped = pool.stopService()
    first.processEnded(Failure(ProcessTerminated(signal=15)))
    reactor.advance(5.0 + STOP_TIMEOUT - 0.1)
    assert second.transport.signals == ["TERM"]
    reactor.advance(0.1)
    assert first.transport.signals == ["TERM"]
    assert second.transport.signals == ["TERM", "KILL"]
    second.processEnded(Failure(ProcessTerminated(signal=9)))
    assert stopped.called
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 2


def test_acceptOneAtATime() -> None:
    """
    A TCP listening port takes one connection per wake-up, even when
    Twisted sets its burst size; other ports are left alone.
    """
    port = tcp.Port(0, ServerFactory(), interface="127.0.0.1")
    acceptOneAtATime(port)
    port.numberAccepts = 100
    assert port.numberAccepts == 1
    other = FakePort(3)
    acceptOneAtATime(other)
    assert type(other) is FakePort


def test_launchIsThePoolsShareOfTheConfiguration() -> None:
    """
    The pool receives only what starting workers takes: the number of
    processes, the file's absolute path (none for flags only), a
    command-line upstream (not one from the file), command-line
    listeners and the stop's grace period (for how long to wait for them).
    """
    fromFile = Config(
        source="twistd.conf",
        workers=3,
        stopGrace=12.5,
        upstream="tcp:pop.file.test:110",
        listen=("tcp:110", "tcp:111"),
    )
    assert WorkerLaunch.fromConfig(fromFile) == WorkerLaunch(
        3, Path("twistd.conf").resolve(), None, (), 12.5
    )
    flags = Config(workers=2).withOverrides(("tcp:1110",), "tcp:pop.flag.test:110")
    assert WorkerLaunch.fromConfig(flags) == WorkerLaunch(
        2, None, "tcp:pop.flag.test:110", ("tcp:1110",)
    )


def test_endedWorkerReported() -> None:
    """
    Each worker that ends is reported by its process id (the metrics take
    its open sessions out of their sums), the one started again too.
    """
    reactor = ProcessReactor()
    ended: list[int] = []
    pool = WorkerPool(
        reactor, WorkerLaunch.fromConfig(Config(workers=2, listen=())), [], ended.append
    )
    pool.startService()
    worker, _, _ = reactor.spawned[0]
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    reactor.advance(RESTART_DELAY)
    again, _, _ = reactor.spawned[1]
    pool.stopService()
    again.processEnded(Failure(ProcessTerminated(signal=15)))
    assert ended == [1000, 1001]


class AdoptingReactor(ProcessReactor):
    """
    A ProcessReactor that also records the connections it adopts (keeping
    a copy of each descriptor, as the real reactor does).
    """

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[tuple[socket.socket, Any]] = []

    def adoptStreamConnection(self, descriptor: int, family: Any, factory: Any) -> None:
        self.adopted.append((socket.socket(fileno=os.dup(descriptor)), factory))


def test_workersGetTheCountersSocket() -> None:
    """
    Given the process's login counters, each worker inherits its own end
    of a UNIX socket pair (named by --counters and kept open in the child)
    and the main process answers on the other end from those counters.
    """
    reactor = AdoptingReactor()
    counters = MemoryCounters(reactor)
    launch = WorkerLaunch.fromConfig(Config(workers=3, listen=()))
    WorkerPool(reactor, launch, [], None, counters).startService()
    for _, args, childFDs in reactor.spawned:
        descriptor = int(args[args.index("--counters") + 1])
        assert childFDs[descriptor] == descriptor
    assert len(reactor.adopted) == 2
    for ours, factory in reactor.adopted:
        assert ours.family == socket.AF_UNIX
        server = factory.buildProtocol(None)
        assert isinstance(server, CounterServer) and server._store is counters
        ours.close()


def test_replacedWorkerIsAskedForItsSessions() -> None:
    """
    While a replaced worker finishes its sessions, the console's list of
    open sessions asks it too, under the worker's number, beside its
    successor.
    """
    reactor = AdoptingReactor()
    first = FakeListener(FakePort(7))
    launch = WorkerLaunch.fromConfig(Config(workers=2, listen=()))
    pool = WorkerPool(reactor, launch, [first], None, MemoryCounters(reactor))
    pool.startService()
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    sayServing(reactor.spawned[1][0])
    asked = pool.askSessions()
    assert [number for number, _ in asked] == [1, 1]
    unconnected: list[Failure] = []  # the fake reactor connects neither pair
    for _, answer in asked:
        answer.addErrback(unconnected.append)
    assert len(unconnected) == 2
    for ours, _ in reactor.adopted:
        ours.close()


def test_reloadBeforeAWorkerServesWaitsForIt() -> None:
    """
    A worker that has not said it serves yet (its SIGHUP handler may not be
    installed: the signal would end it) gets a reload's SIGHUP only once it
    serves; a successor starting during a second reload is not killed by it.
    """
    reactor = ProcessReactor()
    first = FakeListener(FakePort(7))
    pool = WorkerPool(reactor, WorkerLaunch.fromConfig(Config(workers=2, listen=())), [first])
    pool.startService()
    worker, _, _ = reactor.spawned[0]
    pool.reload([first])
    assert worker.transport.signals == []
    sayServing(worker)
    assert worker.transport.signals == ["HUP"]
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    successor, _, _ = reactor.spawned[1]
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    assert successor.transport.signals == []
    assert worker.transport.signals == ["HUP", "HUP", "HUP"]
    sayServing(successor)
    assert successor.transport.signals == ["HUP"]
    assert worker.transport.signals == ["HUP", "HUP", "HUP", signal.SIGUSR2]


def test_failedForkKeepsTheWorkerItWouldReplace() -> None:
    """
    When the new worker cannot be started (a failed fork), the old one
    keeps serving and still gets later reloads and the stop; a later
    reload tries the replacement again.  A worker that cannot be started
    at all is tried again after RESTART_DELAY.
    """
    first = FakeListener(FakePort(7))
    pool, reactor = startedPool(Config(workers=2, listen=()), [first])
    worker, _, _ = reactor.spawned[0]
    reactor.failures = 1
    with capturedLogs() as events:
        pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    assert any("cannot start worker 1" in formatEvent(e) for e in events)
    assert len(reactor.spawned) == 1
    pool.reload([first, FakeListener(FakePort(9), "tcp:995")])
    assert worker.transport.signals == ["HUP", "HUP"]
    assert len(reactor.spawned) == 2
    pool.stopService()
    assert worker.transport.signals[-1] == "TERM"
    reactor.failures = 1
    again = WorkerPool(reactor, WorkerLaunch.fromConfig(Config(workers=2, listen=())), [first])
    again.startService()
    assert len(reactor.spawned) == 2
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 3
