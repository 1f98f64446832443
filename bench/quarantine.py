"""
Quarantine writes per second and their latency: the directory store and
the PostgreSQL store, each written the way the proxy writes them (one
record and its blob per store, durable before it answers), by 1 and by
4 writers at once (the PostgreSQL quarantine's connections per process).

    python3 bench/quarantine.py [--stores 400] [--size 20000]

PostgreSQL 15 runs privately (tests/peers/postgres.py: initdb/pg_ctl into
a temporary directory, as the postgres user when root) with fsync on, on
loopback, on the same machine; the directory store writes into a
temporary directory on the same file system.  Every store is a new
attachment (new blob and record); a tenth repeat an earlier attachment
(the blob is kept once).  Prints one line per store and writer count:
stores per second, median and 95th percentile latency in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._postgres import migratedPostgres  # noqa: E402
from popproxy._quarantine import DirectoryQuarantine, StoreItem, storeItems  # noqa: E402
from popproxy.interfaces import FilterContext  # noqa: E402


def items(count: int, size: int, tag: str) -> list[list[StoreItem]]:
    """
    C{count} stores of a C{size}-octet attachment, each of its own message.
    """
    stores = []
    for number in range(count):
        blob = number - number % 10 if number % 10 == 9 else number
        original = (f"Content-Type: application/x-msdownload; name=a{blob}.exe\r\n\r\n").encode()
        original += (b"%08d" % blob) * (size // 8)
        context = FilterContext(
            "RETR", 1, "bench", "127.0.0.1:1", "tcp:u:110", tag, f"{tag}-{number}"
        )
        stores.append(storeItems(original, context, "blocked extension .exe", "strip"))
    return stores


def measure(
    write: Callable[[list[StoreItem]], Any], stores: list[list[StoreItem]], writers: int
) -> str:
    latencies: list[float] = []

    def one(batch: list[StoreItem]) -> None:
        start = time.perf_counter()
        write(batch)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(one, stores))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    median, p95 = statistics.median(ordered) * 1000, p95 * 1000
    return f"{len(stores) / elapsed:8.0f} stores/s   median {median:6.2f} ms   p95 {p95:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--stores", type=int, default=400)
    parser.add_argument("--size", type=int, default=20000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="popproxy-bench-q-") as temporary:
        directory = DirectoryQuarantine(Path(temporary) / "q")
        for writers in (1, 4):
            stores = items(options.stores, options.size, f"dir{writers}")
            figures = measure(directory._writeParts, stores, writers)
            print(f"directory   {writers} writer(s): {figures}")
    with migratedPostgres("popproxy-bench-pg-", 4) as (_, store, _):
        for writers in (1, 4):
            stores = items(options.stores, options.size, f"pg{writers}")
            print(f"postgresql  {writers} writer(s): {measure(store.write, stores, writers)}")


if __name__ == "__main__":
    main()
