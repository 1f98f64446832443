"""
Hostile mail through popproxy's filter chain: what one message costs everyone.

    python3 bench/hostile.py [--only NAME,...] [--timeout 120] [--no-clamd]
    python3 bench/hostile.py --mode burst [--sessions 50] [--bursts 3]

It starts, on 127.0.0.1 high ports, a private Dovecot serving the hostile
corpus (L{bench._hostilecorpus}), a private clamd (unless C{--no-clamd}) and
C{twistd -n popproxy} with the shipped chain: strip, scan (that clamd) and
tag (without spamd).  For each message, on a freshly started proxy: one
client RETRs it (bounded by C{--timeout}) while a second, already logged-in
session sends NOOP every 50 ms; the table gives the seconds the RETR took,
the peak growth of the proxy's resident memory (C{VmHWM} after resetting
it), the longest a NOOP waited for its answer, the outcome and the
quarantine records written.

C{--mode burst} measures whether memory is given back: the idle proxy's RSS,
its peak while C{--sessions} clients each RETR the 200 messages of the
benchmark's C{50k} mailbox through the chain, and its RSS C{--settle}
seconds after each burst.  Markdown on stdout, progress on stderr, JSON with
C{--json}.  Needs root (Dovecot runs mail as a dedicated system user);
nothing is left running when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python3 bench/hostile.py): make the bench package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _corpus, _process  # noqa: E402
from bench._clamd import ClamdServer  # noqa: E402
from bench._dovecot import Account, DovecotServer  # noqa: E402
from bench._hostilecorpus import NAMES, HostileMessage, hostileCorpus  # noqa: E402
from bench._load import TERMINATOR, LoadGenerator, stuff  # noqa: E402
from bench._popproxy import PopproxyProcess  # noqa: E402
from bench._process import LOOPBACK  # noqa: E402
from bench._report import progress  # noqa: E402

MB = 1e6

#: Seconds between the probing session's NOOPs.
NOOP_INTERVAL = 0.05


@dataclass(frozen=True)
class MessageResult:
    """
    What retrieving one hostile message cost.
    """

    name: str
    description: str
    size: int
    seconds: float
    peakGrowth: int
    worstStall: float
    noops: int
    outcome: str
    notes: str
    quarantined: int


class _Client:
    """
    A blocking POP3 client for the measuring sessions.
    """

    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) == -1:
            self._receive()
        found = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return found

    def _receive(self) -> None:
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            raise ConnectionError("closed by the proxy")
        self.buffer += chunk

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.line()

    def login(self, account: Account) -> None:
        for step in (None, b"USER " + account.user.encode(), b"PASS " + account.password.encode()):
            status = self.line() if step is None else self.command(step)
            if not status.startswith(b"+OK"):
                raise ConnectionError(f"login: {status[:100]!r}")

    def body(self) -> bytes:
        """
        The rest of a multi-line response, still dot-stuffed, without its
        terminating line.
        """
        searched = 0
        while True:
            if self.buffer.startswith(b".\r\n"):
                del self.buffer[:3]
                return b""
            end = self.buffer.find(TERMINATOR, max(searched - len(TERMINATOR), 0))
            if end != -1:
                found = bytes(self.buffer[: end + 2])
                del self.buffer[: end + len(TERMINATOR)]
                return found
            searched = len(self.buffer)
            self._receive()

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


class NoopProbe:
    """
    A second session that sends NOOP every 50 ms in a thread and keeps the
    longest wait for an answer (a NOOP still unanswered when the probe
    stops counts with its wait so far).
    """

    def __init__(self, port: int, account: Account, timeout: float) -> None:
        self.client = _Client(port, timeout)
        self.client.login(account)
        self.client.sock.settimeout(0.1)
        self.worst = 0.0
        self.answered = 0
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noop-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = self.client
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                client.sock.sendall(b"NOOP\r\n")
                while b"\r\n" not in client.buffer and not self._stop.is_set():
                    try:
                        client._receive()
                    except TimeoutError:
                        pass
            except OSError as e:
                self.error = str(e)
                return
            self.worst = max(self.worst, time.monotonic() - sent)
            if b"\r\n" in client.buffer:
                client.line()
                self.answered += 1
            self._stop.wait(NOOP_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.client.sock.settimeout(1.0)
        self.client.close()


def chainConfig(directory: Path, clamd: ClamdServer | None) -> Path:
    """
    Write the shipped chain (twistd.conf's strip, scan, tag) with a
    quarantine in C{directory}; scan asks C{clamd}, tag no spamd.
    """
    scan = ""
    if clamd is not None:
        scan = (
            '[[filter]]\nplugin = "scan"\n'
            f'settings = {{ address = "{clamd.address}", on_failure = "deliver" }}\n\n'
        )
    path = directory / "chain.toml"
    path.write_text(
        "# Written by bench/hostile.py: the shipped chain.\n"
        f'[chain]\nquarantine = "{directory / "quarantine"}"\ntop = "full"\n\n'
        '[[filter]]\nplugin = "strip"\n\n'
        f"{scan}"
        '[[filter]]\nplugin = "tag"\nsettings = { spamd = "" }\n'
    )
    return path


def _proxyPids(proxy: PopproxyProcess) -> list[int]:
    return [proxy.pid, *_process.descendantsOf(proxy.pid)]


def _rss(proxy: PopproxyProcess) -> int:
    return sum(_process.memory(pid)["VmRSS"] for pid in _proxyPids(proxy))


def _peak(proxy: PopproxyProcess) -> int:
    return sum(_process.memory(pid)["VmHWM"] for pid in _proxyPids(proxy))


def _resetPeak(proxy: PopproxyProcess) -> None:
    for pid in _proxyPids(proxy):
        _process.resetPeak(pid)


@contextmanager
def _proxy(
    dovecot: DovecotServer, config: Path, source: Path | None, warmUp: Account
) -> Iterator[PopproxyProcess]:
    """
    A freshly started popproxy that has filtered one ordinary message (so
    lazily imported code is in the baseline).
    """
    proxy = PopproxyProcess(dovecot.port, config=config, source=source)
    try:
        proxy.start()
        client = _Client(proxy.port, 60.0)
        try:
            client.login(warmUp)
            if client.command(b"RETR 1").startswith(b"+OK"):
                client.body()
        finally:
            client.close()
        time.sleep(0.3)
        yield proxy
    finally:
        proxy.stop()


def _headerValue(message: bytes, name: bytes) -> str:
    head = message[: message.find(b"\r\n\r\n") + 2]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            value = line.split(b":", 1)[1].strip().decode("utf-8", "replace")
            return value if len(value) <= 70 else value[:67] + "..."
    return ""


def _retrieve(
    port: int, account: Account, number: int, expected: bytes, timeout: float
) -> tuple[float, str, str]:
    """
    RETR message C{number}: the seconds it took, the outcome, notes.
    """
    client = _Client(port, timeout)
    started = time.monotonic()
    try:
        client.login(account)
        started = time.monotonic()
        status = client.command(b"RETR %d" % number)
        if not status.startswith(b"+OK"):
            return time.monotonic() - started, status.decode("utf-8", "replace")[:70], ""
        try:
            body = client.body()
        except OSError as e:
            what = "no end" if isinstance(e, TimeoutError) else str(e)
            return time.monotonic() - started, f"+OK, then {what}", ""
    except TimeoutError:
        return time.monotonic() - started, f"no answer within {timeout:g} s", ""
    except OSError as e:
        return time.monotonic() - started, f"connection: {e}", ""
    finally:
        client.close()
    seconds = time.monotonic() - started
    if body == stuff(expected):
        return seconds, "+OK unchanged", ""
    received = (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]
    notes = [
        f"{label}: {value}"
        for label, field in (
            ("unchecked", b"X-Popproxy-Unchecked"),
            ("status", b"X-Popproxy-Status"),
            ("virus", b"X-Virus-Scanned"),
        )
        if (value := _headerValue(received, field))
    ]
    return seconds, f"+OK changed ({len(received):,} B)", "; ".join(notes)


def measureMessages(
    arguments: argparse.Namespace,
    dovecot: DovecotServer,
    corpus: tuple[HostileMessage, ...],
    clamd: ClamdServer | None,
) -> list[MessageResult]:
    hostile = dovecot.accounts["hostile"]
    probe = dovecot.accounts["probe"]
    results = []
    for number, message in enumerate(corpus, 1):
        directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-hostile-"))
        try:
            config = chainConfig(directory, clamd)
            with _proxy(dovecot, config, arguments.popproxy_source, probe) as proxy:
                noop = NoopProbe(proxy.port, probe, arguments.timeout)
                _resetPeak(proxy)
                before = _rss(proxy)
                try:
                    seconds, outcome, notes = _retrieve(
                        proxy.port, hostile, number, message.data, arguments.timeout
                    )
                finally:
                    noop.stop()
                growth = max(_peak(proxy) - before, 0)
                quarantine = directory / "quarantine"
                records = sum(1 for _ in quarantine.rglob("*.json")) if quarantine.exists() else 0
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        result = MessageResult(
            message.name,
            message.description,
            len(message.data),
            seconds,
            growth,
            noop.worst,
            noop.answered,
            outcome,
            notes,
            records,
        )
        progress(
            f"{message.name}: {seconds:.2f} s, +{growth / MB:.1f} MB, "
            f"worst NOOP {noop.worst:.2f} s, {outcome} {notes}"
        )
        results.append(result)
    return results


def messagesTable(results: list[MessageResult], chain: str) -> str:
    rows = [
        f"Chain: {chain}; each message on a freshly started proxy.\n",
        "| message | size | RETR s | peak growth MB (× size) | worst NOOP stall s "
        "| outcome | quarantine records | notes |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.name}: {r.description} | {_size(r.size)} | {r.seconds:.2f} "
            f"| {r.peakGrowth / MB:.1f} ({r.peakGrowth / r.size:.1f}×) | {r.worstStall:.2f} "
            f"| {r.outcome} | {r.quarantined} | {r.notes.replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


def _size(octets: int) -> str:
    return f"{octets / MB:.2f} MB" if octets >= 1_000_000 else f"{octets / 1e3:.0f} KB"


def measureBursts(
    arguments: argparse.Namespace,
    dovecot: DovecotServer,
    generator: LoadGenerator,
    clamd: ClamdServer | None,
) -> dict[str, Any]:
    """
    The proxy's RSS idle, at its peak during each burst, and C{--settle}
    seconds after it.
    """
    account = dovecot.accounts["50k"]
    directory = Path(tempfile.mkdtemp(prefix="popproxy-bench-burst-"))
    bursts = []
    try:
        config = chainConfig(directory, clamd)
        with _proxy(dovecot, config, arguments.popproxy_source, dovecot.accounts["probe"]) as proxy:
            time.sleep(1.0)
            idle = _rss(proxy)
            progress(f"burst: idle proxy {idle / MB:.1f} MB")
            for number in range(1, arguments.bursts + 1):
                _resetPeak(proxy)
                result = generator.run(
                    proxy.port,
                    account.user,
                    account.password,
                    "50k",
                    arguments.sessions,
                    1,
                    arguments.timeout,
                )
                peak = _peak(proxy)
                time.sleep(arguments.settle)
                after = _rss(proxy)
                # scan and tag stamp every message: a body differing from
                # Dovecot's is a delivered RETR here, not an error.
                changed = result.errors.pop("mismatch", 0)
                burst = {
                    "burst": number,
                    "retrs": result.messages + changed,
                    "errors": result.errorCount,
                    "errorSamples": result.errorSamples[:3],
                    "seconds": result.wallSeconds,
                    "peakMB": peak / MB,
                    "afterMB": after / MB,
                }
                bursts.append(burst)
                progress(
                    f"burst {number}: {burst['retrs']} RETRs in {result.wallSeconds:.1f} s "
                    f"({result.errorCount} errors), peak {peak / MB:.1f} MB, "
                    f"{after / MB:.1f} MB {arguments.settle:g} s later"
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"idleMB": idle / MB, "sessions": arguments.sessions, "bursts": bursts}


def burstTable(found: dict[str, Any], chain: str, settle: float) -> str:
    idle = found["idleMB"]
    rows = [
        f"Chain: {chain}; {found['sessions']} sessions, each RETRs the 200 messages "
        f"of the 50k mailbox; idle proxy: {idle:.1f} MB.\n",
        f"| burst | RETRs | errors | seconds | peak RSS MB | RSS {settle:g} s after MB "
        "| after / idle |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in found["bursts"]:
        rows.append(
            f"| {b['burst']} | {b['retrs']} | {b['errors']} | {b['seconds']:.1f} "
            f"| {b['peakMB']:.1f} | {b['afterMB']:.1f} | {b['afterMB'] / idle:.2f}× |"
        )
    return "\n".join(rows) + "\n"


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 bench/hostile.py",
        description="Hostile mail through popproxy's chain: time, memory, stalls of others.",
    )
    add = parser.add_argument
    add("--mode", choices=("messages", "burst", "all"), default="messages")
    add("--only", default="", help=f"comma-separated messages (default: all of {', '.join(NAMES)})")
    add("--timeout", type=float, default=120.0, help="seconds a RETR may take (default: 120)")
    add("--no-clamd", action="store_true", help="leave scan out of the chain (strip + tag)")
    add("--sessions", type=int, default=50, help="burst: concurrent sessions (default: 50)")
    add("--bursts", type=int, default=3, help="burst: how many in a row (default: 3)")
    add("--settle", type=float, default=5.0, help="burst: seconds before RSS is read again")
    add("--load-processes", type=int, default=4, help="burst: load generator processes")
    add("--popproxy-source", type=Path, metavar="DIR", help="measure this checkout instead")
    add("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parseArguments(argv)
    if os.geteuid() != 0:
        progress("bench/hostile.py needs root: its Dovecot runs mail as a dedicated system user")
        return 2
    names = tuple(name for name in arguments.only.split(",") if name) or NAMES
    try:
        corpus = hostileCorpus(names) if arguments.mode != "burst" else ()
    except ValueError as e:
        progress(str(e))
        return 2
    mailboxes = [
        _corpus.Mailbox("probe", (_corpus.plainMessage(random.Random(3), 0, 3000),)),
        _corpus.mailbox50k(),
    ]
    if corpus:
        mailboxes.append(_corpus.Mailbox("hostile", tuple(m.data for m in corpus)))
    for message in corpus:
        progress(f"corpus: {message.name}, {len(message.data):,} octets")
    # The load generator forks before any thread exists.
    generator = LoadGenerator(mailboxes[:2], arguments.load_processes)
    dovecot = DovecotServer(mailboxes, arguments.sessions * 2 + 20)
    clamd = None if arguments.no_clamd else ClamdServer()
    chain = "strip + tag (spamd off)" if clamd is None else "strip + scan (clamd) + tag (spamd off)"
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    results: dict[str, Any] = {"chain": chain, "timeout": arguments.timeout}
    try:
        dovecot.start()
        if clamd is not None:
            clamd.start()
        progress(f"dovecot on {dovecot.port}" + (f", clamd on {clamd.port}" if clamd else ""))
        if arguments.mode in ("messages", "all"):
            found = measureMessages(arguments, dovecot, corpus, clamd)
            results["messages"] = [asdict(r) for r in found]
            print("### Hostile messages\n")
            print(messagesTable(found, chain))
        if arguments.mode in ("burst", "all"):
            bursts = measureBursts(arguments, dovecot, generator, clamd)
            results["burst"] = bursts
            print("### Memory after bursts\n")
            print(burstTable(bursts, chain, arguments.settle))
    finally:
        generator.close()
        if clamd is not None:
            clamd.stop()
        dovecot.stop()
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress("interrupted")
        sys.exit(130)
