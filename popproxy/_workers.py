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
standard output, which the main process relays.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from popproxy._assembly import buildChain, forListener, sessionFactories, wrappedFactory
from popproxy._config import Config, loadConfig
from popproxy._metrics import Metrics, listenerLabel
from popproxy._workerpool import acceptOneAtATime


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


def main(argv: list[str] | None = None) -> None:
    """
    A worker process: adopt the inherited listening sockets and serve.
    """
    parser = argparse.ArgumentParser(prog="popproxy worker")
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--upstream")
    parser.add_argument("--adopt", action="append", default=[])
    arguments = parser.parse_args(argv)
    _dieWithParent()

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stdout, timeFormat="")], redirectStandardIO=False
    )
    config = loadConfig(arguments.config) if arguments.config else Config()
    config = config.withOverrides(upstream=arguments.upstream)
    metrics = Metrics()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if config.metrics is not None and directory:
        # The main process made the directory and serves what is counted in it.
        metrics.begin(None, directory)
    chain = buildChain(config, reactor, metrics)
    factory, secure, serverTLS = sessionFactories(config, reactor, chain, metrics)
    for adopted in arguments.adopt:
        descriptor, kind, position = adopted.split(":")
        fd = int(descriptor)
        probe = socket.socket(fileno=fd)
        family = probe.family
        probe.detach()
        descriptions = config.listen if kind == "plain" else config.tls.listen
        table, sessions = ("proxy", factory) if kind == "plain" else ("tls", secure)
        sessions = forListener(sessions, listenerLabel(table, int(position)))
        _, wrapped = wrappedFactory(
            reactor, descriptions[int(position)], sessions, serverTLS if kind == "tls" else None
        )
        port = reactor.adoptStreamPort(fd, family, wrapped)  # type: ignore[attr-defined]
        acceptOneAtATime(port)
        os.close(fd)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
