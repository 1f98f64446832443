"""
The servers under test, by name, and the processes that belong to each.

C{direct} is Dovecot itself, C{nginx} the reference proxy, C{forward} a bare
Twisted byte forwarder (the floor of any Twisted relay), C{haproxyN} and
C{haproxyN-VARIANT} N popproxy instances behind HAProxy (L{bench._balanced}),
every other name a popproxy started as its L{Variant} says.  L{Targets}
starts and stops them and tells which processes count for memory
(popproxy's process and its workers, nginx's workers, the forwarder's
process, the balancer and all its instances) and for CPU (nginx's master as
well).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench import _pinning, _process
from bench._balanced import BalancedPopproxies
from bench._dovecot import DovecotServer
from bench._forward import ForwarderProcess
from bench._nginx import NginxMailProxy
from bench._popproxy import PopproxyProcess
from bench._settings import Settings, parseBalanced


class Targets:
    """
    Some of the targets, started for one phase of the benchmark.
    """

    def __init__(self, dovecot: DovecotServer, settings: Settings) -> None:
        self.dovecot = dovecot
        self.settings = settings
        self.nginx: NginxMailProxy | None = None
        self.forwarder: ForwarderProcess | None = None
        self.popproxies: dict[str, PopproxyProcess] = {}
        self.balanced: dict[str, BalancedPopproxies] = {}

    def start(self, names: tuple[str, ...], connections: int) -> None:
        """
        Start the named targets (C{direct} is always there), each sized for
        C{connections} concurrent clients.
        """
        for name in names:
            if name == "nginx":
                self.nginx = NginxMailProxy(
                    self.dovecot.port, self.settings.nginxWorkers, connections
                )
                self.nginx.start()
            elif name == "forward":
                self.forwarder = ForwarderProcess(self.dovecot.port)
                self.forwarder.start()
            elif (balanced := parseBalanced(name)) is not None:
                group = BalancedPopproxies(
                    name,
                    self.dovecot.port,
                    self.settings.variants[balanced.variant],
                    balanced.instances,
                    connections,
                )
                self.balanced[name] = group
                group.start()
            elif name != "direct":
                variant = self.settings.variants[name]
                proxy = PopproxyProcess(
                    self.dovecot.port, config=variant.config, source=variant.source, label=name
                )
                self.popproxies[name] = proxy
                proxy.start()
        if self.settings.pin is not None:
            for name in names:
                self._pin(name, self.settings.pin.proxy)

    def _pin(self, name: str, cpus: frozenset[int]) -> None:
        """
        Pin every process of target C{name} to C{cpus}.  A child forked
        after this inherits the affinity, but one being forked while the
        parent is pinned keeps the old one and shows up a moment later: look
        again until a look finds no new process (bounded).
        """
        pinned: set[int] = set()
        for _ in range(20):
            pids = set(self.cpuPids(name)) - pinned
            if not pids and pinned:
                return
            for pid in pids:
                _pinning.pinProcess(pid, cpus)
            pinned |= pids
            time.sleep(0.1)

    def port(self, name: str) -> int:
        if name == "direct":
            return self.dovecot.port
        if name == "nginx":
            assert self.nginx is not None
            return self.nginx.port
        if name == "forward":
            assert self.forwarder is not None
            return self.forwarder.port
        if name in self.balanced:
            return self.balanced[name].port
        return self.popproxies[name].port

    def memoryPids(self, name: str) -> list[int]:
        """
        The processes holding the sessions: popproxy's process and its
        workers (C{[proxy] workers}), nginx's workers (its master holds
        none), the forwarder's one process, HAProxy and all its instances;
        none for C{direct}.
        """
        if name == "nginx" and self.nginx is not None:
            return self.nginx.workerPids()
        if name == "forward" and self.forwarder is not None:
            return [self.forwarder.pid]
        if name in self.popproxies:
            pid = self.popproxies[name].pid
            return [pid, *_process.descendantsOf(pid)]
        if name in self.balanced:
            return self.balanced[name].pids()
        return []

    def cpuPids(self, name: str) -> list[int]:
        if name == "nginx" and self.nginx is not None:
            return [self.nginx.pid, *self.nginx.workerPids()]
        return self.memoryPids(name)

    def rss(self, name: str) -> int:
        """
        Resident memory of the target's session processes now, in bytes.
        """
        return sum(_process.memory(pid)["VmRSS"] for pid in self.memoryPids(name))

    def resetPeak(self, name: str) -> None:
        for pid in self.memoryPids(name):
            _process.resetPeak(pid)

    def peak(self, name: str) -> int:
        """
        Peak resident memory since L{resetPeak}, in bytes (summed over
        nginx's workers).
        """
        return sum(_process.memory(pid)["VmHWM"] for pid in self.memoryPids(name))

    def cpuTimes(self, name: str) -> tuple[float, float]:
        """
        User and system CPU seconds the target's processes used so far.
        """
        times = [_process.cpuTimes(pid) for pid in self.cpuPids(name)]
        return sum(user for user, _ in times), sum(system for _, system in times)

    def stop(self) -> None:
        for proxy in self.popproxies.values():
            proxy.stop()
        self.popproxies.clear()
        for group in self.balanced.values():
            group.stop()
        self.balanced.clear()
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None


@contextmanager
def startedTarget(
    settings: Settings, dovecot: DovecotServer, name: str, connections: int
) -> Iterator[Targets]:
    """
    The target C{name} alone, started for C{connections} client connections
    for the length of a C{with} block, and stopped after it.
    """
    targets = Targets(dovecot, settings)
    try:
        targets.start((name,), connections)
        yield targets
    finally:
        targets.stop()
