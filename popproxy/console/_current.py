"""
The console's settings in force: L{ConsoleSettings}, the frozen value one
reading of the configuration gives the console (its sign-in checks, who
may download what, how long a session lasts unused), and
L{CurrentSettings}, which holds the one in force for the pages to read
through and which a reload (SIGHUP) replaces.

Replacing them ends, at once, every signed-in session of an administrator
the new settings removed or whose hash line changed (a leaver's or a
stolen password's session must not outlive the file that revoked it);
every other session, users' and administrators', stays signed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from popproxy._printable import PrintableLogger
from popproxy.console._access import ItemAccess
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._sessions import SessionStore
from popproxy.console._signin import SignInCheck

log = PrintableLogger(namespace="popproxy.console")


@dataclass(frozen=True)
class ConsoleSettings:
    """
    What one reading of C{[console]} (with the routes, timeouts and login
    throttle of the same file) gives the console.

    @ivar signIn: checks a mail login upstream.
    @ivar adminSignIn: checks an administrator's name and password.
    @ivar access: who may download what.
    @ivar sessionTimeout: seconds a signed-in session lasts unused.
    @ivar admins: each administrator's name with their hash line, as
        configured (a changed line is a changed password).
    """

    signIn: SignInCheck
    adminSignIn: AdminSignInCheck
    access: ItemAccess
    sessionTimeout: float
    admins: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AdminChanges:
    """
    How a reload changed the administrators, by name (each sorted).

    @ivar ended: how many signed-in administrator sessions it ended.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    ended: int = 0


def adminChanges(running: Mapping[str, str], new: Mapping[str, str]) -> AdminChanges:
    """
    The administrators C{new} adds, removes, or gives another hash line
    than C{running} does.
    """
    return AdminChanges(
        added=tuple(sorted(set(new) - set(running))),
        removed=tuple(sorted(set(running) - set(new))),
        changed=tuple(sorted(n for n in set(running) & set(new) if running[n] != new[n])),
    )


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names) or "none"


class CurrentSettings:
    """
    The console's settings in force, over the process's sign-in sessions.
    """

    def __init__(self, settings: ConsoleSettings, sessions: SessionStore) -> None:
        self._settings = settings
        self._sessions = sessions
        sessions.setTimeout(settings.sessionTimeout)

    @property
    def settings(self) -> ConsoleSettings:
        """
        The settings in force now.
        """
        return self._settings

    def replace(self, settings: ConsoleSettings) -> AdminChanges:
        """
        Put C{settings} in force: the next sign-in is checked against them,
        the next request measured against their timeout; the sessions of
        administrators they remove or give a new password end now.  Logs
        one line saying what changed.
        """
        changes = adminChanges(self._settings.admins, settings.admins)
        self._settings = settings
        self._sessions.setTimeout(settings.sessionTimeout)
        ended = self._sessions.endAdministrators(changes.removed + changes.changed)
        log.info(
            "console reloaded: administrators added: {added}; removed: {removed}; "
            "password changed: {changed}; {ended} administrator sessions ended; "
            "user_download: {download}; session_timeout: {timeout}",
            added=_listed(changes.added),
            removed=_listed(changes.removed),
            changed=_listed(changes.changed),
            ended=ended,
            download=_listed(tuple(sorted(settings.access.userDownload))),
            timeout=settings.sessionTimeout,
        )
        return AdminChanges(changes.added, changes.removed, changes.changed, ended)

    def keepOnly(self, admins: Mapping[str, str]) -> AdminChanges:
        """
        Keep the settings in force, but only for the administrators that
        C{admins} names with the same hash line: the others' sessions end
        now and they can no longer sign in.  For a reload whose console
        settings cannot be put in force (C{[console]} removed, or they
        failed to build): a removal is never what waits for a restart.
        """
        running = self._settings
        kept = {name: line for name, line in running.admins.items() if admins.get(name) == line}
        return self.replace(
            replace(
                running,
                adminSignIn=running.adminSignIn.restrictedTo(kept),
                admins=MappingProxyType(kept),
            )
        )
