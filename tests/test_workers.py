"""
Worker processes: with [proxy] workers = 3 the sessions of one listener are
served by several processes (several cores), every message arrives intact,
and stopping twistd stops every worker.
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.corpus import crlfClean
from tests.peers.dovecot import fetchMailbox


def workerPids(marker: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"popproxy._workers.*{marker}"], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def test_workersShareTheListener(rawPop3: Any, popproxyFactory: Any) -> None:
    """
    Sessions are spread over the main process and its two workers; every
    client gets the exact messages; SIGTERM ends the workers too.
    """
    messages = crlfClean()
    server = rawPop3(messages=messages, user="u", password="p")
    proxy = popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
workers = 3
[upstream]
default = "tcp:127.0.0.1:{server.port}"
"""
    )
    marker = str(proxy.configPath)
    deadline = time.monotonic() + 15
    while len(workerPids(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workerPids(marker)) == 2
    # Each worker says when it serves the adopted socket.
    while proxy.log().count("worker serving ") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.log().count("worker serving ") == 2

    def fetch(_: int) -> list[bytes]:
        return [m.data for m in fetchMailbox("127.0.0.1", proxy.port, "u", "p", timeout=30)]

    # The processes share one listening socket and the first one awake
    # accepts every connection queued: on a loaded machine one may take a
    # whole round, so rounds go on (bounded) until two processes served.
    served: set[str] = set()
    for rounds in range(1, 6):
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(fetch, range(36)))
        assert all(result == messages for result in results)
        # A client sees the end of its connection a moment before the log line.
        logged = time.monotonic() + 20
        while proxy.log().count("closed: client quit") < 36 * rounds:
            assert time.monotonic() < logged, proxy.log()
            time.sleep(0.1)
        for line in proxy.log().splitlines():
            if "closed: client quit" in line:
                worker = re.search(r"worker \d+:", line)
                served.add(worker.group() if worker else "main process")
        if len(served) >= 2:
            break
    assert len(served) >= 2, served
    proxy.stop()
    deadline = time.monotonic() + 15
    while workerPids(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workerPids(marker) == []
