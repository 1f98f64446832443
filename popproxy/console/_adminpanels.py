"""
What the administrators' overview shows, panel by panel, as the values
its templates draw: the release queue (with each item), each filter's
verdicts and latency over the last hour and day (L{_charts}), the health
of the scanners and of the quarantine store (what C{/healthz} answers,
L{popproxy._health}), and the recent limit blocks.  The overview page and
the small JSON answers its script polls (L{_adminpages}) are made from
the same values and the same templates.

L{ConsoleActivity} is what the main process keeps for the charts and the
blocks; L{AdminConsole} is everything the administrators' pages read
beyond the user's console.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from popproxy._activity import ActivityWatch
from popproxy._filteractivity import FilterActivity
from popproxy._health import Health
from popproxy._opensessions import OpenSessions
from popproxy._recentblocks import RecentBlocks
from popproxy.console._charts import latencyChart, verdictChart
from popproxy.console._pages import Console

#: The overview's panels, in page order.
PANELS = ("queue", "sessions", "filters", "health", "blocks")
#: The most open sessions the overview lists.
SESSIONS_SHOWN = 200
#: The most queued requests the overview lists.
QUEUE_SHOWN = 50
#: The charts' spans: (name, seconds, step in seconds).
SPANS = (("Last hour", 3600.0, 60.0), ("Last day", 86400.0, 900.0))


@dataclass(frozen=True)
class ConsoleActivity:
    """
    The main process's record of every process's filter verdicts and
    login blocks (fed through an L{ActivityWatch}).
    """

    filters: FilterActivity
    blocks: RecentBlocks

    @classmethod
    def starting(cls, clock: IReactorTime) -> ConsoleActivity:
        return cls(FilterActivity(clock.seconds), RecentBlocks())

    def watch(self) -> ActivityWatch:
        return ActivityWatch(self.filters.record, self.blocks.add)


@dataclass(frozen=True)
class AdminConsole:
    """
    What the administrators' pages read beyond the user's console.

    @ivar health: the process's health (C{None}: not shown).
    @ivar activity: the filters' and the throttle's activity (C{None}:
        not shown).
    @ivar openSessions: the POP3 sessions of every process (C{None}: not
        shown).
    @ivar refreshSeconds: how often the overview's panels refresh.
    """

    clock: IReactorTime
    health: Health | None = None
    activity: ConsoleActivity | None = None
    openSessions: OpenSessions | None = None
    refreshSeconds: int = 10


async def panelValues(name: str, console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    The values panel C{name} (one of L{PANELS}) is drawn with.
    """
    makers: dict[str, Callable[[Console, AdminConsole], Any]] = {
        "queue": queueValues,
        "sessions": sessionValues,
        "filters": filterValues,
        "health": healthValues,
        "blocks": blockValues,
    }
    values: dict[str, Any] = await makers[name](console, admin)
    values["now"] = admin.clock.seconds()
    return values


async def queueValues(console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    The release requests waiting, oldest first, each with its item
    (C{None}: the item was purged meanwhile).
    """
    pending = await console.runInThread(console.releases.pending)
    queue = [(release, await console.view.item(release.id)) for release in pending[:QUEUE_SHOWN]]
    return {"queue": queue, "queueTotal": len(pending)}


async def sessionValues(console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    The POP3 sessions open now in every process, oldest first (at most
    L{SESSIONS_SHOWN}), and the processes that did not answer.
    """
    if admin.openSessions is None:
        return {"sessions": None}
    now = await admin.openSessions.now()
    return {
        "sessions": now.sessions[:SESSIONS_SHOWN],
        "sessionsTotal": len(now.sessions),
        "unanswered": now.unanswered,
    }


async def filterValues(console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    Per filter (those of the chain, then any other seen), its charts over
    each of L{SPANS}.
    """
    names = [entry.name for entry in admin.health.chainEntries()] if admin.health else []
    activity = admin.activity
    if activity is not None:
        names += [name for name in activity.filters.names() if name not in names]
    filters = []
    for name in names:
        spans = []
        for label, span, step in SPANS if activity is not None else ():
            series = activity.filters.series(name, span, step)  # type: ignore[union-attr]
            spans.append((label, series.overall, verdictChart(series), latencyChart(series)))
        filters.append((name, spans))
    return {"filters": filters, "recorded": activity is not None}


def storeFacts(address: str) -> dict[str, Any]:
    """
    A directory store's free space (blocking: asks the file system).
    """
    try:
        usage = shutil.disk_usage(Path(address))
    except OSError as e:
        return {"disk": f"cannot be read: {e.strerror}"}
    return {"free": usage.free, "capacity": usage.total}


async def healthValues(console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    What C{/healthz} would answer now, with the quarantine's item count
    (and free space, for a directory).
    """
    report: dict[str, Any] = {}
    if admin.health is not None:
        report = admin.health.report().document
    store = dict(report.get("quarantine") or {})
    if store.get("store") == "directory":
        store.update(await console.runInThread(lambda: storeFacts(store["address"])))
    users = await console.view.users()
    store["items"] = sum(count for _, count in users)
    store["users"] = len(users)
    return {"report": report, "store": store}


async def blockValues(console: Console, admin: AdminConsole) -> dict[str, Any]:
    """
    The login throttle's recent blocks, newest first.
    """
    blocks: Sequence[Any] = admin.activity.blocks.recent() if admin.activity else ()
    return {"blocks": blocks, "recorded": admin.activity is not None}
