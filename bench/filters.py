"""
Time the shipped filters in-process: C{strip}, C{tag} (without spamd) and
the two in a row, per message, on the benchmark's C{50k} and C{mixed}
mailboxes.

    python3 bench/filters.py [--rounds 7]

Each message is wrapped in a fresh L{Message} and given to the filters the
way the chain does (C{filterMessage} with a L{FilterContext}, the next
filter getting the message the previous one delivered), with no sockets
and no reactor.  The figures are the best of C{--rounds} passes over the
mailbox (the least disturbed by other load on the machine): microseconds
per message and megabytes (10^6 octets) of mail per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python3 bench/filters.py): make the packages importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import ensureDeferred  # noqa: E402

from bench._corpus import Mailbox, mailbox50k, mixedMailbox  # noqa: E402
from popproxy.interfaces import Deliver, FilterContext, Rewrite, Verdict  # noqa: E402
from popproxy.message import Message  # noqa: E402
from popproxy.testing import loadPlugin, makeContext  # noqa: E402


def _verdict(filter: Any, message: Message, context: FilterContext) -> Verdict:
    """
    The verdict of a filter that answers without a running reactor.
    """
    answers: list[Any] = []
    ensureDeferred(filter.filterMessage(message, context)).addBoth(answers.append)
    if not answers or not isinstance(answers[0], Deliver | Rewrite):
        raise RuntimeError(f"{filter.name} answered {answers!r} without a reactor")
    verdict: Verdict = answers[0]
    return verdict


def _runner(filters: Sequence[Any]) -> Callable[[bytes], bytes]:
    """
    One message through C{filters}, as the chain runs them.
    """
    context = makeContext()

    def run(raw: bytes) -> bytes:
        message = Message.fromBytes(raw)
        for filter in filters:
            verdict = _verdict(filter, message, context)
            if isinstance(verdict, Rewrite):
                message = verdict.message
        return message.toBytes()

    return run


def _best(run: Callable[[bytes], bytes], mailbox: Mailbox, rounds: int) -> float:
    """
    The shortest time, in seconds, one pass over the mailbox took.
    """
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for raw in mailbox.messages:
            run(raw)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--rounds", type=int, default=7, help="passes per figure (best is kept)")
    options = parser.parse_args(argv)
    strip = loadPlugin("strip")
    tag = loadPlugin("tag", {"spamd": ""})
    chains = {"strip": [strip], "tag": [tag], "strip+tag": [strip, tag]}
    print(f"{'mailbox':8} {'filters':10} {'us/message':>11} {'MB/s':>8}")
    for mailbox in (mailbox50k(), mixedMailbox()):
        for label, filters in chains.items():
            run = _runner(filters)
            for raw in mailbox.messages:
                if run(raw) != raw:
                    raise RuntimeError(f"{label} changed a message of {mailbox.name}")
            seconds = _best(run, mailbox, options.rounds)
            perMessage = seconds / len(mailbox.messages) * 1e6
            rate = mailbox.totalBytes / seconds / 1e6
            print(f"{mailbox.name:8} {label:10} {perMessage:11.1f} {rate:8.1f}")


if __name__ == "__main__":
    main()
