"""
Memory and time of parsing hostile message shapes: what reading a whole
message (checking the parse limits, then every header, parameter, file name
and payload, as the chain and a thorough filter do) costs, as the
tracemalloc peak against the message's size.

Run it as C{python3 bench/parselimits.py}; C{--limits none} parses with
limits so high that none is reached, to see what the parsers cost without
them.  The table is in docs/filter-chain.md ("Parse limits").
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (python3 bench/parselimits.py): make popproxy importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popproxy.message import LimitExceeded, Message, ParseLimits  # noqa: E402

EOL = b"\r\n"
UNLIMITED = ParseLimits(10**9, 10**9, 10**9, 10**9, 10**9, 10**9, 10**9)


def shapes() -> Iterator[tuple[str, bytes]]:
    """
    The hostile shapes, each about a megabyte (the header fields spread over
    parts: as many as every limit but the total allows).
    """
    fields = b"".join(b"X-F%d: v" % i + EOL for i in range(100_000))
    yield "100,000 header fields", fields + EOL + b"body" + EOL
    params = b"".join(b"; p%d=v" % i for i in range(20_000))
    yield "20,000 parameters", b"Content-Type: text/plain" + params + EOL + EOL + b"body" + EOL
    pieces = b"".join(b";\r\n filename*%d*=%%41" % i for i in range(20_000))
    yield (
        "20,000 RFC 2231 continuations",
        b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment"
        + pieces + EOL + EOL + b"body" + EOL,
    )  # fmt: skip
    words = b" ".join(b"=?utf-8?q?a?=" for _ in range(50_000))
    yield (
        "50,000 RFC 2047 words",
        b"Subject: " + words + EOL + b'Content-Type: text/plain; name="' + words + b'"'
        + EOL + EOL + b"body" + EOL,
    )  # fmt: skip
    base64 = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    yield "base64 of QQ== quanta", base64 + (b"QQ==" * 19 + EOL) * (1_000_000 // 78)
    yield "base64, ==== and blanks", base64 + (b"QUJD====" + b" " * 68 + EOL) * (1_000_000 // 78)
    parts = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(100_000))
    multipart = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    block = b"X: v\r\n" * 1_000
    spread = b"".join(b"--b\r\n" + block + b"\r\nx\r\n" for _ in range(1_000))
    yield "1,000 parts x 1,000 fields", multipart + spread + b"--b--\r\n"
    block = b"X: v\r\n" * 5
    spread = b"".join(b"--b\r\n" + block + b"\r\nx\r\n" for _ in range(10_000))
    yield "10,000 parts x 5 fields", multipart + spread + b"--b--\r\n"
    yield (
        "100,000 tiny parts",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n",
    )


def readEverything(raw: bytes, limits: ParseLimits) -> str:
    """
    Check the limits, then read all of the message; return the limit it
    goes over, or C{"-"}.
    """
    message = Message.fromBytes(raw, limits=limits)
    try:
        message.checkLimits()
        verdict = "-"
    except LimitExceeded as e:
        verdict = e.limit
    message.headers.items()
    for part in message.walk():
        part.headers.items()
        _ = (part.params, part.dispositionParams, part.filenames, part.defects)
        if not part.children:
            part.payload()
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", choices=("default", "none"), default="default")
    limits = ParseLimits() if parser.parse_args().limits == "default" else UNLIMITED
    print(f"{'message':32} {'size':>8} {'peak':>9} {'ratio':>6} {'seconds':>7}  over")
    for name, raw in shapes():
        started = time.perf_counter()
        readEverything(raw, limits)
        seconds = time.perf_counter() - started
        tracemalloc.start()
        try:
            verdict = readEverything(raw, limits)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        print(
            f"{name:32} {len(raw) / 1e6:6.2f}MB {peak / 1e6:7.2f}MB {peak / len(raw):5.1f}x "
            f"{seconds:7.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
