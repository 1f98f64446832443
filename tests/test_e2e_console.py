"""
The console in a real browser (Debian's Chromium driven by Selenium)
against `twistd popproxy` with Dovecot upstream, the shipped strip filter
and the scan filter with a real clamd: a POP3 client (poplib) first
retrieves mail with blocked attachments for two users; then user A signs
in with their Dovecot password, sees exactly their items, downloads one
(the bytes the quarantine kept), gets 404 for user B's item, asks for the
release of the item clamd flagged, which an administrator approves in the
browser (their overview shows the queue, the filters' charts and the
health; their list shows both users' items, the hostile name as text),
after which it downloads; a hostile file name shows as text and runs
nothing; a POST without its form token is refused.  The proxy runs with a
worker process: the charts count every message, whichever process
filtered it.  Screenshots of the user's and the administrator's pages are
made on every run; with POPPROXY_SCREENSHOTS=docs they replace those in
docs/console/.
"""

from __future__ import annotations

import base64
import os
import poplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from popproxy._quarantine import DirectoryQuarantine
from popproxy._quarantinecli import main as quarantineMain
from popproxy._releases import DirectoryReleases
from popproxy.console._passwordhash import hashPassword
from popproxy.console._view import Item, downloadOf, recordFilename
from popproxy.message import Message
from tests.peers.clamd import eicar
from tests.peers.daemons import forgetGroup, reapWithRun
from tests.peers.dovecot import DovecotMailbox, DovecotServer
from tests.peers.ports import freePort, waitForPort

ROOT = Path(__file__).resolve().parents[1]
#: Where the screenshots go: docs/console/ (what docs/console.md shows)
#: when POPPROXY_SCREENSHOTS=docs is set to refresh them, else pytest's
#: temporary directory, so that a test run leaves the checkout clean.
SHOTS = (
    ROOT / "docs" / "console"
    if os.environ.get("POPPROXY_SCREENSHOTS") == "docs"
    else Path(tempfile.mkdtemp(prefix="popproxy-console-shots-"))
)
HOSTILE = "<img src=x onerror=alert(1)>.exe"
ADMIN_PASSWORD = "an administrator's password"
TOOL = b"MZ\x90\x00 a tool the user wants back \x00\x01\x02" * 20


def attachment(name: str, content: bytes, contentType: str = "application/octet-stream") -> bytes:
    encoded = base64.encodebytes(content).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: {contentType}; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + encoded


def message(subject: str, *parts: bytes) -> bytes:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts)
    return (
        (
            f"From: Mallory <mallory@example.com>\r\nTo: you@example.net\r\nSubject: {subject}\r\n"
            "Date: Thu, 03 Dec 2026 18:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        ).encode()
        + b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        + body
        + b"--b--\r\n"
    )


def retrieveAll(port: int, mailbox: DovecotMailbox) -> list[bytes]:
    """
    Retrieve every message through the proxy, as a mail program would.
    """
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        count, _ = client.stat()
        return [b"\r\n".join(client.retr(n + 1)[1]) for n in range(count)]
    finally:
        client.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """
    One headless Chromium for the module, downloading into a directory.

    chromedriver runs in a process group of its own, with the browser it
    starts, which the run's reaper takes if the test run dies first (both
    were seen surviving a test run killed with SIGKILL).
    """
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,900")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service("/usr/bin/chromedriver", popen_kw={"start_new_session": True})
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        group = service.process.pid if service.process is not None else None
        if group is not None:
            reapWithRun(group)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]  # the tests' own attribute
    try:
        yield driver
    finally:
        driver.quit()
        if group is not None:
            forgetGroup(group)


def waitFor(condition: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {condition}")


def downloaded(directory: Path, name: str) -> bytes:
    path = directory / name
    waitFor(lambda: path.exists() and not list(directory.glob("*.crdownload")))
    return path.read_bytes()


def noAlert(driver: Any) -> bool:
    try:
        _ = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_userGetsTheirItemsBack(
    dovecotServer: DovecotServer,
    clamdServer: Any,
    popproxyFactory: Any,
    browser: Any,
    tmp_path: Path,
) -> None:
    """
    The user's whole round in Chromium, as the module docstring tells it:
    the notice links to the item, A sees exactly A's items, downloads the
    stripped file's bytes, cannot open B's item, a hostile name runs
    nothing, a POST without its token is refused, and the virus item
    downloads only once the command line released it.
    """
    alice, bob = dovecotServer.createMailbox(), dovecotServer.createMailbox()
    alice.deliver(message("Tools", attachment("tool.exe", TOOL), attachment(HOSTILE, b"MZ evil")))
    alice.deliver(message("Invoice", attachment("invoice.txt", eicar(), "text/plain")))
    bob.deliver(message("For Bob", attachment("bob.exe", b"MZ bob")))
    quarantine = tmp_path / "quarantine"
    consolePort = freePort()
    base = f"http://127.0.0.1:{consolePort}"
    proxy = popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
workers = 2
[upstream]
default = "tcp:127.0.0.1:{dovecotServer.port}"
[chain]
quarantine = "{quarantine}"
[[filter]]
plugin = "strip"
settings = {{ notice = "Removed {{filename}}: {{reason}}. Get it back at {{url}}" }}
[[filter]]
plugin = "scan"
settings = {{ address = "{clamdServer.tcpAddress}" }}
[console]
listen = "tcp:{consolePort}:interface=127.0.0.1"
public_url = "{base}"
admins = {{ root = "{hashPassword(ADMIN_PASSWORD).line()}" }}
"""
    )
    waitForPort("127.0.0.1", consolePort, 10)
    received = retrieveAll(proxy.port, alice)
    retrieveAll(proxy.port, bob)
    records = {recordFilename(r): r for r in DirectoryQuarantine(quarantine).records()}
    assert set(records) == {"tool.exe", HOSTILE, "invoice.txt", "bob.exe"}
    tool, virus, bobs = records["tool.exe"], records["invoice.txt"], records["bob.exe"]
    notice = Message.fromBytes(received[0]).partAt((1,)).text()
    assert f"Get it back at {base}/item/{tool.id}" in notice
    assert (virus.plugin, virus.user, bobs.user) == ("scan", alice.user, bob.user)

    # Sign in with the Dovecot password; exactly Alice's three items.
    browser.get(base + "/")
    assert browser.current_url == base + "/signin"
    browser.find_element(By.ID, "login").send_keys(alice.user)
    browser.find_element(By.ID, "password").send_keys(alice.password)
    browser.find_element(By.CSS_SELECTOR, ".signin button").click()
    waitFor(lambda: browser.current_url == base + "/")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".items .item h2")]
    assert sorted(names) == sorted(["tool.exe", HOSTILE, "invoice.txt"])
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "user-items.png"))

    # A hostile file name is text: no element, no alert, nothing logged.
    browser.get_log("browser")
    browser.get(base + "/")
    assert browser.find_elements(By.CSS_SELECTOR, ".items img") == []
    assert HOSTILE in browser.find_element(By.ID, f"item-{records[HOSTILE].id}").text
    assert noAlert(browser)
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []

    # Download the stripped tool: the bytes the quarantine kept, decoded.
    browser.find_element(By.CSS_SELECTOR, f"#item-{tool.id} a.download").click()
    expected = downloadOf(Item(tool, "tool.exe"), DirectoryQuarantine(quarantine).original(tool))
    assert downloaded(browser.downloads, "tool.exe") == expected.content == TOOL

    # Bob's item is not there for Alice.
    browser.get(f"{base}/item/{bobs.id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    browser.get(f"{base}/item/{bobs.id}/download")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"

    # A POST without its form token is refused.
    browser.get(f"{base}/item/{virus.id}")
    browser.execute_script(
        "document.querySelector('form.release input[name=csrf]').remove();"
        "document.querySelector('form.release').submit();"
    )
    waitFor(lambda: browser.find_element(By.TAG_NAME, "h1").text == "Not allowed")
    assert quarantineMain(["--dir", str(quarantine), "requests"]) == 0

    # The virus needs a release: request it, the CLI approves, it downloads.
    browser.get(f"{base}/item/{virus.id}")
    assert browser.find_elements(By.CSS_SELECTOR, "a.download") == []
    browser.find_element(By.CSS_SELECTOR, "form.release button").click()
    waitFor(lambda: "waiting for an administrator" in browser.page_source)
    browser.save_screenshot(str(SHOTS / "release-requested.png"))
    adminApproves(browser, f"http://localhost:{consolePort}", records, alice.user, bob, proxy.port)
    release = DirectoryReleases(quarantine).status(virus.id)
    assert release is not None and (release.requestedBy, release.approvedBy) == (alice.user, "root")
    browser.get(f"{base}/item/{virus.id}")
    browser.find_element(By.CSS_SELECTOR, "a.download").click()
    assert downloaded(browser.downloads, "invoice.txt") == eicar()

    # On a phone-sized screen.
    browser.set_window_size(390, 844)
    browser.get(base + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390
    browser.save_screenshot(str(SHOTS / "user-items-phone.png"))
    browser.set_window_size(1100, 900)


def adminSignIn(browser: Any, admin: str) -> None:
    browser.get(admin + "/admin")
    assert browser.current_url == admin + "/admin/signin"
    browser.find_element(By.ID, "login").send_keys("root")
    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, ".signin button").click()
    waitFor(lambda: browser.current_url == admin + "/admin")


def adminApproves(
    browser: Any,
    admin: str,
    records: dict[Any, Any],
    user: str,
    bob: DovecotMailbox,
    proxyPort: int,
) -> None:
    """
    The administrator, on another host name of the console (so with
    cookies of their own in the same browser), sees the request in the
    queue, the charts of both filters (3 messages each, from whichever
    process), clamd reachable, and approves; their list shows both
    users' items with the hostile name as text; the overview refreshes
    itself when new mail is quarantined.
    """
    adminSignIn(browser, admin)
    virus = records["invoice.txt"]
    queued = browser.find_element(By.ID, f"queued-{virus.id}")
    assert "invoice.txt" in queued.text and user in queued.text
    for name in ("strip", "scan"):
        charts = browser.find_element(By.ID, f"filter-{name}")
        assert "Last hour: 3 messages" in charts.text, charts.text
        assert charts.find_elements(By.CSS_SELECTOR, "svg rect.bar")
    health = browser.find_element(By.ID, "health")
    assert "reachable" in health.text and "4 for 2 users" in health.text
    browser.set_window_size(1100, 2200)
    browser.save_screenshot(str(SHOTS / "admin-overview.png"))
    browser.set_window_size(1100, 900)
    queued = browser.find_element(By.ID, f"queued-{virus.id}")
    queued.find_element(By.CSS_SELECTOR, "form.approve button").click()
    waitFor(lambda: "No release requests are waiting." in browser.page_source)

    browser.get_log("browser")
    browser.get(admin + "/admin/items")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".items .item h2")]
    assert sorted(names) == sorted(["tool.exe", HOSTILE, "invoice.txt", "bob.exe"])
    assert browser.find_elements(By.CSS_SELECTOR, ".items img") == []
    assert HOSTILE in browser.find_element(By.ID, f"item-{records[HOSTILE].id}").text
    assert "Released by root" in browser.find_element(By.ID, f"item-{virus.id}").text
    browser.save_screenshot(str(SHOTS / "admin-items.png"))

    # The overview refreshes its panels without a reload.
    browser.get(admin + "/admin")
    browser.execute_script("document.body.setAttribute('data-loaded-once', 'yes')")
    bob.deliver(message("Again", attachment("again.exe", b"MZ again")))
    retrieveAll(proxyPort, bob)
    waitFor(lambda: "5 for 2 users" in browser.find_element(By.ID, "health").text, 25.0)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded-once") == "yes"
    assert noAlert(browser)
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
