"""
What the filter threads cost: messages per second through the daemon's
L{FilterChain} with the real reactor, with filters run as before (a
synchronous C{filterMessage} called on the reactor thread, offloaded work
in Twisted's thread pool) and as now (synchronous calls and offloaded work
in L{FilterThreads}, stoppable at the timeout).

    python3 bench/chainthreads.py [--rounds 5] [--sessions 1]

Chains: C{count} (the documented example, a synchronous filter), C{strip+tag}
(the shipped coroutine filters; tag without spamd) and all three.  Each
figure is the best of C{--rounds} passes over the mailbox, with
C{--sessions} retrievals in flight at once: messages per second (wall
clock, sensitive to other load on the machine) and CPU microseconds per
message (all threads of the process: the cost that limits throughput).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults  # noqa: E402
from twisted.internet.task import react  # noqa: E402
from twisted.internet.threads import deferToThreadPool  # noqa: E402

from bench._corpus import Mailbox, mailbox50k, mixedMailbox  # noqa: E402
from popproxy._chain import ChainEntry, FilterChain  # noqa: E402
from popproxy._filterthreads import FilterThreads  # noqa: E402
from popproxy.interfaces import FilterContext  # noqa: E402
from popproxy.testing import loadPlugin  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "attachment_count.py"
CONTEXT = FilterContext("RETR", 1, "alice", "127.0.0.1:5", "tcp:u:110", "bench", "u1")


def _chain(reactor: Any, filters: Sequence[Any], threads: FilterThreads | None) -> FilterChain:
    def runInThread(function: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function)

    entries = [ChainEntry(f.name, f) for f in filters]
    return FilterChain(entries, reactor, None, runInThread, 64 * 1024, threads=threads)


async def _pass(chain: FilterChain, mailbox: Mailbox, sessions: int) -> tuple[float, float]:
    """
    Wall-clock and CPU seconds (all threads of the process) of one pass.
    """
    limit = DeferredSemaphore(sessions)
    started, cpu = time.perf_counter(), time.process_time()
    await gatherResults([limit.run(chain.processMessage, CONTEXT, raw) for raw in mailbox.messages])
    return time.perf_counter() - started, time.process_time() - cpu


async def _main(reactor: Any, options: argparse.Namespace) -> None:
    count = loadPlugin(EXAMPLE)
    strip = loadPlugin("strip")
    tag = loadPlugin("tag", {"spamd": ""})
    chains = {"count": [count], "strip+tag": [strip, tag], "count+strip+tag": [count, strip, tag]}
    threads = FilterThreads(reactor.callFromThread, reactor)
    mailboxes = (
        replace(mailbox50k(size=1_000), name="1k"),
        mailbox50k(),
        mixedMailbox(),
    )
    print(f"sessions in flight: {options.sessions}")
    print(
        f"{'mailbox':8} {'filters':16} {'msg/s before':>13} {'now':>6} "
        f"{'CPU us/msg before':>18} {'now':>6} {'change':>7}"
    )
    for mailbox in mailboxes:
        for label, filters in chains.items():
            # Alternate the two ways round by round, so both see the same
            # disturbance from other load on the machine.
            ways = [_chain(reactor, filters, None), _chain(reactor, filters, threads)]
            wall = [float("inf")] * 2
            cpu = [float("inf")] * 2
            for _ in range(options.rounds):
                for index, chain in enumerate(ways):
                    seconds, used = await _pass(chain, mailbox, options.sessions)
                    wall[index] = min(wall[index], seconds)
                    cpu[index] = min(cpu[index], used)
            n = len(mailbox.messages)
            rates = [n / seconds for seconds in wall]
            costs = [used / n * 1e6 for used in cpu]
            change = (costs[1] / costs[0] - 1) * 100
            print(
                f"{mailbox.name:8} {label:16} {rates[0]:13.0f} {rates[1]:6.0f} "
                f"{costs[0]:18.0f} {costs[1]:6.0f} {change:+6.0f}%"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--rounds", type=int, default=5, help="passes per figure (best is kept)")
    parser.add_argument("--sessions", type=int, default=1, help="retrievals in flight at once")
    options = parser.parse_args(argv)
    react(lambda reactor: Deferred.fromCoroutine(_main(reactor, options)))


if __name__ == "__main__":
    main()
