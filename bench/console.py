"""
How long the console's list page takes with many items in the quarantine:
10,000 records (by default) for 100 users are written to a temporary
directory quarantine, then one user's first page is asked for through the
console's real twisted.web site (in memory, synchronously), first cold
(every record file read once), then warm (only the directory listed).

Run it as C{python3 bench/console.py [--records N] [--users N]}; the
figures are in docs/console.md ("How fast").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from popproxy._quarantine import DirectoryQuarantine  # noqa: E402
from popproxy.interfaces import FilterContext, RemovedPart  # noqa: E402
from tests.consoleharness import (  # noqa: E402
    ConsoleClient,
    ScriptedUpstream,
    makeAdmin,
    makeConsole,
)


def fill(directory: Path, records: int, users: int) -> None:
    """
    Keep C{records} parts, 50 to a message, spread over C{users} users.
    """
    quarantine = DirectoryQuarantine(directory)
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
        quarantine.storeParts(message, parts, context, "strip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        fill(Path(directory), arguments.records, arguments.users)
        print(f"wrote {arguments.records} records in {time.perf_counter() - started:.1f} s")
        client = ConsoleClient(makeConsole(Path(directory), ScriptedUpstream({"user7": "pw"})))
        client.signIn("user7", "pw")
        started = time.perf_counter()
        assert client.get("/").code == 200
        cold = 1000 * (time.perf_counter() - started)
        print(f"first page, cold (reads every record): {cold:.0f} ms")
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get("/?page=2").code == 200
            times.append(time.perf_counter() - started)
        median, worst = 1000 * statistics.median(times), 1000 * max(times)
        print(f"a page, warm: median {median:.1f} ms, max {worst:.1f} ms")
        started = time.perf_counter()
        assert client.get("/?q=file1234").code == 200
        print(f"a search, warm: {1000 * (time.perf_counter() - started):.1f} ms")
        adminPages(Path(directory))


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
