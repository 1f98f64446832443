"""
How long the console's pages take with many items in the quarantine:
10,000 records (by default) for 100 users are written to a temporary
directory quarantine and to a private PostgreSQL 15 (tests/peers/postgres.py:
initdb/pg_ctl into a temporary directory, as the postgres user when root),
then one user's pages and searches are asked for through the console's
real twisted.web site (in memory, synchronously; with PostgreSQL, every
page is two SQL statements plus one release lookup per item shown).

The directory view is measured first cold (every record file read once),
then warm (only the directory listed); the PostgreSQL view keeps nothing
between requests, so it has no cold start.  C{--users 1} puts every
record in one user's list (the worst case for paging and search).

Run it as C{python3 bench/console.py [--records N] [--users N] [--store
directory|postgresql|both]}; the figures are in docs/console.md ("How fast").
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from bench._postgres import migratedPostgres  # noqa: E402
from popproxy._chain import runHere  # noqa: E402
from popproxy._pgreleases import PostgresReleases  # noqa: E402
from popproxy._quarantine import DirectoryQuarantine, partItems  # noqa: E402
from popproxy.console._pgview import PostgresView  # noqa: E402
from popproxy.interfaces import FilterContext, RemovedPart  # noqa: E402
from tests.consoleharness import (  # noqa: E402
    ConsoleClient,
    ScriptedUpstream,
    makeAdmin,
    makeConsole,
)

#: How many times each page is asked for.
RUNS = 50


def fill(write: Callable[[list[Any]], Any], records: int, users: int) -> None:
    """
    Keep C{records} parts, 50 to a message, spread over C{users} users,
    with C{write(items)}.
    """
    for start in range(0, records, 50):
        user = f"user{(start // 50) % users}"
        message = f"From: a@example.com\r\nSubject: message {start}\r\n\r\n".encode()
        parts = [
            RemovedPart(
                f'Content-Type: application/x; name="file{start + n}.exe"\r\n\r\nMZ{n}'.encode(),
                (n,),
                "blocked extension .exe",
            )
            for n in range(min(50, records - start))
        ]
        context = FilterContext("RETR", 1, user, "127.0.0.1:1", "tcp:u:110", "b", f"u{start}")
        write(partItems(message, parts, context, "strip"))


def timed(client: ConsoleClient, path: str) -> str:
    """
    The median and 95th percentile of C{RUNS} requests for C{path}.
    """
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        assert client.get(path).code == 200
        times.append(1000 * (time.perf_counter() - started))
    p95 = statistics.quantiles(times, n=20)[-1]
    return f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms"


def measured(users: int) -> str:
    """
    The user whose pages are measured: user7, or user0 when there are
    fewer users.
    """
    return f"user{min(7, users - 1)}"


def report(client: ConsoleClient, records: int, users: int) -> None:
    """
    Print the times of the user's pages and searches (C{file36}: ten of
    user7's items, or a hundred and eleven of one user's 10,000).
    """
    last = max(1, -(-(records // users) // 25))
    print(f"  page 2:                 {timed(client, '/?page=2')}")
    print(f"  page {last} (the last): {timed(client, f'/?page={last}')}")
    print(f"  search 'file36':        {timed(client, '/?q=file36')}")
    print(f"  search 'message .exe':  {timed(client, '/?q=message+.exe')}")
    print(f"  search 'nothing':       {timed(client, '/?q=nothing')}")


def directoryCase(records: int, users: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        quarantine = DirectoryQuarantine(Path(directory))
        started = time.perf_counter()
        fill(quarantine._writeParts, records, users)
        print(f"directory: wrote {records} records in {time.perf_counter() - started:.1f} s")
        user = measured(users)
        client = ConsoleClient(makeConsole(Path(directory), ScriptedUpstream({user: "pw"})))
        client.signIn(user, "pw")
        started = time.perf_counter()
        assert client.get("/").code == 200
        cold = 1000 * (time.perf_counter() - started)
        print(f"  first page, cold (reads every record): {cold:.0f} ms")
        report(client, records, users)
        adminPages(Path(directory))


def postgresCase(records: int, users: int) -> None:
    with migratedPostgres("popproxy-bench-console-pg-", 2) as (server, store, temporary):
        started = time.perf_counter()
        fill(store.write, records, users)
        server.execute("ANALYZE")
        print(f"postgresql: wrote {records} records in {time.perf_counter() - started:.1f} s")
        user = measured(users)
        console = makeConsole(temporary / "unused", ScriptedUpstream({user: "pw"}))
        console = dataclasses.replace(
            console, view=PostgresView(store, runHere), releases=PostgresReleases(store.pool)
        )
        client = ConsoleClient(console)
        client.signIn(user, "pw")
        report(client, records, users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--store", choices=("directory", "postgresql", "both"), default="both")
    arguments = parser.parse_args()
    if arguments.store in ("directory", "both"):
        directoryCase(arguments.records, arguments.users)
    if arguments.store in ("postgresql", "both"):
        postgresCase(arguments.records, arguments.users)


def adminPages(directory: Path) -> None:
    """
    An administrator's list of every user's items, a user's, a search,
    and the overview, warm.
    """
    clock = Clock()
    console = makeConsole(directory, ScriptedUpstream({}))
    admin = ConsoleClient(console, admin=makeAdmin(clock))
    admin.adminSignIn()
    assert admin.get("/admin/items").code == 200
    for path in ("/admin/items?page=3", "/admin/items?user=user7", "/admin/items?q=file1234"):
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert admin.get(path).code == 200
            times.append(time.perf_counter() - started)
        median, worst = 1000 * statistics.median(times), 1000 * max(times)
        print(f"{path}: median {median:.1f} ms, max {worst:.1f} ms")
    started = time.perf_counter()
    assert admin.get("/admin").code == 200
    print(f"/admin: {1000 * (time.perf_counter() - started):.1f} ms")


if __name__ == "__main__":
    main()
