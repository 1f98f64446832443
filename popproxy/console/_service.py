"""
The console built from a configuration: its quarantine view and release
store over the C{[chain] quarantine} (L{_stores}), its sign-in check over the
proxy's router, upstream connector and login throttle, and the site the
C{[console] listen} listener serves, with the administrators' pages (the
composition root,
L{popproxy._assembly}, puts that listener in the main process's service
tree; workers serve POP3 only); and what a reload changes in it
(L{ConsoleReload}).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred

from popproxy._config import Config
from popproxy._loginthrottle import LoginThrottle
from popproxy._printable import PrintableLogger
from popproxy._routing import Router
from popproxy._upstream import UpstreamConnector
from popproxy._xclient import XclientConnector
from popproxy.console._access import ItemAccess
from popproxy.console._adminpages import AdminPages
from popproxy.console._adminpanels import AdminConsole
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._csrf import SignInTokens
from popproxy.console._current import ConsoleSettings, CurrentSettings
from popproxy.console._pages import Console, ConsoleSite
from popproxy.console._sessions import SessionStore
from popproxy.console._signin import SignInCheck
from popproxy.console._stores import consoleStores
from popproxy.console._templates import Templates

log = PrintableLogger(namespace="popproxy.console")


def consoleSettingsFrom(
    config: Config,
    reactor: Any,
    throttle: LoginThrottle | None,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
) -> ConsoleSettings:
    """
    The settings C{config} (which has C{[console]}) gives the console: the
    mail sign-in over its routes and timeouts, the administrators' over
    its C{[console] admins}, both counted by C{throttle} as every login
    is, and its C{user_download} and C{session_timeout}.

    @param throttle: the POP3 logins' throttle (its counters), or C{None}
        when throttling is off.
    """
    settings = config.console
    assert settings is not None
    connector = UpstreamConnector(reactor, config.connectTimeout, config.responseTimeout)
    signIn = SignInCheck(
        Router(config.routing),
        XclientConnector(connector.connect).connect,
        reactor,
        throttle,
        config.loginFailureDelay,
    )
    adminSignIn = AdminSignInCheck(
        settings.admins, reactor, throttle, runInThread, config.loginFailureDelay
    )
    return ConsoleSettings(
        signIn=signIn,
        adminSignIn=adminSignIn,
        access=ItemAccess(settings.userDownload),
        sessionTimeout=settings.sessionTimeout,
        admins=MappingProxyType(dict(settings.admins)),
    )


def consoleFrom(
    config: Config,
    reactor: Any,
    settings: ConsoleSettings,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
) -> Console:
    """
    The console of C{config} (which has C{[console]} and a quarantine),
    with C{settings} (L{consoleSettingsFrom}) in force.
    """
    assert config.chain.quarantine is not None
    stores = consoleStores(config.chain.quarantine, runInThread, reactor)
    sessions = SessionStore(reactor, settings.sessionTimeout)
    return Console(
        sessions=sessions,
        signInTokens=SignInTokens(),
        current=CurrentSettings(settings, sessions),
        view=stores.view,
        releases=stores.releases,
        templates=Templates(),
        runInThread=runInThread,
    )


class ConsoleReload:
    """
    What a reload (SIGHUP) does to the console this process started: the
    new file's C{[console]} settings go in force
    (L{CurrentSettings.replace}: administrators, C{user_download},
    C{session_timeout}, and the routes the mail sign-in checks).  What only
    a restart applies (another C{listen}, C{[console]} removed, another
    C{[chain] quarantine}) it says in one warning each, and the console
    goes on as it was for that part; but an administrator the new file
    does not keep (C{[console]} removed too) is signed out at once.

    @param build: the settings of a checked configuration
        (L{consoleSettingsFrom} with the process's throttle counters).
    @param started: the configuration the console was started with.
    """

    def __init__(
        self,
        current: CurrentSettings,
        build: Callable[[Config], ConsoleSettings],
        started: Config,
    ) -> None:
        assert started.console is not None
        self._current = current
        self._build = build
        self._listen = started.console.listen
        self._quarantine = started.chain.quarantine

    def reloaded(self, config: Config) -> None:
        """
        Apply the console's part of C{config}, the configuration a reload
        has just put in force.
        """
        if config.console is None:
            log.warn(
                "reload: [console] removed; the console on {listen} keeps serving users "
                "with the settings it had until the next start, without administrators",
                listen=self._listen,
            )
            self._current.keepOnly({})
            return
        if config.console.listen != self._listen:
            log.warn(
                "reload: [console] listen changed to {new}; the console listens on {old} "
                "until the next start (its other settings apply now)",
                new=config.console.listen,
                old=self._listen,
            )
        if config.chain.quarantine != self._quarantine:
            log.warn(
                "reload: [chain] quarantine changed; the console shows the quarantine it "
                "started with until the next start"
            )
        try:
            settings = self._build(config)
        except Exception:
            log.failure("reload: the console keeps the settings it had")
            # Except for administrators the new file removes or re-keys.
            self._current.keepOnly(dict(config.console.admins))
            return
        self._current.replace(settings)


def consoleSite(console: Console, admin: AdminConsole | None = None) -> ConsoleSite:
    """
    The twisted.web site serving C{console}, with the administrators'
    pages under C{/admin} when C{admin} is given.
    """
    more = {b"admin": AdminPages(console, admin)} if admin is not None else {}
    return ConsoleSite(console, more)
