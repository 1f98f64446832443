"""
What a filter that depends on a daemon (clamd, spamd) knows about reaching
it: L{ScannerStatus}, a frozen value the filter keeps up to date and hands
out through L{popproxy.interfaces.IScannerStatus}.  Start-up logs, the
health check and the metrics read it; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScannerStatus:
    """
    The last known state of one filter's daemon.

    @ivar daemon: what it is, e.g. C{"clamd"} or C{"spamd"} (a fixed word,
        fit for a metric label).
    @ivar address: where the filter reaches it (an endpoint string), for
        logs and the health page, never a metric label.
    @ivar reachable: C{True} after the last attempt worked, C{False} after
        it failed, C{None} before any attempt.
    @ivar since: when C{reachable} took its value (seconds since the epoch,
        from the filter's clock), or C{None} before any attempt.
    @ivar detail: the last failure's short reason, empty when reachable.
    """

    daemon: str
    address: str
    reachable: bool | None = None
    since: float | None = None
    detail: str = ""
