"""
Reading the configuration again while serving: L{Reloader} builds a new
L{Generation} from the file, compares its listeners with those open and
applies the difference (new listeners first, so a failure changes
nothing), and L{ReloadOnHangup} runs it when the process gets C{SIGHUP}.

Sessions read their settings once, when they are built, so sessions in
flight finish with the generation they started with; only new sessions
see the new one.  A listener whose description did not change keeps its
socket (its factory is replaced), so no client is dropped and none is
refused.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.logger import Logger

from popproxy._config import ConfigError
from popproxy._generation import Generation, ListenerPlan

log = Logger(namespace="popproxy")


class CannotListen(Exception):
    """
    A listener could not be opened; the text names it and says why.
    """


class ListenerSet(Protocol):
    """
    The listeners a process has open, by listen description.
    """

    def descriptions(self) -> Collection[str]:
        """
        The listen descriptions open now.
        """

    def open(self, description: str, plan: ListenerPlan) -> None:
        """
        Start listening for C{description}.

        @raise CannotListen: it cannot.
        """

    def replace(self, description: str, plan: ListenerPlan) -> None:
        """
        Build the next sessions of the open C{description} with C{plan}.
        """

    def close(self, description: str) -> None:
        """
        Stop listening for C{description}; its sessions go on.
        """


def _listed(descriptions: Collection[str]) -> str:
    return ", ".join(descriptions) or "none"


class Reloader:
    """
    Reads the configuration again and applies it, or keeps the running one.

    @param build: reads and checks the configuration and builds its
        generation (raises L{ConfigError} if the file is broken).
    @param listeners: the listeners this process has open.
    @param current: the generation running now.
    @param reloaded: told about each generation applied.
    """

    def __init__(
        self,
        build: Callable[[], Generation],
        listeners: ListenerSet,
        current: Generation,
        reloaded: Callable[[Generation], object] | None = None,
    ) -> None:
        self._build = build
        self._listeners = listeners
        self.current = current
        self._reloaded = reloaded

    def reload(self) -> bool:
        """
        Read the configuration again; apply it if it is sound.  Log one line
        either way; return whether the new generation runs now.
        """
        try:
            generation = self._build()
        except ConfigError as e:
            log.error("reload failed, the running configuration stays: {error}", error=str(e))
            return False
        except Exception:
            log.failure("reload failed, the running configuration stays")
            return False
        if not self._apply(generation):
            return False
        self._warnAboutRestartOnly(self.current, generation)
        self.current = generation
        if self._reloaded is not None:
            self._reloaded(generation)
        return True

    def _apply(self, generation: Generation) -> bool:
        """
        Open the new listeners (closing them again if one fails), then
        hand the unchanged ones the new factories and close the old ones.
        """
        running = list(self._listeners.descriptions())
        wanted = generation.listeners
        added = [description for description in wanted if description not in running]
        kept = [description for description in running if description in wanted]
        removed = [description for description in running if description not in wanted]
        opened: list[str] = []
        for description in added:
            try:
                self._listeners.open(description, wanted[description])
            except CannotListen as e:
                for undone in opened:
                    self._listeners.close(undone)
                log.error("reload failed, the running configuration stays: {error}", error=str(e))
                return False
            opened.append(description)
        for description in kept:
            self._listeners.replace(description, wanted[description])
        for description in removed:
            self._listeners.close(description)
        log.info(
            "reloaded {source}: new sessions use it; listeners added: {added}; "
            "removed: {removed}; unchanged: {kept}",
            source=generation.config.source,
            added=_listed(opened),
            removed=_listed(removed),
            kept=_listed(kept),
        )
        return True

    def _warnAboutRestartOnly(self, running: Generation, new: Generation) -> None:
        """
        Say which changed settings only a restart applies.
        """
        if new.config.workers != running.config.workers:
            log.warn(
                "reload: [proxy] workers changed from {old} to {new}; "
                "it takes effect at the next start",
                old=running.config.workers,
                new=new.config.workers,
            )
        if new.config.demo != running.config.demo:
            log.warn("reload: [demo] changed; it takes effect at the next start")


class ReloadOnHangup(Service):
    """
    Runs C{reload} in the reactor thread each time the process gets SIGHUP
    (C{kill -HUP}, C{systemctl reload}), while the service runs; once it
    stops, SIGHUP is ignored, so a late one neither reloads nor kills a
    process finishing its sessions.

    @param installHandler: L{signal.signal}, or a stand-in for tests.
    """

    def __init__(
        self,
        callFromThread: Callable[..., Any],
        reload: Callable[[], object],
        installHandler: Callable[[int, Any], Any] = signal.signal,
    ) -> None:
        self._callFromThread = callFromThread
        self._reload = reload
        self._installHandler = installHandler

    def startService(self) -> None:
        super().startService()
        self._installHandler(signal.SIGHUP, self._hangup)

    def stopService(self) -> Any:
        self._installHandler(signal.SIGHUP, signal.SIG_IGN)
        return super().stopService()

    def _hangup(self, number: int, frame: object) -> None:
        # A signal handler may run between any two bytecodes of the reactor
        # thread: the reload itself waits for the reactor's next turn.
        self._callFromThread(self._reload)
