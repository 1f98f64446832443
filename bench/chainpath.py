"""
Micro-benchmarks of issue #16, in-process and robust on a loaded machine:
the strip filter's type detection per attachment (1 KB, 100 KB, 10 MB of
base64), the chain path per message (an upstream answer received through
the upstream connection's parser into the spool, handed unchanged to a
chain that answers at once, and the octets the client gets built) on the
C{50k} and C{mixed} mailboxes, the same path with the benchmark's default
chain (strip, then tag without spamd: C{strip+tag}), and the peak memory
(tracemalloc) of one 10 MB message with dot-lines through that path.

    python3 bench/chainpath.py                          # this checkout
    python3 bench/chainpath.py --compare /tmp/before    # before/after
    python3 bench/chainpath.py --profile DIR            # py-spy, each side

With C{--compare DIR} each round runs a fresh process for DIR's code
(C{PYTHONPATH=DIR}) and one for this checkout's, alternately, so load on the
machine hits both alike; every figure is the minimum over the rounds (and,
inside a process, over its repeats).  C{--profile DIR} runs each side's
chain path with strip and tag over the C{50k} mailbox in a loop under
C{py-spy record} and lists its hottest functions by their own time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
SIZES = (1_000, 100_000, 10_000_000)


def _best(run: Callable[[], object], repeats: int, number: int = 1) -> float:
    """
    The shortest time, in seconds, one of C{number} calls took.
    """
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            run()
        best = min(best, (time.perf_counter() - started) / number)
    return best


# Detection.


def _attachment(size: int) -> tuple[Any, bytes]:
    from popproxy.message import Message

    content = random.Random(size).randbytes(size)
    body = base64.encodebytes(content).replace(b"\n", b"\r\n")
    raw = (
        b"Content-Type: application/pdf; name=report.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )
    message = Message.fromBytes(raw)
    return message.root, message.toBytes()


def detectionTimes(repeats: int) -> dict[str, float]:
    """
    Microseconds to judge one attachment's content type, by size: the
    decoding the detection needs and the detection itself.
    """
    from plugins.strip import _decoding, _detection
    from plugins.strip._settings import StripPolicy

    policy = StripPolicy()
    times = {}
    # This checkout reads fixed places; an older one decodes a head.
    octets = getattr(_decoding, "partOctets", _decoding.decodedHead)
    for size in SIZES:
        part, data = _attachment(size)

        def run(part: Any = part, data: bytes = data) -> object:
            return _detection.detectionReason(octets(part, data), policy)

        assert run() is None
        times[f"detect {size}"] = _best(run, repeats, 20) * 1e6
    return times


# The chain path.


class _Upstream:
    """
    L{UpstreamRequests} answering from memory: the RETR answer goes through
    a real L{UpstreamConnection} (its parser and its dispatch to the
    spool), fed in 64 KiB reads.
    """

    def __init__(self, answer: bytes) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from popproxy._upstream import UpstreamConnection

        self._answer = answer
        self.connection = UpstreamConnection(Clock(), 60.0)
        self.connection.makeConnection(StringTransport())
        self.connection.dataReceived(b"+OK ready\r\n")

    def shortCommand(self, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        from popproxy._framing import StatusLine

        return succeed(StatusLine(b"+OK 1 uid-1"))

    def longCommand(self, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        from popproxy._framing import StatusLine

        return succeed((StatusLine(b"+OK"), b"1 uid-1\r\n.\r\n"))

    def spool(self, line: bytes, into: Any) -> Any:
        self.connection.sendCommand(line, True, into)
        answer = memoryview(self._answer)
        for start in range(0, len(answer), 65536):
            # Each read a new object, as a socket's are.
            self.connection.dataReceived(bytes(answer[start : start + 65536]))
        return into.finished


class _Unchanged:
    """
    A chain that delivers every message unchanged, at once.
    """

    active = True

    def processMessage(self, context: Any, message: bytes) -> Any:
        from twisted.internet.defer import succeed

        return succeed(message)


def _sent(delivery: Any) -> int:
    """
    The octets the client gets for C{delivery}, built as the client wire
    builds them.
    """
    from popproxy import _framing
    from popproxy import _retrievalflow as flow

    if isinstance(delivery, flow.Relayed):
        return len(delivery.status + b"\r\n" + delivery.wire)
    if isinstance(delivery, flow.WholeMessage):
        return len(delivery.status + b"\r\n" + _framing.stuff(delivery.message))
    assert isinstance(delivery, flow.Streamed)
    stuffer = _framing.DotStuffer()
    sent = len(delivery.status) + 2 + len(stuffer.feed(delivery.prefix))
    sent += sum(len(stuffer.feed(chunk)) for chunk in delivery.source.chunks())
    delivery.source.close()
    return sent + len(stuffer.finish())


def filterChain() -> Any:
    """
    The benchmark's default chain (bench/configs/chain.toml): strip, then
    tag without spamd, run in the caller's thread.
    """
    from twisted.internet.task import Clock

    from popproxy._chain import ChainEntry, FilterChain
    from popproxy.testing import loadPlugin

    entries = [
        ChainEntry("strip", loadPlugin("strip")),
        ChainEntry("tag", loadPlugin("tag", {"spamd": ""})),
    ]
    return FilterChain(entries, Clock())


def retrieve(answer: bytes, spoolThreshold: int = 4 * 1024 * 1024, hook: Any = None) -> int:
    """
    One RETR through the chain path, handed to C{hook} (by default a chain
    that delivers at once); the octets the client gets.
    """
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from popproxy._config import ChainConfig
    from popproxy._mailboxview import MailboxView
    from popproxy._retrievalflow import RetrievalFlow, RetrievalRequest
    from popproxy.testing import makeContext

    flow = RetrievalFlow(
        RetrievalRequest("RETR", 1, None, makeContext()),
        hook=_Unchanged() if hook is None else hook,
        mailbox=MailboxView(0),
        chain=ChainConfig(spoolThreshold=spoolThreshold),
        upstream=_Upstream(answer),
        write=lambda data: None,
        clock=Clock(),
        closing=lambda: False,
    )
    results: list[Any] = []
    Deferred.fromCoroutine(flow.run()).addBoth(results.append)
    return _sent(results[0])


def _answers(name: str) -> list[bytes]:
    from bench._corpus import mailbox50k, mixedMailbox
    from popproxy._framing import stuff

    mailbox = mailbox50k() if name == "50k" else mixedMailbox()
    return [b"+OK %d octets\r\n" % len(raw) + stuff(raw) for raw in mailbox.messages]


def chainPathTimes(repeats: int) -> dict[str, float]:
    """
    Microseconds per message through the chain path, by mailbox.
    """
    times = {}
    for name in ("50k", "mixed"):
        answers = _answers(name)
        for answer in answers:  # every message reaches the client whole
            assert retrieve(answer) == len(answer), name

        def run(answers: list[bytes] = answers) -> None:
            for answer in answers:
                retrieve(answer)

        times[f"chain {name}"] = _best(run, repeats) / len(answers) * 1e6
    chain = filterChain()
    for name in ("50k", "mixed"):
        answers = _answers(name)
        for answer in answers:  # strip and tag change nothing in this mail
            assert retrieve(answer, hook=chain) == len(answer), name

        def runChain(answers: list[bytes] = answers) -> None:
            for answer in answers:
                retrieve(answer, hook=chain)

        times[f"strip+tag {name}"] = _best(runChain, repeats) / len(answers) * 1e6
    return times


def dottedMessage(size: int = 10_000_000) -> bytes:
    """
    About C{size} octets of text, one line in five starting with a dot.
    """
    lines = [b"Subject: dots\r\n", b"\r\n"]
    total = 0
    for index in range(size // 60):
        line = b"%s line %d of a message whose lines sometimes start with a dot\r\n" % (
            b"." if index % 5 == 0 else b"A",
            index,
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def _received(answer: bytes, threshold: int) -> tuple[int, int]:
    """
    Traced octets while C{answer} is received into a spool through the
    upstream connection: at the peak, and held once it is complete.
    """
    from popproxy._retrievalflow import Spool

    upstream = _Upstream(answer)
    tracemalloc.start()
    try:
        spool = upstream.spool(b"RETR 1", Spool(threshold)).result
        message = spool.read()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(message) == spool.size
    return peak, held


def peakMemory() -> dict[str, float]:
    """
    Traced memory, in MB, for one 10 MB message with dot-lines: received
    into the spool (the peak, and what it holds once complete, the message
    read back included), and through the whole chain path (the peak, the
    octets for the client built); kept in memory (spool threshold 16 MB)
    and spooled to a file (the default 4 MB).
    """
    from popproxy._framing import stuff

    answer = b"+OK\r\n" + stuff(dottedMessage())
    figures = {"message MB": len(answer) / 1e6}
    for label, threshold in (("memory", 16 << 20), ("file", 4 << 20)):
        peak, held = _received(answer, threshold)
        figures[f"receive peak MB, spool in {label}"] = peak / 1e6
        figures[f"held MB, spool in {label}"] = held / 1e6
        tracemalloc.start()
        try:
            retrieve(answer, threshold)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        figures[f"chain path peak MB, spool in {label}"] = peak / 1e6
    return figures


# Running and comparing.


def measure(repeats: int) -> dict[str, float]:
    figures = detectionTimes(repeats)
    figures.update(chainPathTimes(repeats))
    figures.update(peakMemory())
    return figures


def _child(source: Path, repeats: int) -> dict[str, float]:
    environment = dict(os.environ, PYTHONPATH=f"{source}{os.pathsep}{HERE}")
    output = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(repeats)],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
        cwd=source,
    ).stdout
    figures: dict[str, float] = json.loads(output)
    return figures


def compare(sources: dict[str, Path], rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    """
    Each side's figures, the minimum over C{rounds} alternated processes.
    """
    best: dict[str, dict[str, float]] = {label: {} for label in sources}
    for round in range(rounds):
        for label, source in sources.items():
            print(f"round {round + 1}/{rounds}: {label}", file=sys.stderr)
            for key, value in _child(source, repeats).items():
                best[label][key] = min(value, best[label].get(key, value))
    return best


def _profileLoop(seconds: float) -> None:
    """
    The chain path with strip and tag, over the C{50k} mailbox, for
    C{seconds}.
    """
    answers = _answers("50k")
    chain = filterChain()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for answer in answers:
            retrieve(answer, hook=chain)


def profile(sources: dict[str, Path], directory: Path, seconds: float) -> None:
    """
    Each side's chain path under py-spy; the top functions by own time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for label, source in sources.items():
        output = directory / f"{label}.txt"
        environment = dict(os.environ, PYTHONPATH=f"{source}{os.pathsep}{HERE}")
        command = [sys.executable, str(Path(__file__).resolve()), "--loop", str(seconds)]
        subprocess.run(
            ["py-spy", "record", "--format", "raw", "--function", "-o", str(output), "--"]
            + command,
            env=environment,
            check=True,
            cwd=source,
            capture_output=True,
        )
        print(f"## {label}")
        for line in topFunctions(output):
            print(line)


def topFunctions(path: Path, count: int = 12) -> Iterator[str]:
    """
    The functions with the most samples of their own in a py-spy raw
    (collapsed stacks) file, as Markdown table rows.
    """
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frame = stack.split(";")[-1]
        own[frame] = own.get(frame, 0) + int(number)
        total += int(number)
    for frame, samples in sorted(own.items(), key=lambda item: -item[1])[:count]:
        yield f"| `{frame}` | {100 * samples / total:.1f} % |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--compare", type=Path, help="a checkout to measure against this one")
    parser.add_argument("--rounds", type=int, default=5, help="alternated processes per side")
    parser.add_argument("--repeats", type=int, default=5, help="repeats inside a process")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles here")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", type=float, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print(json.dumps(measure(options.repeats)))
        return
    if options.loop:
        _profileLoop(options.loop)
        return
    sources = {"after": HERE}
    if options.compare:
        sources = {"before": options.compare.resolve(), "after": HERE}
    if options.profile:
        profile(sources, options.profile, options.profile_seconds)
        return
    best = compare(sources, options.rounds, options.repeats)
    labels = list(best)
    print("| figure | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for key in best[labels[-1]]:
        print(f"| {key} | " + " | ".join(f"{best[label][key]:.1f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
