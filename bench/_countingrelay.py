"""
A counting TCP relay in front of the attack benchmark's Dovecot: what the
upstream really saw.

It is the C{forward} reference target (L{bench._forward}) with counters:
every connection the proxy opens to the upstream, how many were open at
once (the peak), and the command lines the proxy sent on them by verb
(C{USER}, C{PASS}, C{APOP}, C{AUTH}, ...), so "password attempts that
reached the upstream" is the number of C{PASS}, C{APOP} and C{AUTH} lines
it relayed.  It runs as a process of its own, so its work costs neither the
proxy nor the attacker; it writes its counters as JSON to a file every
0.2 s and once more when it stops::

    python3 bench/_countingrelay.py LISTEN_PORT UPSTREAM_PORT STATS_FILE

L{CountingRelayProcess} starts it, stops it and reads the counters.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):
    # Run as a script: make the bench package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.interfaces import IAddress, IReactorTCP, IReactorTime
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from bench._forward import LOOPBACK, _ClientSide

if TYPE_CHECKING:
    from bench._process import ManagedProcess

#: The verbs that carry a password (or a SASL exchange holding one).
PASSWORD_VERBS = ("PASS", "APOP", "AUTH")
#: A command line longer than this is counted as "overlong" and not parsed.
_LONGEST_LINE = 4096


class RelayCounters:
    """
    What the relay saw: connections (total, open now, peak) and the proxy's
    command lines by verb.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.peakOpen = 0
        self.verbs: Counter[str] = Counter()

    def opened(self) -> None:
        self.connections += 1
        self.open += 1
        self.peakOpen = max(self.peakOpen, self.open)

    def closed(self) -> None:
        self.open -= 1

    def line(self, line: bytes) -> None:
        verb = line.split(b" ", 1)[0].strip().upper()
        # Anything after the first line of AUTH (SASL responses) is counted
        # as "other": only the AUTH line itself is an attempt.
        self.verbs[verb.decode("ascii", "replace") if verb.isalpha() else "other"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "open": self.open,
            "peakOpen": self.peakOpen,
            "verbs": dict(self.verbs),
            "passwordAttempts": sum(self.verbs[verb] for verb in PASSWORD_VERBS),
        }


class _CountingClientSide(_ClientSide):
    """
    One relayed connection (the proxy's, to the upstream), whose command
    lines are counted.
    """

    def __init__(self, reactor: IReactorTCP, upstreamPort: int, counters: RelayCounters) -> None:
        super().__init__(reactor, upstreamPort)
        self.counters = counters
        self.pending = b""

    def connectionMade(self) -> None:
        self.counters.opened()
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\r\n")
        self.pending = lines.pop()
        if len(self.pending) > _LONGEST_LINE:
            self.counters.verbs["overlong"] += 1
            self.pending = b""
        for line in lines:
            self.counters.line(line)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.counters.closed()
        super().connectionLost(reason)


class _CountingFactory(ServerFactory):
    def __init__(self, reactor: IReactorTCP, upstreamPort: int, counters: RelayCounters) -> None:
        self.reactor = reactor
        self.upstreamPort = upstreamPort
        self.counters = counters

    def buildProtocol(self, addr: IAddress | None) -> _CountingClientSide:
        return _CountingClientSide(self.reactor, self.upstreamPort, self.counters)


def _writeStats(counters: RelayCounters, path: Path) -> None:
    """
    Replace C{path} with the counters at once (a reader never sees half).
    """
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(counters.snapshot()))
    os.replace(partial, path)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    listenPort, upstreamPort = int(argv[0]), int(argv[1])
    statsPath = Path(argv[2])
    counters = RelayCounters()
    tcp: IReactorTCP = reactor
    clock: IReactorTime = reactor
    tcp.listenTCP(
        listenPort, _CountingFactory(tcp, upstreamPort, counters), backlog=1024, interface=LOOPBACK
    )
    writer = LoopingCall(_writeStats, counters, statsPath)
    writer.clock = clock
    writer.start(0.2)
    reactor.addSystemEventTrigger("before", "shutdown", _writeStats, counters, statsPath)
    reactor.run()


class CountingRelayProcess:
    """
    One C{bench/_countingrelay.py} process in front of one upstream.
    """

    def __init__(self, upstreamPort: int) -> None:
        self.upstreamPort = upstreamPort
        self.directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-relay-"))
        # Removed by stop(); and at exit, should the run end without it.
        atexit.register(shutil.rmtree, self.directory, True)
        self.statsPath = self.directory / "stats.json"
        self.port = 0
        self._process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> None:
        from bench._process import ManagedProcess, freePort, waitForPort

        self.port = freePort()
        self._process = ManagedProcess(
            "relay",
            [sys.executable, str(Path(__file__).resolve()), str(self.port)]
            + [str(self.upstreamPort), str(self.statsPath)],
            cwd=self.directory,
            logPath=self.directory / "relay.out",
        )
        self._process.start()
        try:
            waitForPort(self.port, timeout)
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{self._process.output()}") from None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def counters(self) -> dict[str, Any]:
        """
        The counters as last written (zeros before the first write).
        """
        try:
            found: dict[str, Any] = json.loads(self.statsPath.read_text())
        except (FileNotFoundError, ValueError):
            return RelayCounters().snapshot()
        return found

    def stop(self) -> dict[str, Any]:
        """
        Stop the relay and return its final counters.
        """
        if self._process is not None:
            self._process.stop()
            self._process = None
        final = self.counters()
        shutil.rmtree(self.directory, ignore_errors=True)
        return final


if __name__ == "__main__":
    main(sys.argv[1:])
