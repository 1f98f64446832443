"""
The administrators' overview with `[proxy] workers = 2`, end to end:
`twistd -n popproxy` with a worker process, concurrent POP3 sessions spread
over both processes (the log shows each served some), and failed logins
that get the address blocked; then an administrator signs in over HTTP and
the overview's JSON panels list the sessions held open in both processes
(the main process asks its worker over their socket pair), count every
message's verdicts, whichever process filtered it (the worker tells the
main process over the same pair), and list the block.  Sign-ins on the
users' form whose password no POP3 login line could carry (CR LF, NUL)
are answered as wrong passwords and get the address blocked as failed
logins do, while the upstream sees no connection at all.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from popproxy.console._passwordhash import hashPassword
from tests.peers.ports import freePort
from tests.peers.proxy import ProxyProcess
from tests.test_e2e_metrics import (
    MESSAGES,
    ROUNDS,
    Client,
    badSession,
    goodSession,
    onBothProcesses,
    waitFor,
)
from tests.test_e2e_metrics import startProxy as metricsProxy

SESSIONS = 8
HELD = 6
PASSWORD = "administrator-password"


class AdminBrowser:
    """
    An HTTP client of the console (an administrator's, or a user signing
    in), keeping its cookies.
    """

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def signIn(self) -> int:
        """
        Sign in as root; the status of the page it ends on.
        """
        _, form = self.get("/admin/signin")
        found = re.search(rb'name="csrf" value="([^"]+)"', form)
        assert found is not None
        fields = {"csrf": found.group(1).decode(), "login": "root", "password": PASSWORD}
        body = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + "/admin/signin", body, timeout=10) as answer:
                assert answer.url == self.base + "/admin"
                return int(answer.status)
        except urllib.error.HTTPError as e:
            return e.code

    def userSignIn(self, login: str, password: str) -> int:
        """
        Sign in on the users' form; the status of the page it ends on.
        """
        _, form = self.get("/signin")
        found = re.search(rb'name="csrf" value="([^"]+)"', form)
        assert found is not None
        fields = {"csrf": found.group(1).decode(), "login": login, "password": password}
        body = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + "/signin", body, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as e:
            return e.code

    def panel(self, name: str) -> str:
        code, body = self.get(f"/admin/live/{name}")
        assert code == 200, body
        return str(json.loads(body)["html"])


def startProxy(tmp_path: Path, upstreamPort: int, consolePort: int) -> ProxyProcess:
    """
    The metrics test's proxy with a directory quarantine, quick login
    blocks and the console.
    """
    extra = f"""
[limits.logins]
delay = 0.01
block_after = 3
new_account_weight = 1
[console]
listen = "tcp:{consolePort}:interface=127.0.0.1"
admins = {{ root = "{hashPassword(PASSWORD).line()}" }}
"""
    chain = f'quarantine = "{tmp_path / "quarantine"}"'
    return metricsProxy(tmp_path, upstreamPort, extra, chain)


def heldSession(port: int, together: threading.Barrier) -> Client:
    """
    A session logged in and left open (greeted before any logs in, so
    both processes take some).
    """
    client = Client(port)
    assert client.line().startswith(b"+OK")
    together.wait(30)
    assert client.command(b"USER u").startswith(b"+OK")
    assert client.command(b"PASS p").startswith(b"+OK")
    return client


def processesOf(proxy: ProxyProcess, clients: list[Client]) -> set[str]:
    """
    Which processes serve C{clients}, from the lines that log their sessions'
    opening (waited for: a greeted client may see its greeting before the log).
    """
    wanted = {f" opened by 127.0.0.1:{client.sock.getsockname()[1]}" for client in clients}

    def lines() -> list[str] | None:
        found = [line for line in proxy.log().splitlines() if any(w in line for w in wanted)]
        return found if len(found) == len(wanted) else None

    opened = waitFor(lines, "the held sessions in the log", proxy)
    return {"worker 1" if "worker 1: " in line else "main" for line in opened}


def heldOnBothProcesses(proxy: ProxyProcess) -> list[Client]:
    """
    Rounds of six sessions held open until both processes hold some (the
    first process awake accepts every connection queued: on a loaded
    machine one may take a whole round).
    """
    clients: list[Client] = []
    for _ in range(ROUNDS):
        together = threading.Barrier(HELD)
        with ThreadPoolExecutor(max_workers=HELD) as pool:
            runs = [pool.submit(heldSession, proxy.port, together) for _ in range(HELD)]
            clients += [run.result(60) for run in runs]
        if processesOf(proxy, clients) == {"main", "worker 1"}:
            return clients
    raise AssertionError(f"{ROUNDS} rounds all held by one process:\n{proxy.log()}")


def sessionsOfBothProcesses(proxy: ProxyProcess, admin: AdminBrowser) -> None:
    """
    Sessions held open over both processes are all in the overview's
    list (the main process asked its worker), with user and client.
    """
    clients = heldOnBothProcesses(proxy)
    held = len(clients)
    try:
        listed = waitFor(
            lambda: f"{held} sessions open" in (html := admin.panel("sessions")) and html,
            "the held sessions",
            proxy,
        )
        assert listed.count('<td class="user">u</td><td class="client">127.0.0.1:') == held
        processes = set(re.findall(r'<td class="process">(main|worker 1) · session', listed))
        assert processes == {"main", "worker 1"}, listed
    finally:
        for client in clients:
            client.command(b"QUIT")
            client.finish()
    waitFor(lambda: "No POP3 session is open." in admin.panel("sessions"), "sessions to end", proxy)


def test_workersActivityShowsInTheConsole(rawPop3: Any, tmp_path: Path) -> None:
    """
    Rounds of eight sessions until both processes served some, three
    messages each: the judge's chart counts them all (per round 24
    messages: 8 deliver, 8 rewrite, 8 tempfail) and the scanner's
    (16 deliver per round); the console's own sign-in is refused (429) once
    the failed logins block the address, and the block is listed with its
    address and account.
    """
    server = rawPop3(messages=MESSAGES, user="u", password="p")
    consolePort = freePort()
    proxy = startProxy(tmp_path, server.port, consolePort)
    try:
        good = len(onBothProcesses(proxy, goodSession, SESSIONS))
        # Signed in before the failures block the address (the console's
        # sign-ins count in the same throttle: afterwards it gets 429).
        admin = AdminBrowser(consolePort)
        assert admin.signIn() == 200
        sessionsOfBothProcesses(proxy, admin)
        for _ in range(3):
            badSession(proxy.port)
        assert AdminBrowser(consolePort).signIn() == 429
        expected = (
            f"Last hour: {3 * good} messages, {good} deliver, {good} rewrite, {good} tempfail"
        )
        waitFor(lambda: expected in admin.panel("filters"), "the judge's verdicts", proxy)
        filters = admin.panel("filters")
        scanned = f"Last hour: {2 * good} messages, {2 * good} deliver"
        assert scanned in filters.split('id="filter-scanner"')[1]
        blocks = waitFor(lambda: "127.0.0.1" in admin.panel("blocks"), "the block", proxy)
        html = admin.panel("blocks")
        assert blocks and '<td class="client">127.0.0.1</td><td class="account">u</td>' in html
        assert '<td class="state state-unreachable">blocked</td>' in html
    finally:
        proxy.stop()


def test_unsendableSignInValuesCountButNeverReachUpstream(rawPop3: Any, tmp_path: Path) -> None:
    """
    Three sign-ins on the users' form with a password holding CR LF, NUL
    or LF: each is told "wrong login or password" (401) and logs the
    fail2ban line; after them the address is blocked (429, even with the
    right password), and the POP3 server never saw a connection for them
    (the one it has is the start-up check's POP3 session's, which sends
    nothing).
    """
    server = rawPop3(messages=MESSAGES, user="u", password="p")
    consolePort = freePort()
    proxy = startProxy(tmp_path, server.port, consolePort)
    try:
        waitFor(lambda: server.connectionCount == 1, "the start-up check's connection", proxy)
        browser = AdminBrowser(consolePort)
        for password in ("p\r\nDELE 1", "p\0", "p\nDELE 1"):
            assert browser.userSignIn("u", password) == 401
        assert browser.userSignIn("u", "p") == 429
        log = proxy.log()
        assert log.count("login failure: client=127.0.0.1 account=u") == 3, log
        assert log.count("login values refused") == 3, log
    finally:
        proxy.stop()
    assert server.connectionCount == 1 and server.rawInput == b""
