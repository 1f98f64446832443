"""
Whether a filter's daemon (clamd, spamd) can be reached, kept from every
real attempt: L{ScannerReachability} holds the filter's L{ScannerStatus},
logs each change of it once, and lets through at most one per-message
warning per interval, counting the ones it holds back.

A scanning filter owns one and reports each attempt to it (L{reached},
L{missed}); its C{scannerStatus} hands out L{status}.  Used on the reactor
thread only; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from popproxy._printable import PrintableLogger
from popproxy._scannerstatus import ScannerStatus

#: Seconds between two per-message warnings about one daemon.
WARN_EVERY = 60.0


class ScannerReachability:
    """
    The last known reachability of one daemon and the logging that goes
    with it.

    @param daemon: what it is, e.g. C{"clamd"} (a fixed word).
    @param address: where the filter reaches it (an endpoint string).
    @param clock: the filter's clock (the reactor it was given).
    @param warnEvery: seconds between two warnings let through by L{warn}.
    @param log: where changes of state are logged; by default the
        namespace C{popproxy.scanner.<daemon>}.
    """

    def __init__(
        self,
        daemon: str,
        address: str,
        clock: IReactorTime,
        warnEvery: float = WARN_EVERY,
        log: Logger | None = None,
    ) -> None:
        self._status = ScannerStatus(daemon, address)
        self._clock = clock
        self._warnEvery = warnEvery
        self._log = log or PrintableLogger(namespace=f"popproxy.scanner.{daemon}")
        self._lastWarning: float | None = None
        self._suppressed = 0

    @property
    def status(self) -> ScannerStatus:
        """
        The daemon's last known state (what C{scannerStatus} returns).
        """
        return self._status

    def reached(self) -> None:
        """
        An attempt got an answer from the daemon (even an error answer: it
        is there).  Logged when that is news.
        """
        before = self._status.reachable
        if before is True:
            return
        self._status = replace(self._status, reachable=True, since=self._clock.seconds(), detail="")
        fields = {"daemon": self._status.daemon, "address": self._status.address}
        if before is None:
            self._log.info("{daemon} at {address} is reachable", **fields)
            return
        suppressed, self._suppressed = self._suppressed, 0
        format = "{daemon} at {address} is reachable again"
        if suppressed:
            format += " ({suppressed} warnings about it were not logged meanwhile)"
        self._log.info(format, suppressed=suppressed, **fields)

    def missed(self, detail: str) -> None:
        """
        An attempt could not reach the daemon, or got no answer in time,
        for the reason C{detail} (a few words).  Logged when that is news.
        """
        before = self._status.reachable
        if before is False:
            self._status = replace(self._status, detail=detail)
            return
        self._status = replace(
            self._status, reachable=False, since=self._clock.seconds(), detail=detail
        )
        fields = {"daemon": self._status.daemon, "address": self._status.address}
        if before is None:
            self._log.warn(
                "{daemon} at {address} cannot be reached: {detail}", detail=detail, **fields
            )
        else:
            self._log.warn(
                "{daemon} at {address} is no longer reachable: {detail}", detail=detail, **fields
            )

    def warn(self, log: Any, format: str, **fields: Any) -> bool:
        """
        Log a per-message warning about the daemon on C{log}, unless one
        was let through less than C{warnEvery} seconds ago: then count it.
        The next one let through says how many were held back (field
        C{suppressed}).

        @return: whether it was logged.
        """
        now = self._clock.seconds()
        if self._lastWarning is not None and now - self._lastWarning < self._warnEvery:
            self._suppressed += 1
            return False
        if self._suppressed and self._lastWarning is not None:
            format += " ({suppressed} more like it not logged since {previous:.0f} s ago)"
            fields.update(suppressed=self._suppressed, previous=now - self._lastWarning)
        log.warn(format, **fields)
        self._lastWarning = now
        self._suppressed = 0
        return True
