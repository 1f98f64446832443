"""
The console built from a configuration: its quarantine view and release
store over the C{[chain] quarantine} (L{_stores}), its sign-in check over the
proxy's router, upstream connector and login throttle, and the site the
C{[console] listen} listener serves (the composition root,
L{popproxy._assembly}, puts that listener in the main process's service
tree; workers serve POP3 only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from popproxy._config import Config
from popproxy._loginthrottle import LoginThrottle
from popproxy._routing import Router
from popproxy._upstream import UpstreamConnector
from popproxy._xclient import XclientConnector
from popproxy.console._access import ItemAccess
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


def consoleSite(console: Console) -> ConsoleSite:
    """
    The twisted.web site serving C{console}.
    """
    return ConsoleSite(console)
