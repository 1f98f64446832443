"""
Scanner reachability end to end: `twistd -n popproxy` with the scan and tag
filters, in front of the bundled demo mailbox, read with poplib.  With the
suite's real clamd and spamd the start-up log says once that each is
reachable; with addresses nothing listens on it says once that each cannot
be reached, and five retrievals add at most one warning per scanner.
"""

from __future__ import annotations

import poplib
import re
import time
from typing import Any

from tests.peers.ports import freePort

#: Log lines of the two scanners' changes of state, and of per-message warnings.
STATE = re.compile(r"\[popproxy\.scanner\.(clamd|spamd)#(\w+)\] (.*)")
PER_MESSAGE = re.compile(r"\[popproxy\.filter\.(scan|tag)#warn\] (.*)")


def config(clamdAddress: str, spamdAddress: str, demo: int) -> str:
    """Scan, then tag, in front of the demo mailbox on port C{demo}."""
    return f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{demo}"
[[filter]]
plugin = "scan"
settings = {{ address = "{clamdAddress}", on_failure = "deliver" }}
[[filter]]
plugin = "tag"
settings = {{ spamd = "{spamdAddress}" }}
[demo]
listen = "tcp:{demo}:interface=127.0.0.1"
user = "demo"
password = "demo"
"""


def startProxy(popproxyFactory: Any, clamdAddress: str, spamdAddress: str) -> Any:
    """The proxy with its demo upstream on a free port of its own."""
    return popproxyFactory(config(clamdAddress, spamdAddress, freePort()))


def stateLines(proxy: Any, expected: int, timeout: float = 20.0) -> list[tuple[str, str, str]]:
    """
    The scanners' state lines of the proxy's log, once there are C{expected}
    of them (the start-up probes answer after the proxy listens).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [(m[1], m[2], m[3]) for m in map(STATE.search, proxy.log().splitlines()) if m]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def retrieveFive(port: int) -> list[bytes]:
    """RETR 1 to 5 in one session, as a client would; the messages' header blocks."""
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user("demo")
        client.pass_("demo")
        heads = []
        for index in range(1, 6):
            _, lines, _ = client.retr(index)
            heads.append(b"\n".join(lines).split(b"\n\n", 1)[0])
        client.quit()
    finally:
        client.close()
    return heads


def test_startUpSaysEachScannerIsReachable(
    clamdServer: Any, spamdServer: Any, popproxyFactory: Any
) -> None:
    """
    With the real clamd and spamd, the start-up log says once that each is
    reachable, with its address; retrievals are scanned and add no warning.
    """
    proxy = startProxy(popproxyFactory, clamdServer.tcpAddress, spamdServer.endpoint)
    assert sorted(stateLines(proxy, 2)) == [
        ("clamd", "info", f"clamd at {clamdServer.tcpAddress} is reachable"),
        ("spamd", "info", f"spamd at {spamdServer.endpoint} is reachable"),
    ]
    heads = retrieveFive(proxy.port)
    assert all(b"X-Virus-Scanned: popproxy/clamd; clean" in head for head in heads), heads
    assert all(b"X-Spam-Score: " in head for head in heads), heads
    log = proxy.log()
    assert PER_MESSAGE.search(log) is None, log
    assert len(stateLines(proxy, 2)) == 2


def test_unreachableScannersAreSaidOnceAndWarnedAboutOnce(popproxyFactory: Any) -> None:
    """
    With nothing listening where clamd and spamd should be, the proxy starts
    and serves; its log says once per scanner, at start-up, that it cannot be
    reached and why; five retrievals are delivered marked unchecked and add
    at most one warning per scanner (not five, or three per message).
    """
    clamdAddress = f"tcp:127.0.0.1:{freePort()}"
    spamdAddress = f"tcp:127.0.0.1:{freePort()}"
    proxy = startProxy(popproxyFactory, clamdAddress, spamdAddress)
    assert sorted(stateLines(proxy, 2)) == [
        (
            "clamd",
            "warn",
            f"clamd at {clamdAddress} cannot be reached: Connection was refused "
            "by other side: 111: Connection refused.",
        ),
        (
            "spamd",
            "warn",
            f"spamd at {spamdAddress} cannot be reached: spamd refused the connection",
        ),
    ]
    heads = retrieveFive(proxy.port)
    assert all(
        b"X-Virus-Scanned: popproxy/clamd; unchecked (clamd unreachable)" in head
        and b"X-Spam-Status: unchecked (spamd refused the connection)" in head
        for head in heads
    ), heads
    log = proxy.log()
    warnings = [m.groups() for m in map(PER_MESSAGE.search, log.splitlines()) if m]
    assert warnings == [
        ("scan", "RETR 1 (UIDL 01-welcome) not scanned: clamd unreachable"),
        ("tag", "spamd check of RETR 1 (UIDL 01-welcome) failed: spamd refused the connection"),
    ], log
    assert len(stateLines(proxy, 2)) == 2
    assert log.count("clamd unreachable") == 1 + 5  # the warning, and the chain's note per RETR
