"""
One benchmark target made of several popproxy instances behind HAProxy.

The instances are started as their L{Variant} says, each with a
C{haproxy:} listener on its own loopback port; then the balancer
(L{bench._haproxy}) in front of them, round robin with C{send-proxy-v2}.
The load generator connects to the balancer.  Memory and CPU are counted
over the whole target: the balancer and every instance with its workers.
Loopback is in popproxy's default C{[limits] trusted_networks}, so neither
the load generator's address (from the PROXY header) nor the balancer's
health checks meet the per-address limits, as with the other popproxy
targets.  What it started (pids, ports) is printed when it starts, and
how many sessions each instance served when it stops: the balance.
"""

from __future__ import annotations

from bench import _process
from bench._haproxy import HaproxyBalancer
from bench._popproxy import PopproxyProcess
from bench._report import progress
from bench._settings import Variant


class BalancedPopproxies:
    """
    C{instances} popproxy processes and the HAProxy in front of them.
    """

    def __init__(
        self,
        label: str,
        upstreamPort: int,
        variant: Variant,
        instances: int,
        connections: int,
    ) -> None:
        self.instances = [
            PopproxyProcess(
                upstreamPort,
                config=variant.config,
                source=variant.source,
                label=f"{label}/{number}",
                behindBalancer=True,
            )
            for number in range(1, instances + 1)
        ]
        self.label = label
        self.connections = connections
        self.balancer: HaproxyBalancer | None = None

    def start(self) -> None:
        """
        Start every instance, then the balancer; a failure stops what was
        started.
        """
        try:
            for instance in self.instances:
                instance.start()
            self.balancer = HaproxyBalancer(
                [instance.port for instance in self.instances], self.connections
            )
            self.balancer.start()
        except BaseException:
            self.stop()
            raise
        instances = " ".join(f"{i.pid}@{i.port}" for i in self.instances)
        progress(
            f"{self.label}: haproxy pid {self.balancer.pid} on 127.0.0.1:{self.port}, "
            f"popproxy pid@port {instances}"
        )

    @property
    def port(self) -> int:
        assert self.balancer is not None
        return self.balancer.port

    def pids(self) -> list[int]:
        """
        The balancer, each instance and each instance's workers.
        """
        found = [] if self.balancer is None else [self.balancer.pid]
        for instance in self.instances:
            if instance.running:
                found += [instance.pid, *_process.descendantsOf(instance.pid)]
        return found

    def stop(self) -> None:
        if self.balancer is not None and all(i.running for i in self.instances):
            served = ", ".join(str(i.sessionsQuit()) for i in self.instances)
            progress(f"{self.label}: sessions served by each instance: {served}")
        if self.balancer is not None:
            self.balancer.stop()
            self.balancer = None
        for instance in self.instances:
            instance.stop()
