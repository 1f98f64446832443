"""
Whether the proxy is serving or stopping: L{Lifecycle}, one per process,
shared by what must behave differently once a stop has begun (listeners stop
accepting, sessions finish the command in flight, the health check answers
503).  No I/O; the service tree marks the stop, observers are told once.
"""

from __future__ import annotations

from collections.abc import Callable


class Lifecycle:
    """
    The process's serving state.

    @ivar stopping: a stop has begun (it never ends: a stopping process
        exits).
    """

    def __init__(self) -> None:
        self.stopping = False
        self._observers: list[Callable[[], None]] = []

    def onStopping(self, observer: Callable[[], None]) -> None:
        """
        Call C{observer} once when the stop begins (at once if it has).
        """
        if self.stopping:
            observer()
        else:
            self._observers.append(observer)

    def beginStopping(self) -> None:
        """
        Mark the stop as begun and tell the observers, once.
        """
        if self.stopping:
            return
        self.stopping = True
        observers, self._observers = self._observers, []
        for observer in observers:
            observer()
