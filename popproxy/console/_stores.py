"""
What the console reads and writes for a C{[chain] quarantine} address:
its view of the items (L{IQuarantineView}) and its release requests
(L{IReleaseRequests}), over a directory or over the PostgreSQL database
that several instances share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore

from popproxy._quarantine import DirectoryQuarantine
from popproxy._quarantineaddress import QuarantineAddress
from popproxy._releases import DirectoryReleases, IReleaseRequests
from popproxy.console._view import DirectoryView, IQuarantineView

__all__ = ["CONSOLE_CONNECTIONS", "ConsoleStores", "consoleStores"]

#: Connections the console keeps open to a PostgreSQL quarantine between
#: requests (more are opened while more requests run at once, up to the
#: reactor's thread pool).
CONSOLE_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class ConsoleStores:
    view: IQuarantineView
    releases: IReleaseRequests


def consoleStores(
    address: QuarantineAddress,
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    reactor: Any,
) -> ConsoleStores:
    """
    The view and release store of the quarantine at C{address}; a
    database's connections are closed when the reactor shuts down.
    """
    if isinstance(address, Path):
        view = DirectoryView(DirectoryQuarantine(address, runInThread), runInThread)
        return ConsoleStores(view, DirectoryReleases(address))
    from popproxy._pgreleases import PostgresReleases
    from popproxy._pgstore import PostgresStore
    from popproxy.console._pgview import PostgresView

    store = PostgresStore(address, CONSOLE_CONNECTIONS)
    if IReactorCore.providedBy(reactor):
        reactor.addSystemEventTrigger("after", "shutdown", store.close)
    return ConsoleStores(PostgresView(store, runInThread), PostgresReleases(store.pool))
