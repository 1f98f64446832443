"""
The console built from a configuration: its quarantine view and release
store over the C{[chain] quarantine} (L{_stores}), its sign-in check over the
proxy's router, upstream connector and login throttle, and the site the
C{[console] listen} listener serves, with the administrators' pages (the
composition root,
L{popproxy._assembly}, puts that listener in the main process's service
tree; workers serve POP3 only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from popproxy._config import Config
from popproxy._health import Health
from popproxy._loginthrottle import LoginThrottle
from popproxy._opensessions import OpenSessions
from popproxy._routing import Router
from popproxy._upstream import UpstreamConnector
from popproxy._xclient import XclientConnector
from popproxy.console._access import ItemAccess
from popproxy.console._adminpages import AdminPages
from popproxy.console._adminpanels import AdminConsole, ConsoleActivity
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._csrf import SignInTokens
from popproxy.console._pages import Console, ConsoleSite
from popproxy.console._sessions import SessionStore
from popproxy.console._signin import SignInCheck
from popproxy.console._stores import consoleStores
from popproxy.console._templates import Templates


def consoleFrom(
    config: Config,
    reactor: Any,
    throttle: LoginThrottle | None,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
) -> Console:
    """
    The console of C{config} (which has C{[console]} and a quarantine).

    @param throttle: the POP3 logins' throttle (its counters), or C{None}
        when throttling is off.
    """
    settings = config.console
    assert settings is not None and config.chain.quarantine is not None
    stores = consoleStores(config.chain.quarantine, runInThread, reactor)
    connector = UpstreamConnector(reactor, config.connectTimeout, config.responseTimeout)
    signIn = SignInCheck(
        Router(config.routing),
        XclientConnector(connector.connect).connect,
        reactor,
        throttle,
        config.loginFailureDelay,
    )
    return Console(
        sessions=SessionStore(reactor, settings.sessionTimeout),
        signInTokens=SignInTokens(),
        signIn=signIn,
        view=stores.view,
        releases=stores.releases,
        access=ItemAccess(settings.userDownload),
        templates=Templates(),
        runInThread=runInThread,
    )


def adminFrom(
    config: Config,
    reactor: Any,
    throttle: LoginThrottle | None,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    health: Health | None = None,
    activity: ConsoleActivity | None = None,
    sessions: OpenSessions | None = None,
) -> AdminConsole:
    """
    What the administrators' pages of C{config}'s console read: its
    C{[console] admins} (checked through the same C{throttle} as every
    login), the process's C{health}, the C{activity} the main process
    records and the POP3 C{sessions} of every process.
    """
    settings = config.console
    assert settings is not None
    signIn = AdminSignInCheck(
        settings.admins, reactor, throttle, runInThread, config.loginFailureDelay
    )
    return AdminConsole(signIn, reactor, health, activity, sessions)


def consoleSite(console: Console, admin: AdminConsole | None = None) -> ConsoleSite:
    """
    The twisted.web site serving C{console}, with the administrators'
    pages under C{/admin} when C{admin} is given.
    """
    more = {b"admin": AdminPages(console, admin)} if admin is not None else {}
    return ConsoleSite(console, more)
