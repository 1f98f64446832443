"""
Tests for popproxy._reload: what a reload changes (listeners added,
removed and unchanged; the running generation), what it leaves alone
(a broken file, a listener that cannot open), the lines it logs, and
SIGHUP handled in the reactor thread.  No sockets: the listener set and
the generations are stand-ins.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import capturedLogs, formatEvent

from popproxy._config import Config, ConfigError
from popproxy._generation import Generation, ListenerPlan
from popproxy._reload import CannotListen, Reloader, ReloadOnHangup


def generation(*descriptions: str, workers: int = 1, tag: str = "") -> Generation:
    """
    A generation listening on C{descriptions}; each plan's factory names
    its description and C{tag}, to tell generations apart.
    """
    config = Config(source="proxy.conf", listen=descriptions, workers=workers)
    plans = {d: ListenerPlan(d, f"{tag}{d}") for d in descriptions}
    return Generation(config, None, plans)


class RecordingListeners:
    """
    A listener set that records what the reload does to it; descriptions
    in C{refuse} cannot be opened.
    """

    def __init__(self, *open: str, refuse: tuple[str, ...] = ()) -> None:
        self.factories: dict[str, object] = {d: f"old{d}" for d in open}
        self.refuse = refuse
        self.actions: list[tuple[str, str]] = []

    def descriptions(self) -> list[str]:
        return list(self.factories)

    def open(self, description: str, plan: ListenerPlan) -> None:
        self.actions.append(("open", description))
        if description in self.refuse:
            raise CannotListen(f"cannot listen on {description}: in use")
        self.factories[description] = plan.factory

    def replace(self, description: str, plan: ListenerPlan) -> None:
        self.actions.append(("replace", description))
        self.factories[description] = plan.factory

    def close(self, description: str) -> None:
        self.actions.append(("close", description))
        del self.factories[description]


def reloadLogged(reloader: Reloader) -> tuple[bool, list[str]]:
    with capturedLogs() as events:
        applied = reloader.reload()
    return applied, [formatEvent(event) for event in events]


def test_listenersAddedRemovedUnchanged() -> None:
    """
    A reload opens the listeners the file adds, gives the unchanged ones
    the new factories (their sockets stay), closes the ones it removes,
    runs the new generation and logs one line saying so.
    """
    listeners = RecordingListeners("tcp:110", "tcp:111")
    new = generation("tcp:110", "tcp:112", tag="new")
    told: list[Generation] = []
    reloader = Reloader(lambda: new, listeners, generation("tcp:110", "tcp:111"), told.append)
    applied, lines = reloadLogged(reloader)
    assert applied
    assert listeners.actions == [("open", "tcp:112"), ("replace", "tcp:110"), ("close", "tcp:111")]
    assert listeners.factories == {"tcp:110": "newtcp:110", "tcp:112": "newtcp:112"}
    assert reloader.current is new and told == [new]
    assert lines == [
        "reloaded proxy.conf: new sessions use it; listeners added: tcp:112; "
        "removed: tcp:111; unchanged: tcp:110"
    ]


def test_brokenFileChangesNothing() -> None:
    """
    A file that does not read logs one error line with its problem and
    leaves the listeners and the running generation alone.
    """

    def broken() -> Generation:
        raise ConfigError("proxy.conf: [proxy] lisen: unknown key")

    listeners = RecordingListeners("tcp:110")
    running = generation("tcp:110")
    reloader = Reloader(broken, listeners, running)
    applied, lines = reloadLogged(reloader)
    assert not applied
    assert listeners.actions == []
    assert reloader.current is running
    assert lines == [
        "reload failed, the running configuration stays: proxy.conf: [proxy] lisen: unknown key"
    ]


def test_listenerThatCannotOpenChangesNothing() -> None:
    """
    When one new listener cannot open, those opened before it are closed
    again, no unchanged listener gets the new factories and the running
    generation stays; one error line names the listener.
    """
    listeners = RecordingListeners("tcp:110", refuse=("tcp:113",))
    running = generation("tcp:110")
    new = generation("tcp:110", "tcp:112", "tcp:113", tag="new")
    reloader = Reloader(lambda: new, listeners, running)
    applied, lines = reloadLogged(reloader)
    assert not applied
    assert listeners.actions == [("open", "tcp:112"), ("open", "tcp:113"), ("close", "tcp:112")]
    assert listeners.factories == {"tcp:110": "oldtcp:110"}
    assert reloader.current is running
    assert lines == [
        "reload failed, the running configuration stays: cannot listen on tcp:113: in use"
    ]


def test_unexpectedErrorKeepsRunning() -> None:
    """
    An error no check foresaw (a plugin's bug) is logged with its
    traceback; the running generation stays.
    """

    def buggy() -> Generation:
        raise ZeroDivisionError("plugin bug")

    running = generation("tcp:110")
    reloader = Reloader(buggy, RecordingListeners("tcp:110"), running)
    with capturedLogs() as events:
        assert not reloader.reload()
    assert [formatEvent(event) for event in events] == [
        "reload failed, the running configuration stays"
    ]
    assert events[0]["log_failure"].check(ZeroDivisionError)
    assert reloader.current is running


def test_restartOnlySettingsNamed() -> None:
    """
    A changed number of workers is applied at the next start only, and
    the reload says so.
    """
    new = generation("tcp:110", workers=3)
    reloader = Reloader(lambda: new, RecordingListeners("tcp:110"), generation("tcp:110"))
    applied, lines = reloadLogged(reloader)
    assert applied
    assert lines[1] == (
        "reload: [proxy] workers changed from 1 to 3; it takes effect at the next start"
    )


def test_hangupReloadsInTheReactorThread() -> None:
    """
    While the service runs, SIGHUP hands the reload to the reactor thread
    (the handler itself reloads nothing); once it stops, SIGHUP is ignored
    rather than left to kill the process.
    """
    handlers: dict[int, Any] = {}
    queued: list[Callable[[], object]] = []
    reloads: list[str] = []

    def install(number: int, handler: Any) -> None:
        handlers[number] = handler

    service = ReloadOnHangup(queued.append, lambda: reloads.append("reload"), install)
    service.startService()
    handlers[signal.SIGHUP](signal.SIGHUP, None)
    assert reloads == [] and len(queued) == 1
    queued[0]()
    assert reloads == ["reload"]
    service.stopService()
    assert handlers[signal.SIGHUP] == signal.SIG_IGN
