"""
The console's settings reloaded with SIGHUP, end to end: `twistd -n
popproxy` with a console and two administrators; both and a user sign in
over HTTP (form tokens and cookies as a browser keeps them) and a POP3
session is open; the file then loses one administrator and gets another
C{public_url}, and the process gets SIGHUP (first with a C{[console]} the
reload refuses, which changes nothing).  The removed administrator's
next request is signed out and their password no longer signs in; the
other administrator and the user stay signed in; the POP3 session opened
before goes on (its notices keep the link of the configuration it started
with) and a new session's notices link to the new C{public_url}.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from popproxy.console._passwordhash import hashPassword
from tests.peers.dovecot import RawPop3Client
from tests.peers.ports import freePort, waitForPort
from tests.peers.proxy import ProxyProcess

PASSWORDS = {"root": "root's password", "leaver": "the leaver's password"}
HASHES = {name: hashPassword(password).line() for name, password in PASSWORDS.items()}

#: One message with an attachment the strip filter removes (by its name).
MESSAGE = (
    b"From: a@example.org\r\nSubject: tool\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
    b'Content-Type: application/octet-stream; name="tool.exe"\r\n'
    b'Content-Disposition: attachment; filename="tool.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
)
LINK = re.compile(rb"Get it at (http://[^/]+)/item/[A-Za-z0-9._%-]+")


def configText(
    upstreamPort: int, consolePort: int, quarantine: Path, publicUrl: str, admins: list[str]
) -> str:
    lines = "\n".join(f'"{name}" = "{HASHES[name]}"' for name in admins)
    return f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
login_failure_delay = 0
[upstream]
default = "tcp:127.0.0.1:{upstreamPort}"
[chain]
quarantine = "{quarantine}"
[[filter]]
plugin = "strip"
settings = {{ notice = "Removed {{filename}}. Get it at {{url}}" }}
[console]
listen = "tcp:{consolePort}:interface=127.0.0.1"
public_url = "{publicUrl}"
[console.admins]
{lines}
"""


class Browser:
    """
    An HTTP client of the console keeping its cookies, as a browser does.
    """

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str]:
        """
        The status and the path of the page C{path} ends on (redirects
        followed).
        """
        try:
            with self.opener.open(self.base + path, timeout=10) as answer:
                answer.read()
                return answer.status, answer.url.removeprefix(self.base)
        except urllib.error.HTTPError as e:
            return e.code, e.url.removeprefix(self.base)

    def signIn(self, form: str, login: str, password: str) -> tuple[int, str]:
        """
        Fill the sign-in form C{form} with its token; where it ends.
        """
        with self.opener.open(self.base + form, timeout=10) as page:
            found = re.search(rb'name="csrf" value="([^"]+)"', page.read())
        assert found is not None
        fields = {"csrf": found.group(1).decode(), "login": login, "password": password}
        body = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + form, body, timeout=10) as answer:
                return answer.status, answer.url.removeprefix(self.base)
        except urllib.error.HTTPError as e:
            return e.code, form


def waitFor(condition: Callable[[], bool], what: str, proxy: ProxyProcess) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{proxy.log()}")
        time.sleep(0.05)


def retrieveLink(client: RawPop3Client) -> bytes:
    """
    RETR the message in C{client}'s session; the base of its notice's link.
    """
    client.sendLine(b"RETR 1")
    found = LINK.search(b"".join(client.readMultiline(b"RETR 1")))
    assert found is not None
    return found.group(1)


@pytest.fixture
def proxies(request: pytest.FixtureRequest) -> Iterator[list[ProxyProcess]]:
    """
    The proxy a test starts, stopped at teardown, its log printed on failure.
    """
    started: list[ProxyProcess] = []
    yield started
    report = getattr(request.node, "rep_call", None)
    for proxy in started:
        proxy.stop()
        if report is None or report.failed:
            print(f"--- popproxy log ({proxy.workdir}) ---\n{proxy.log()}")


def test_removedAdministratorSignedOutOnReload(
    proxies: list[ProxyProcess], rawPop3: Any, tmp_path: Path
) -> None:
    """
    As the module docstring tells: SIGHUP ends the removed
    administrator's session at once and keeps everyone else's, the POP3
    session held across it, and the notices of new sessions link to the
    new public URL.
    """
    upstream = rawPop3([MESSAGE], user="u", password="p")
    consolePort = freePort()
    quarantine = tmp_path / "quarantine"
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    before = configText(
        upstream.port, consolePort, quarantine, "http://old.example", ["root", "leaver"]
    )
    proxy = ProxyProcess(workdir, before)
    proxies.append(proxy)
    proxy.start()
    waitForPort("127.0.0.1", consolePort, 10)
    root, leaver, user = Browser(consolePort), Browser(consolePort), Browser(consolePort)
    assert root.signIn("/admin/signin", "root", PASSWORDS["root"]) == (200, "/admin")
    assert leaver.signIn("/admin/signin", "leaver", PASSWORDS["leaver"]) == (200, "/admin")
    assert user.signIn("/signin", "u", "p") == (200, "/")
    held = RawPop3Client("127.0.0.1", proxy.port, timeout=30)
    held.login("u", "p")
    assert retrieveLink(held) == b"http://old.example"

    after = configText(upstream.port, consolePort, quarantine, "http://new.example", ["root"])
    after = after.replace("{PORT}", str(proxy.port))
    broken = after.replace("[console]\n", "[console]\nsession_timeout = 5\n")
    proxy.configPath.write_text(broken, "utf-8")
    os.kill(proxy.pid, signal.SIGHUP)
    waitFor(lambda: "reload failed" in proxy.log(), "the refused reload", proxy)
    assert "[console] session_timeout" in proxy.log()
    assert leaver.get("/admin") == (200, "/admin")

    proxy.configPath.write_text(after, "utf-8")
    os.kill(proxy.pid, signal.SIGHUP)
    waitFor(lambda: "console reloaded: " in proxy.log(), "the console's reload", proxy)

    assert leaver.get("/admin") == (200, "/admin/signin")
    assert leaver.signIn("/admin/signin", "leaver", PASSWORDS["leaver"]) == (401, "/admin/signin")
    assert root.get("/admin") == (200, "/admin")
    assert user.get("/") == (200, "/")
    assert retrieveLink(held) == b"http://old.example"
    assert held.okCommand(b"QUIT").startswith(b"+OK")
    held.close()
    with RawPop3Client("127.0.0.1", proxy.port, timeout=30) as fresh:
        fresh.login("u", "p")
        assert retrieveLink(fresh) == b"http://new.example"
        fresh.okCommand(b"QUIT")
    log = proxy.log()
    assert (
        "console reloaded: administrators added: none; removed: leaver; "
        "password changed: none; 1 administrator sessions ended" in log
    )
    assert "Traceback" not in log and log.count("reload failed") == 1
