"""
Several instances, one console view: two `twistd popproxy` processes
share one PostgreSQL quarantine (a real PostgreSQL 15), with Dovecot
upstream, the shipped strip filter and the scan filter with a real clamd.
Mail is retrieved through both instances (poplib); then, over plain HTTP
with a cookie jar (the browser side is covered by test_e2e_console.py):

- alice signs in on instance 2's console and sees the item stripped
  through instance 1 and the one flagged through instance 2, not bob's;
  she downloads the stripped file (the bytes sent) and gets 404 for
  bob's item;
- she asks on instance 1's console for the release of the flagged item;
  the command line lists the request and approves it; instance 2's
  console then lets her download it;
- a session opened on one instance is unknown to the other (sessions
  are per process: a balancer in front needs stickiness, docs/scaling.md);
- and once in Chromium: the list read from PostgreSQL shows a hostile
  file name as text, running nothing.
"""

from __future__ import annotations

import http.cookiejar
import io
import poplib
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from selenium.webdriver.common.by import By

from popproxy._pgstore import PostgresStore
from popproxy._quarantineaddress import DatabaseAddress
from popproxy._quarantinecli import main as quarantineMain
from popproxy.console._view import recordFilename
from popproxy.message import Message
from tests.peers.clamd import eicar
from tests.peers.dovecot import DovecotMailbox, DovecotServer
from tests.peers.ports import freePort, waitForPort
from tests.peers.postgres import PostgresDatabase
from tests.test_e2e_console import (  # noqa: F401 (browser: the fixture)
    HOSTILE,
    TOOL,
    attachment,
    browser,
    message,
    noAlert,
    waitFor,
)

CONFIG = """
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
login_failure_delay = 0
[upstream]
default = "tcp:127.0.0.1:{upstream}"
[chain]
quarantine = "{database}"
[[filter]]
plugin = "strip"
settings = {{ notice = "Removed {{filename}}. Get it back at {{url}}" }}
[[filter]]
plugin = "scan"
settings = {{ address = "{clamd}" }}
[console]
listen = "tcp:{console}:interface=127.0.0.1"
public_url = "http://127.0.0.1:{console}"
"""


@dataclass
class Answer:
    code: int
    url: str
    body: bytes
    headers: Any

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class ConsoleBrowser:
    """
    Plain HTTP requests to one console, keeping its cookies as a browser
    would (redirects followed).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(self, path: str, form: dict[str, str] | None = None) -> Answer:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self._opener.open(self.base + path, data, timeout=30) as answer:
                return Answer(answer.status, answer.url, answer.read(), answer.headers)
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.url, e.read(), e.headers)

    def formToken(self, path: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.request(path).text)
        assert found is not None
        return found.group(1)

    def signIn(self, mailbox: DovecotMailbox) -> Answer:
        fields = {"login": mailbox.user, "password": mailbox.password}
        return self.request("/signin", {"csrf": self.formToken("/signin"), **fields})


def retrieve(port: int, mailbox: DovecotMailbox, number: int) -> bytes:
    """
    Message C{number} of C{mailbox}, retrieved through the proxy at C{port}.
    """
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        return b"\r\n".join(client.retr(number)[1])
    finally:
        client.quit()


def startInstances(
    postgres: PostgresDatabase, dovecot: DovecotServer, clamd: Any, popproxyFactory: Any
) -> list[tuple[Any, ConsoleBrowser]]:
    """
    Two instances on one migrated database, each with its console.
    """
    assert quarantineMain(["migrate", postgres.url], io.StringIO()) == 0
    started = []
    for _ in range(2):
        consolePort = freePort()
        config = CONFIG.format(
            upstream=dovecot.port,
            database=postgres.url,
            clamd=clamd.tcpAddress,
            console=consolePort,
        )
        proxy = popproxyFactory(config)
        waitForPort("127.0.0.1", consolePort, 10)
        started.append((proxy, ConsoleBrowser(f"http://127.0.0.1:{consolePort}")))
    return started


def test_twoInstancesOneConsoleView(
    postgres: PostgresDatabase,
    dovecotServer: DovecotServer,
    clamdServer: Any,
    popproxyFactory: Any,
    browser: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """
    Items quarantined through either instance show on the other's
    console; a release asked for on one and approved by the command line
    downloads from the other; sessions stay with the instance that
    opened them.
    """
    (first, console1), (second, console2) = startInstances(
        postgres, dovecotServer, clamdServer, popproxyFactory
    )
    alice, bob = dovecotServer.createMailbox(), dovecotServer.createMailbox()
    alice.deliver(message("Tools", attachment("tool.exe", TOOL), attachment(HOSTILE, b"MZ")))
    alice.deliver(message("Invoice", attachment("invoice.txt", eicar(), "text/plain")))
    bob.deliver(message("For Bob", attachment("bob.exe", b"MZ bob")))
    notice = retrieve(first.port, alice, 1)
    retrieve(second.port, alice, 2)
    retrieve(second.port, bob, 1)
    store = PostgresStore(DatabaseAddress(postgres.url), 1)
    records = {recordFilename(r): r for r in store.records()}
    store.close()
    assert set(records) == {"tool.exe", HOSTILE, "invoice.txt", "bob.exe"}
    tool, virus, bobs = records["tool.exe"], records["invoice.txt"], records["bob.exe"]
    noticeText = Message.fromBytes(notice).partAt((1,)).text()
    assert f"Get it back at {console1.base}/item/{tool.id}" in noticeText

    # Instance 2's console shows what instance 1 quarantined.
    assert console2.signIn(alice).url == console2.base + "/"
    listing = console2.request("/").text
    assert "tool.exe" in listing and "invoice.txt" in listing and "bob.exe" not in listing
    download = console2.request(f"/item/{tool.id}/download")
    assert download.code == 200 and download.body == TOOL
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert console2.request(f"/item/{bobs.id}").code == 404
    assert console2.request(f"/item/{bobs.id}/download").code == 404
    assert console2.request(f"/item/{virus.id}/download").code == 403

    # Asked for on instance 1, approved on the command line, downloaded from 2.
    assert console1.signIn(alice).code == 200
    token = console1.formToken(f"/item/{virus.id}")
    asked = console1.request(f"/item/{virus.id}/release", {"csrf": token})
    assert "waiting for an administrator" in asked.text
    assert "waiting for an administrator" in console2.request(f"/item/{virus.id}").text
    out = io.StringIO()
    assert quarantineMain(["requests", postgres.url], out) == 0
    assert out.getvalue().startswith(virus.id) and alice.user in out.getvalue()
    assert quarantineMain(["release", postgres.url, virus.id, "--by", "root"], out) == 0
    released = console2.request(f"/item/{virus.id}/download")
    assert released.code == 200 and released.body == eicar()

    # Instance 1's session cookie means nothing to instance 2.
    stranger = ConsoleBrowser(console2.base)
    for cookie in console1.cookies:
        stranger.cookies.set_cookie(cookie)
    assert stranger.request("/").url == console2.base + "/signin"

    # In Chromium, on instance 1: the hostile name is text.
    browser.get(console1.base + "/signin")
    browser.find_element(By.ID, "login").send_keys(alice.user)
    browser.find_element(By.ID, "password").send_keys(alice.password)
    browser.find_element(By.CSS_SELECTOR, ".signin button").click()
    waitFor(lambda: browser.current_url == console1.base + "/")
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".items .item h2")]
    assert sorted(shown) == sorted(["tool.exe", HOSTILE, "invoice.txt"])
    assert browser.find_elements(By.CSS_SELECTOR, ".items img") == [] and noAlert(browser)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
