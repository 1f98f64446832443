"""
The console's pages through its real twisted.web site (HTTP/1.0 over an
in-memory transport): sign-in with the mail login, a user's items and
nothing else, downloads as attachments, release requests, CSRF tokens on
every POST, the cookies' and the responses' security attributes, and
everything from mail escaped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popproxy._releases import DirectoryReleases
from tests.consoleharness import ConsoleClient, ScriptedUpstream, makeConsole, quarantined

ACCOUNTS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture
def quarantine(tmp_path: Path) -> Path:
    return tmp_path / "q"


def client(quarantine: Path, secure: bool = False, pageSize: int = 25) -> ConsoleClient:
    console = makeConsole(quarantine, ScriptedUpstream(dict(ACCOUNTS)), pageSize=pageSize)
    return ConsoleClient(console, secure=secure)


def test_signInShowsOnlyTheUsersItems(quarantine: Path) -> None:
    """
    Alice signs in with her mail password and sees her items, newest
    first, with what identifies each; Bob's item is not listed.
    """
    older = quarantined(quarantine, "alice", "old.exe", b"MZ1", uidl="a1", subject="First")
    newer = quarantined(quarantine, "alice", "new.exe", b"MZ2", uidl="a2", subject="Second")
    quarantined(quarantine, "bob", "bobs.exe", b"MZ3", uidl="b1")
    browser = client(quarantine)
    assert browser.get("/").code == 303
    signedIn = browser.signIn("alice", "alice-pw")
    assert (signedIn.code, signedIn.header("Location")) == (303, "/")
    page = browser.get("/")
    assert page.code == 200
    ids = re.findall(r'id="item-([^"]+)"', page.text)
    assert ids == [newer, older] or set(ids) == {newer, older}
    assert "bobs.exe" not in page.text
    assert "Sender &lt;sender@example.com&gt;" in page.text
    assert "First" in page.text and "strip: blocked extension .exe" in page.text


def test_wrongPasswordIsRefused(quarantine: Path) -> None:
    """
    A wrong password gives the form again (401) and no session cookie.
    """
    browser = client(quarantine)
    answer = browser.signIn("alice", "wrong")
    assert answer.code == 401 and "Wrong login or password." in answer.text
    assert "popproxy_session" not in browser.cookies
    assert browser.get("/").code == 303


def test_formValuesNoLoginLineCanCarryConnectNowhere(quarantine: Path) -> None:
    """
    A form whose decoded password or login holds CR LF or NUL gets the
    answer of a wrong password (401, no hint); one that is not UTF-8, or
    longer than the form takes, gets the form again (400); none of them
    makes a connection to the upstream.
    """
    upstream = ScriptedUpstream(dict(ACCOUNTS))
    browser = ConsoleClient(makeConsole(quarantine, upstream))
    for login, password in [("alice", "alice-pw\r\nDELE 1"), ("alice\0", "alice-pw")]:
        answer = browser.signIn(login, password)
        assert answer.code == 401 and "Wrong login or password." in answer.text
        assert "control character" not in answer.text
    for rawLogin, rawPassword in [(b"alice%FF", b"alice-pw"), (b"alice", b"x" * 1025)]:
        token = browser.get("/signin").formToken().encode()
        body = b"csrf=" + token + b"&login=" + rawLogin + b"&password=" + rawPassword
        form = {b"Content-Type": b"application/x-www-form-urlencoded"}
        assert browser.send(b"POST", "/signin", body, form).code == 400
    assert upstream.origins == [] and upstream.sent == []
    assert "popproxy_session" not in browser.cookies


def test_postsWithoutTheirTokenAreRefused(quarantine: Path) -> None:
    """
    A sign-in, a release request or a sign-out without its form token
    (or with another session's) is 403 and changes nothing.
    """
    identifier = quarantined(quarantine, "alice", "v.exe", b"MZ", plugin="scan")
    browser = client(quarantine)
    assert browser.post("/signin", {"login": "alice", "password": "alice-pw"}).code == 403
    browser.get("/signin")
    forged = {"login": "alice", "password": "alice-pw", "csrf": "x"}
    assert browser.post("/signin", forged).code == 403
    assert "popproxy_session" not in browser.cookies
    browser.signIn("alice", "alice-pw")
    assert browser.post(f"/item/{identifier}/release", {}).code == 403
    assert DirectoryReleases(quarantine).status(identifier) is None
    assert browser.post("/signout", {}).code == 403
    assert browser.get("/").code == 200


def test_cookiesAreHttpOnlyStrictAndSecureOverTls(quarantine: Path) -> None:
    """
    Over plain HTTP the cookies are HttpOnly and SameSite=Strict; over TLS
    also Secure, with the __Host- prefix.
    """
    plain = client(quarantine)
    plain.signIn("alice", "alice-pw")
    session = [c for c in plain.setCookies if c.startswith("popproxy_session=")][0]
    assert "HttpOnly" in session and "SameSite=strict" in session and "Secure" not in session
    secure = client(quarantine, secure=True)
    secure.signIn("alice", "alice-pw")
    session = [c for c in secure.setCookies if c.startswith("__Host-popproxy_session=")][0]
    assert "Secure" in session and "HttpOnly" in session and "Path=/" in session
    assert secure.get("/").code == 200


def test_securityHeadersOnEveryResponse(quarantine: Path) -> None:
    """
    Pages, errors and static files all carry the strict CSP, nosniff and
    no framing; the style sheet is served from the console itself.
    """
    browser = client(quarantine)
    for path in ("/signin", "/nothing", "/static/console.css", "/static/x.js"):
        answer = browser.get(path)
        csp = answer.header("Content-Security-Policy") or ""
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp, path
        assert answer.header("X-Content-Type-Options") == "nosniff"
        assert answer.header("X-Frame-Options") == "DENY"
    assert browser.get("/static/console.css").header("Content-Type").startswith("text/css")  # type: ignore[union-attr]
    assert browser.get("/static/x.js").code == 404
    page = browser.get("/signin").text
    assert "<script" not in page and "style=" not in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_downloadIsAnAttachment(quarantine: Path) -> None:
    """
    A stripped file is downloaded as the exact quarantined bytes, as an
    attachment of type application/octet-stream with a safe name.
    """
    identifier = quarantined(quarantine, "alice", "r\u00e9port 2026/1.exe", b"MZ\x00\x01")
    browser = client(quarantine)
    browser.signIn("alice", "alice-pw")
    answer = browser.get(f"/item/{identifier}/download")
    assert answer.code == 200
    assert answer.body == b"MZ\x00\x01"
    assert answer.header("Content-Type") == "application/octet-stream"
    assert answer.header("X-Content-Type-Options") == "nosniff"
    disposition = answer.header("Content-Disposition") or ""
    assert disposition == (
        "attachment; filename=\"r_port 2026_1.exe\"; filename*=UTF-8''r%C3%A9port%202026_1.exe"
    )
    assert "sandbox" in (answer.header("Content-Security-Policy") or "")


def test_otherUsersItemsAreNotFound(quarantine: Path) -> None:
    """
    Bob's item, its download and its release are 404 for Alice, exactly
    as an id that does not exist; nothing is recorded.
    """
    bobs = quarantined(quarantine, "bob", "b.exe", b"MZ", plugin="scan")
    browser = client(quarantine)
    browser.signIn("alice", "alice-pw")
    missing = browser.get("/item/pdoesnotexist")
    assert missing.code == 404
    for path in (f"/item/{bobs}", f"/item/{bobs}/download", "/item/../records"):
        assert browser.get(path).code == 404, path
    token = browser.get("/").formToken()
    assert browser.post(f"/item/{bobs}/release", {"csrf": token}).code == 404
    assert DirectoryReleases(quarantine).status(bobs) is None


def test_virusItemNeedsARelease(quarantine: Path) -> None:
    """
    An item the scan filter removed is not downloadable (403); the user
    asks for it (one release request, by them), it shows as pending, and
    once an administrator approves it downloads.
    """
    identifier = quarantined(quarantine, "alice", "v.exe", b"X5O!", plugin="scan")
    browser = client(quarantine)
    browser.signIn("alice", "alice-pw")
    page = browser.get(f"/item/{identifier}")
    assert "Request release" in page.text and "Download" not in page.text
    assert browser.get(f"/item/{identifier}/download").code == 403
    asked = browser.post(f"/item/{identifier}/release", {"csrf": page.formToken()})
    assert (asked.code, asked.header("Location")) == (303, f"/item/{identifier}")
    releases = DirectoryReleases(quarantine)
    assert [(r.id, r.requestedBy) for r in releases.pending()] == [(identifier, "alice")]
    assert "waiting for an administrator" in browser.get(f"/item/{identifier}").text
    releases.approve(identifier, "admin")
    assert browser.get(f"/item/{identifier}/download").body == b"X5O!"


def test_hostileNamesAreEscaped(quarantine: Path) -> None:
    """
    A file name and subject written as HTML reach the page as text.
    """
    hostile = "<img src=x onerror=alert(1)>.exe"
    quarantined(quarantine, "alice", hostile, b"MZ", subject='"><script>alert(2)</script>')
    browser = client(quarantine)
    browser.signIn("alice", "alice-pw")
    page = browser.get("/").text
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.exe" in page
    assert "&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_searchAndPages(quarantine: Path) -> None:
    """
    Search narrows by file name, subject or sender; pages hold pageSize
    items and link to each other.
    """
    for number in range(5):
        quarantined(quarantine, "alice", f"f{number}.exe", b"MZ", uidl=f"u{number}")
    quarantined(quarantine, "alice", "report.exe", b"MZ", uidl="r", subject="Quarterly")
    browser = client(quarantine, pageSize=2)
    browser.signIn("alice", "alice-pw")
    first = browser.get("/")
    assert "6 items" in first.text and len(re.findall(r'class="item"', first.text)) == 2
    assert 'rel="next" href="/?page=2"' in first.text and 'rel="prev"' not in first.text
    last = browser.get("/?page=3")
    assert 'rel="prev" href="/?page=2"' in last.text and 'rel="next"' not in last.text
    found = browser.get("/?q=quarterly")
    assert "1 item matching" in found.text and "report.exe" in found.text
    # Digits outside ASCII ("²".isdigit() is true, int() refuses it) and
    # nonsense are page 1, not an error.
    for odd in ("%C2%B2", "-1", "x", "0"):
        answer = browser.get(f"/?page={odd}")
        assert answer.code == 200 and 'rel="prev"' not in answer.text, odd


def test_signOutEndsTheSession(quarantine: Path) -> None:
    """
    After sign-out the old session cookie opens nothing.
    """
    browser = client(quarantine)
    browser.signIn("alice", "alice-pw")
    old = dict(browser.cookies)
    token = browser.get("/").formToken()
    assert browser.post("/signout", {"csrf": token}).header("Location") == "/signin"
    browser.cookies = old
    assert browser.get("/").code == 303
