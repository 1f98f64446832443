"""
The administrators' pages through the console's real twisted.web site
(HTTP/1.0 over an in-memory transport): their own sign-in form, counted in
the login throttle, where a mail password is no use; every page refused to
users and to browsers without a session; the release queue with Approve
and Reject (form token required), after which the user downloads or is
told no; every user's items, filtered, searched and paged; any item's
download; the overview's panels (charts, health, blocks) and their JSON
answers; everything from mail escaped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from popproxy._activity import FilterRun, LoginBlock
from popproxy._chain import ChainEntry, FilterChain
from popproxy._health import Health
from popproxy._lifecycle import Lifecycle
from popproxy._loginthrottle import LoginThrottle, ThrottleSettings
from popproxy._memorycounters import MemoryCounters
from popproxy._metrics import Metrics
from popproxy._opensessions import OpenSessions
from popproxy._quarantine import DirectoryQuarantine
from popproxy._releases import DirectoryReleases
from popproxy._sessionrecord import SessionSnapshot
from popproxy.console._adminpanels import ConsoleActivity
from popproxy.interfaces import ScannerStatus
from tests.consoleharness import (
    ConsoleClient,
    ScriptedUpstream,
    makeAdmin,
    makeConsole,
    quarantined,
)
from tests.test_health import FakeListener, FakeScanner, Plain

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw", "root": "mail-password-of-root"}
HOSTILE = "<img src=x onerror=alert(1)>'.exe"


class Setup:
    """
    A console with administrators over a quarantine directory, its clock,
    activity and scripted upstream.
    """

    def __init__(self, directory: Path, pageSize: int = 25, throttle: bool = False) -> None:
        self.directory = directory
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.upstream = ScriptedUpstream(dict(ACCOUNTS))
        self.metrics = Metrics()
        self.throttle = None
        if throttle:
            settings = ThrottleSettings(delay=0.0, blockAfter=3, newAccountWeight=1)
            counters = MemoryCounters(self.clock)
            self.throttle = LoginThrottle(counters, self.clock, settings, self.metrics)
        self.activity = ConsoleActivity.starting(self.clock)
        self.metrics.watch(self.activity.watch())
        chain = FilterChain(
            [
                ChainEntry("virus", FakeScanner("virus", ScannerStatus("clamd", "tcp:x:3310"))),
                ChainEntry("strip", Plain()),
            ],
            self.clock,
            quarantine=DirectoryQuarantine(directory),
        )
        health = Health(Lifecycle(), lambda: [("pop3", FakeListener(1))], lambda: chain)
        self.console = makeConsole(
            directory, self.upstream, self.clock, self.throttle, pageSize=pageSize
        )
        self.open: list[SessionSnapshot] = []
        sessions = OpenSessions(lambda: tuple(self.open))
        self.admin = makeAdmin(self.clock, health, self.activity, sessions)

    def browser(self, peer: str = "192.0.2.7") -> ConsoleClient:
        return ConsoleClient(self.console, peer=peer, admin=self.admin)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path / "q")


def test_adminSignsInOnTheirOwnForm(setup: Setup) -> None:
    """
    The administrator's name and password open the overview; a wrong
    password is 401; the mail password of a user of the same name is no
    use there, and nothing goes upstream.
    """
    browser = setup.browser()
    assert browser.get("/admin").header("Location") == "/admin/signin"
    wrong = browser.adminSignIn("root", "mail-password-of-root")
    assert wrong.code == 401 and "Wrong name or password." in wrong.text
    assert browser.adminSignIn("nobody", "root-password").code == 401
    assert setup.upstream.sent == []
    signedIn = browser.adminSignIn()
    assert (signedIn.code, signedIn.header("Location")) == (303, "/admin")
    overview = browser.get("/admin")
    assert overview.code == 200
    for heading in ("Release requests", "Filters", "Health", "Recent limit blocks"):
        assert f"<h2>{heading}</h2>" in overview.text
    assert '<script src="/static/console.js" defer></script>' in overview.text
    assert "<script>" not in overview.text


def test_adminPasswordIsNoMailLogin(setup: Setup) -> None:
    """
    The administrator's password on the users' form is checked upstream as
    a mail login (and fails there); it opens no administrator's session.
    """
    browser = setup.browser()
    assert browser.signIn("root", "root-password").code == 401
    assert browser.get("/admin").header("Location") == "/admin/signin"


def test_usersAreRefused(setup: Setup) -> None:
    """
    A user's session gets 403 on every administrator's page and JSON
    answer, and cannot approve its own request; without a session the
    JSON answers are 401.
    """
    identifier = quarantined(setup.directory, "alice", "v.exe", b"MZ", plugin="scan")
    anonymous = setup.browser()
    assert anonymous.get("/admin/live/queue").code == 401
    assert anonymous.get("/admin/items").header("Location") == "/admin/signin"
    browser = setup.browser()
    browser.signIn("alice", "alice-pw")
    csrf = browser.get("/").formToken()
    for path in ("/admin", "/admin/items", f"/admin/item/{identifier}", "/admin/live/health"):
        assert browser.get(path).code == 403, path
    answer = browser.get(f"/admin/item/{identifier}/download")
    assert answer.code == 403 and b"MZ" not in answer.body
    assert browser.post(f"/admin/item/{identifier}/approve", {"csrf": csrf}).code == 403
    assert not DirectoryReleases(setup.directory).isReleased(identifier)


def test_adminSessionsStayOffTheUsersPages(setup: Setup) -> None:
    """
    An administrator opening the users' pages is sent to the overview; a
    release request from an administrator's session is refused.
    """
    identifier = quarantined(setup.directory, "root", "r.exe", b"MZ", plugin="scan")
    browser = setup.browser()
    browser.adminSignIn()
    assert browser.get("/").header("Location") == "/admin"
    assert browser.get(f"/item/{identifier}").header("Location") == "/admin"
    csrf = browser.get("/admin").formToken()
    assert browser.post(f"/item/{identifier}/release", {"csrf": csrf}).code == 403
    assert DirectoryReleases(setup.directory).status(identifier) is None


def test_approveMakesItDownloadable(setup: Setup) -> None:
    """
    Alice asks for the item clamd flagged; it is in the queue; an Approve
    without the form token is refused; with it the release records the
    administrator and Alice downloads.
    """
    identifier = quarantined(setup.directory, "alice", "invoice.txt", b"EICAR", plugin="scan")
    alice = setup.browser()
    alice.signIn("alice", "alice-pw")
    alice.post(f"/item/{identifier}/release", {"csrf": alice.get("/").formToken()})
    admin = setup.browser(peer="192.0.2.9")
    admin.adminSignIn()
    overview = admin.get("/admin")
    assert f'id="queued-{identifier}"' in overview.text and "invoice.txt" in overview.text
    assert admin.post(f"/admin/item/{identifier}/approve", {}).code == 403
    assert admin.post(f"/admin/item/{identifier}/approve", {"csrf": "forged"}).code == 403
    assert not DirectoryReleases(setup.directory).isReleased(identifier)
    done = admin.post(
        f"/admin/item/{identifier}/approve", {"csrf": overview.formToken(), "back": "overview"}
    )
    assert (done.code, done.header("Location")) == (303, "/admin#queue")
    release = DirectoryReleases(setup.directory).status(identifier)
    assert release is not None and release.approvedBy == "root" and release.requestedBy == "alice"
    assert "No release requests are waiting." in admin.get("/admin").text
    download = alice.get(f"/item/{identifier}/download")
    assert download.code == 200 and download.body == b"EICAR"


def test_rejectTellsTheUser(setup: Setup) -> None:
    """
    A rejected request leaves the queue; the user is told it was declined,
    cannot ask again, and cannot download.
    """
    identifier = quarantined(setup.directory, "alice", "v.exe", b"MZ", plugin="scan")
    alice = setup.browser()
    alice.signIn("alice", "alice-pw")
    alice.post(f"/item/{identifier}/release", {"csrf": alice.get("/").formToken()})
    admin = setup.browser(peer="192.0.2.9")
    admin.adminSignIn()
    page = admin.get(f"/admin/item/{identifier}")
    assert "Requested by alice" in page.text and "/reject" in page.text
    answer = admin.post(f"/admin/item/{identifier}/reject", {"csrf": page.formToken()})
    assert answer.header("Location") == f"/admin/item/{identifier}"
    assert "Refused by root" in admin.get(f"/admin/item/{identifier}").text
    assert DirectoryReleases(setup.directory).pending() == []
    mine = alice.get(f"/item/{identifier}")
    assert "An administrator declined to release this item." in mine.text
    assert "Request release" not in mine.text
    assert alice.get(f"/item/{identifier}/download").code == 403


def test_everyUsersItemsFilteredSearchedPaged(tmp_path: Path) -> None:
    """
    The list shows every user's items, newest first, with their user; it
    filters by user, searches, and pages.
    """
    setup = Setup(tmp_path / "q", pageSize=2)
    ids = [
        quarantined(setup.directory, user, name, b"MZ", uidl=name, subject=subject)
        for user, name, subject in [
            ("alice", "a1.exe", "Tools"),
            ("bob", "b1.exe", "Tools"),
            ("alice", "a2.exe", "Invoice"),
        ]
    ]
    admin = setup.browser()
    admin.adminSignIn()
    first = admin.get("/admin/items")
    assert "3 items" in first.text and 'rel="next"' in first.text
    shown = re.findall(r'id="item-([^"]+)"', first.text)
    second = re.findall(r'id="item-([^"]+)"', admin.get("/admin/items?page=2").text)
    assert sorted(shown + second) == sorted(ids) and len(shown) == 2
    bobs = admin.get("/admin/items?user=bob")
    assert re.findall(r'id="item-([^"]+)"', bobs.text) == [ids[1]] and "1 item of bob" in bobs.text
    found = admin.get("/admin/items?user=alice&q=invoice")
    assert re.findall(r'id="item-([^"]+)"', found.text) == [ids[2]]
    assert '<option value="alice">2 items</option>' in first.text
    assert re.findall(r'id="item-([^"]+)"', admin.get("/admin/items?page=%C2%B2").text) == shown


def test_adminDownloadsAnyItem(setup: Setup) -> None:
    """
    An administrator downloads any user's item, even one users may only
    ask for, as an attachment never rendered inline.
    """
    identifier = quarantined(setup.directory, "bob", "bob.exe", b"MZ-bob", plugin="scan")
    admin = setup.browser()
    admin.adminSignIn()
    answer = admin.get(f"/admin/item/{identifier}/download")
    assert answer.code == 200 and answer.body == b"MZ-bob"
    assert answer.header("Content-Type") == "application/octet-stream"
    assert (answer.header("Content-Disposition") or "").startswith('attachment; filename="bob.exe"')
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert admin.get("/admin/item/nosuchitem").code == 404


def test_hostileNamesAreTextEverywhere(setup: Setup) -> None:
    """
    A file name and subject made of markup appear escaped on the list,
    the item's page, the queue panel and its JSON answer.
    """
    identifier = quarantined(
        setup.directory, "alice", HOSTILE, b"MZ", plugin="scan", subject="<script>x()</script>"
    )
    DirectoryReleases(setup.directory).request(identifier, "alice")
    admin = setup.browser()
    admin.adminSignIn()
    escaped = "&lt;img src=x onerror=alert(1)&gt;&#39;.exe"
    for path in ("/admin/items", f"/admin/item/{identifier}", "/admin"):
        text = admin.get(path).text
        assert escaped in text and "<img" not in text and "<script>x()" not in text, path
    live = json.loads(admin.get("/admin/live/queue").body)
    assert escaped in live["html"] and "<img" not in live["html"]
    assert "&lt;script&gt;x()&lt;/script&gt;" in live["html"]


def test_chartsShowTheFiltersActivity(setup: Setup) -> None:
    """
    Verdicts and times the chain reports (through Metrics) show as bars
    and lines in each filter's charts, with their totals in words, for
    the last hour and the last day; a filter with no messages says so.
    """
    for seconds in (0.010, 0.020, 0.030):
        setup.activity.filters.record([FilterRun("strip", "deliver", seconds)])
    setup.activity.filters.record([FilterRun("strip", "rewrite", 0.5)])
    admin = setup.browser()
    admin.adminSignIn()
    answer = admin.get("/admin/live/filters")
    assert answer.header("Content-Type") == "application/json"
    html = json.loads(answer.body)["html"]
    strip = html.split('id="filter-strip"')[1]
    assert "Last hour: 4 messages, 3 deliver, 1 rewrite" in strip
    assert "Last day: 4 messages" in strip
    assert strip.count('class="bar v-deliver"') == 2 and strip.count('class="bar v-rewrite"') == 2
    assert 'class="line median"' in strip and 'class="line p95"' in strip
    assert "virus: 0 messages (none)" in html.split('id="filter-virus"')[1]
    assert "style=" not in html and "<script" not in html


def test_healthShowsScannersAndStore(setup: Setup) -> None:
    """
    The health panel says what /healthz says (proxy, listeners, each
    scanner) and the quarantine's items and free space.
    """
    quarantined(setup.directory, "alice", "a.exe", b"MZ")
    admin = setup.browser()
    admin.adminSignIn()
    html = json.loads(admin.get("/admin/live/health").body)["html"]
    assert "serving" in html and "pop3: listening" in html
    assert "<td>virus</td><td>clamd</td><td>tcp:x:3310</td>" in html
    assert 'class="state state-unknown">unknown' in html
    assert "1 for 1 user" in html and "Free space" in html
    assert f"directory {setup.directory}" in html


def test_blocksFromTheThrottleAreListed(tmp_path: Path) -> None:
    """
    Failed administrator sign-ins count in the login throttle like any
    login; the block they cause is refused with 429 and listed (address,
    account, until) in the blocks panel.
    """
    setup = Setup(tmp_path / "q", throttle=True)
    attacker = setup.browser(peer="198.51.100.4")
    codes = [attacker.adminSignIn("root", f"guess{n}").code for n in range(4)]
    assert codes == [401, 401, 401, 429]
    admin = setup.browser()
    admin.adminSignIn()
    html = json.loads(admin.get("/admin/live/blocks").body)["html"]
    assert '<td class="client">198.51.100.4</td><td class="account">root</td>' in html
    assert ">blocked<" in html
    setup.clock.advance(ThrottleSettings().blockFor + 1)
    assert ">ended<" in json.loads(admin.get("/admin/live/blocks").body)["html"]


def test_blocksFromElsewhereAreEscaped(setup: Setup) -> None:
    """
    An account name typed by an attacker is text in the blocks panel.
    """
    now = setup.clock.seconds()
    setup.activity.blocks.add(LoginBlock("192.0.2.1", "<b>x</b>", now, now + 60))
    admin = setup.browser()
    admin.adminSignIn()
    html = admin.get("/admin").text
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_unknownPanelsAndPages(setup: Setup) -> None:
    """
    Unknown panels are 404 JSON; unknown pages 404.
    """
    admin = setup.browser()
    admin.adminSignIn()
    assert admin.get("/admin/live/secrets").code == 404
    assert admin.get("/admin/nothing").code == 404
    assert admin.post("/admin/item/x/delete", {"csrf": admin.get("/admin").formToken()}).code == 404


def test_signOutReturnsToTheAdminForm(setup: Setup) -> None:
    """
    Signing out ends the administrator's session and shows their form.
    """
    admin = setup.browser()
    admin.adminSignIn()
    out = admin.post("/signout", {"csrf": admin.get("/admin").formToken()})
    assert out.header("Location") == "/admin/signin"
    assert admin.get("/admin").header("Location") == "/admin/signin"


def test_sessionsOpenNow(setup: Setup) -> None:
    """
    The sessions panel lists each open session (user, client, upstream,
    since, bytes, commands, process), a user name from the client as
    text; none open says so.
    """
    admin = setup.browser()
    admin.adminSignIn()
    assert "No POP3 session is open." in admin.get("/admin").text
    since = setup.clock.seconds() - 90
    setup.open.append(
        SessionSnapshot(
            "7",
            "proxy.listen[0]",
            "192.0.2.1:40000",
            "<i>bob</i>",
            "tcp:mx:110",
            since,
            4,
            30,
            4096,
        )
    )
    setup.open.append(
        SessionSnapshot("8", "proxy.listen[0]", "192.0.2.2:40001", None, None, since, 1, 6, 90)
    )
    html = json.loads(admin.get("/admin/live/sessions").body)["html"]
    assert "2 sessions open" in html
    assert (
        '<td class="user">&lt;i&gt;bob&lt;/i&gt;</td><td class="client">192.0.2.1:40000</td>'
        in html
    )
    assert "<td>tcp:mx:110</td>" in html and "4.0 KiB" in html and "(not logged in)" in html
    assert "main · session 7" in html
