"""
Tests for popproxy.console._current and the console's part of a reload
(L{popproxy.console._service.ConsoleReload}), through the console's real
twisted.web site (HTTP/1.0 over an in-memory transport): administrators
removed or given a new password are signed out at their next request,
everyone else stays signed in, added ones sign in; C{user_download} and
C{session_timeout} apply from the swap on; what only a restart applies is
said in one warning each, and the settings it could apply are applied.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from popproxy._chain import runHere
from popproxy._config import Config, parseConfig
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._current import ConsoleSettings
from popproxy.console._pages import Console
from popproxy.console._service import ConsoleReload, consoleSettingsFrom
from tests.consoleharness import (
    ConsoleClient,
    ScriptedUpstream,
    adminHashes,
    makeAdmin,
    makeConsole,
    makeSettings,
    quarantined,
)

ACCOUNTS = {"alice": "alice-pw"}
ROOT, OPS = adminHashes({"root": "root-password", "ops": "ops-password"})


class Setup:
    """
    A console with two administrators, root and ops, over a quarantine.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clock = Clock()
        self.upstream = ScriptedUpstream(dict(ACCOUNTS))
        self.console: Console = makeConsole(
            directory, self.upstream, self.clock, admins=(ROOT, OPS)
        )
        self.admin = makeAdmin(self.clock)

    def browser(self) -> ConsoleClient:
        return ConsoleClient(self.console, admin=self.admin)

    def settings(
        self,
        *admins: tuple[str, str],
        userDownload: tuple[str, ...] = ("strip",),
        sessionTimeout: float = 1800.0,
    ) -> ConsoleSettings:
        """
        New settings with C{admins} (hash lines) and the other values given.
        """
        return makeSettings(self.upstream, self.clock, None, userDownload, admins, sessionTimeout)


def signedIn(browser: ConsoleClient, path: str = "/admin") -> bool:
    """
    Whether C{browser}'s next request to C{path} is answered as signed in.
    """
    answer = browser.get(path)
    return answer.code == 200


def test_removedAdministratorIsSignedOutOthersStay(tmp_path: Path) -> None:
    """
    Ops removed from the file: ops's next request goes to the sign-in form
    and ops cannot sign in again; root (unchanged) and a user stay signed
    in.
    """
    setup = Setup(tmp_path / "q")
    root, ops, alice = setup.browser(), setup.browser(), setup.browser()
    assert root.adminSignIn().code == 303
    assert ops.adminSignIn("ops", "ops-password").code == 303
    assert alice.signIn("alice", "alice-pw").code == 303
    changes = setup.console.current.replace(setup.settings(ROOT))
    assert (changes.removed, changes.changed, changes.added, changes.ended) == (
        ("ops",),
        (),
        (),
        1,
    )
    assert ops.get("/admin").header("Location") == "/admin/signin"
    assert ops.adminSignIn("ops", "ops-password").code == 401
    assert signedIn(root)
    assert signedIn(alice, "/")


def test_changedPasswordSignsOutEverySessionOfThatAdministrator(tmp_path: Path) -> None:
    """
    Root's hash line replaced (a new password): both of root's sessions
    end; the old password is refused, the new one signs in; ops stays.
    """
    setup = Setup(tmp_path / "q")
    first, second, ops = setup.browser(), setup.browser(), setup.browser()
    first.adminSignIn()
    second.adminSignIn()
    ops.adminSignIn("ops", "ops-password")
    (newRoot,) = adminHashes({"root": "a new root password"})
    changes = setup.console.current.replace(setup.settings(newRoot, OPS))
    assert (changes.changed, changes.ended) == (("root",), 2)
    assert not signedIn(first) and not signedIn(second)
    assert signedIn(ops)
    assert first.adminSignIn().code == 401
    assert first.adminSignIn("root", "a new root password").code == 303
    assert signedIn(first)


def test_addedAdministratorSignsInAfterTheSwap(tmp_path: Path) -> None:
    """
    A new administrator's name is refused before the swap and signs in
    after it.
    """
    setup = Setup(tmp_path / "q")
    (new,) = adminHashes({"newcomer": "newcomer-password"})
    browser = setup.browser()
    assert browser.adminSignIn("newcomer", "newcomer-password").code == 401
    changes = setup.console.current.replace(setup.settings(ROOT, OPS, new))
    assert (changes.added, changes.ended) == (("newcomer",), 0)
    assert browser.adminSignIn("newcomer", "newcomer-password").code == 303
    assert signedIn(browser)


def test_userDownloadAppliesFromTheSwapOn(tmp_path: Path) -> None:
    """
    What the scan filter flagged needs a release until user_download
    names it; then the signed-in user downloads it at once, and the
    administrator's item page says users may.
    """
    setup = Setup(tmp_path / "q")
    identifier = quarantined(setup.directory, "alice", "v.exe", b"MZ flagged", plugin="scan")
    alice = setup.browser()
    alice.signIn("alice", "alice-pw")
    assert alice.get(f"/item/{identifier}/download").code == 403
    setup.console.current.replace(setup.settings(ROOT, OPS, userDownload=("strip", "scan")))
    download = alice.get(f"/item/{identifier}/download")
    assert (download.code, download.body) == (200, b"MZ flagged")
    setup.console.current.replace(setup.settings(ROOT, OPS, userDownload=()))
    assert alice.get(f"/item/{identifier}/download").code == 403


def test_sessionTimeoutAppliesFromTheSwapOn(tmp_path: Path) -> None:
    """
    A session idle for two minutes lives under the 30-minute timeout;
    once the timeout is one minute, the next idle two minutes end it.
    """
    setup = Setup(tmp_path / "q")
    alice = setup.browser()
    alice.signIn("alice", "alice-pw")
    setup.clock.advance(120)
    assert signedIn(alice, "/")
    setup.console.current.replace(setup.settings(ROOT, OPS, sessionTimeout=60.0))
    assert signedIn(alice, "/")
    setup.clock.advance(120)
    assert alice.get("/").header("Location") == "/signin"


def test_swapLogsOneLine(tmp_path: Path) -> None:
    """
    The swap logs one line naming the administrators added, removed and
    changed, the sessions it ended and the settings now in force.
    """
    setup = Setup(tmp_path / "q")
    setup.browser().adminSignIn("ops", "ops-password")
    (new,) = adminHashes({"newcomer": "newcomer-password"})
    with capturedLogs() as events:
        setup.console.current.replace(setup.settings(ROOT, new, sessionTimeout=600.0))
    assert [formatEvent(e) for e in events] == [
        "console reloaded: administrators added: newcomer; removed: ops; "
        "password changed: none; 1 administrator sessions ended; "
        "user_download: strip; session_timeout: 600.0"
    ]


BASE = """
[upstream]
default = "tcp:127.0.0.1:110"
[chain]
quarantine = "{quarantine}"
[console]
listen = "{listen}"
{extra}
"""


def configOf(
    directory: Path, *admins: tuple[str, str], listen: str = "tcp:8110", extra: str = ""
) -> Config:
    """
    A parsed configuration with a console on C{listen} and C{admins}.
    """
    lines = "\n".join(f'"{name}" = "{line}"' for name, line in admins)
    text = BASE.format(quarantine=directory, listen=listen, extra=extra)
    return parseConfig(text + f"[console.admins]\n{lines}\n" if admins else text)


def reloadOf(setup: Setup, started: Config) -> ConsoleReload:
    build = partial(consoleSettingsFrom, reactor=setup.clock, throttle=None, runInThread=runHere)
    return ConsoleReload(setup.console.current, build, started)


def test_reloadAppliesTheFilesConsoleSettings(tmp_path: Path) -> None:
    """
    A reload of a file without ops and with user_download = ["scan"]:
    ops is signed out, root stays, the scan filter's item downloads;
    nothing is warned about.
    """
    setup = Setup(tmp_path / "q")
    reload = reloadOf(setup, configOf(setup.directory, ROOT, OPS))
    identifier = quarantined(setup.directory, "alice", "v.exe", b"MZ", plugin="scan")
    root, ops, alice = setup.browser(), setup.browser(), setup.browser()
    root.adminSignIn()
    ops.adminSignIn("ops", "ops-password")
    alice.signIn("alice", "alice-pw")
    with capturedLogs() as events:
        reload.reloaded(configOf(setup.directory, ROOT, extra='user_download = ["scan"]'))
    assert [e["log_level"].name for e in events] == ["info"]
    assert signedIn(root) and not signedIn(ops)
    assert alice.get(f"/item/{identifier}/download").code == 200


def test_restartOnlyChangesAreWarnedAboutOthersApply(tmp_path: Path) -> None:
    """
    Another listen and another quarantine: one warning each naming what
    stays until the next start, and the admins' change still applies.
    """
    setup = Setup(tmp_path / "q")
    reload = reloadOf(setup, configOf(setup.directory, ROOT, OPS))
    ops = setup.browser()
    ops.adminSignIn("ops", "ops-password")
    with capturedLogs() as events:
        reload.reloaded(configOf(tmp_path / "elsewhere", ROOT, listen="tcp:8111"))
    warnings = [formatEvent(e) for e in events if e["log_level"].name == "warn"]
    assert warnings == [
        "reload: [console] listen changed to tcp:8111; the console listens on tcp:8110 "
        "until the next start (its other settings apply now)",
        "reload: [chain] quarantine changed; the console shows the quarantine it "
        "started with until the next start",
    ]
    assert not signedIn(ops)


def test_consoleRemovedSignsOutEveryAdministrator(tmp_path: Path) -> None:
    """
    A file without [console]: one warning; the console serves users on
    with the settings it had, but every administrator is signed out at
    once and none can sign in (deleting [console] to shut an administrator
    out must not wait for a restart).
    """
    setup = Setup(tmp_path / "q")
    reload = reloadOf(setup, configOf(setup.directory, ROOT, OPS))
    ops = setup.browser()
    ops.adminSignIn("ops", "ops-password")
    without = parseConfig('[upstream]\ndefault = "tcp:127.0.0.1:110"\n')
    with capturedLogs() as events:
        reload.reloaded(without)
    assert [formatEvent(e) for e in events][0] == (
        "reload: [console] removed; the console on tcp:8110 keeps serving users "
        "with the settings it had until the next start, without administrators"
    )
    assert not signedIn(ops)
    assert ops.adminSignIn("ops", "ops-password").code == 401


def test_settingsThatFailToBuildStillSignOutRemovedAdministrators(tmp_path: Path) -> None:
    """
    When the new file's console settings cannot be built, the console
    keeps the ones it had, except for the administrators the new file
    removes: ops is signed out and refused, root stays.
    """
    setup = Setup(tmp_path / "q")

    def broken(config: Config) -> ConsoleSettings:
        raise RuntimeError("cannot build")

    reload = ConsoleReload(setup.console.current, broken, configOf(setup.directory, ROOT, OPS))
    root, ops = setup.browser(), setup.browser()
    root.adminSignIn()
    ops.adminSignIn("ops", "ops-password")
    with capturedLogs():
        reload.reloaded(configOf(setup.directory, ROOT))
    assert signedIn(root)
    assert not signedIn(ops)
    assert ops.adminSignIn("ops", "ops-password").code == 401


def test_signInCheckedDuringTheSwapDoesNotCount(tmp_path: Path) -> None:
    """
    Ops signs in with the right password, and the reload that removes ops
    lands while the hash is being computed: the sign-in is refused (401)
    and opens no session.
    """
    setup = Setup(tmp_path / "q")
    swapped = setup.settings(ROOT)

    def swapWhileHashing(work: Callable[[], Any]) -> Deferred[Any]:
        setup.console.current.replace(swapped)
        return succeed(work())

    paused = ConsoleSettings(
        signIn=setup.console.signIn,
        adminSignIn=AdminSignInCheck((ROOT, OPS), setup.clock, None, swapWhileHashing, 0.0),
        access=setup.console.access,
        sessionTimeout=1800.0,
        admins=dict((ROOT, OPS)),
    )
    setup.console.current.replace(paused)
    ops = setup.browser()
    assert ops.adminSignIn("ops", "ops-password").code == 401
    assert len(setup.console.sessions) == 0
    assert ops.get("/admin").header("Location") == "/admin/signin"
