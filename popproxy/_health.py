"""
What C{GET /healthz} answers: L{Health} reads the process's state (its
L{Lifecycle}, whether its listeners listen, its filter chain) and makes a
frozen L{HealthReport}: 200 while serving, 503 while starting or stopping,
and a JSON body naming each scanner's last known state.  No I/O; the
metrics listener (L{popproxy._metricsservice}) serves it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from popproxy._chain import ChainEntry, FilterChain
from popproxy._lifecycle import Lifecycle
from popproxy._scannerstatus import ScannerStatus
from popproxy.interfaces import IScannerStatus


def scannerStatuses(entries: Sequence[ChainEntry]) -> list[tuple[str, ScannerStatus]]:
    """
    Each chain entry whose filter talks to a daemon, by the entry's name,
    with what the filter last knew of it.
    """
    return [
        (entry.name, entry.filter.scannerStatus())
        for entry in entries
        if IScannerStatus.providedBy(entry.filter)
    ]


def scannerState(status: ScannerStatus) -> str:
    """
    C{reachable}, C{unreachable}, or C{unknown} before any attempt.
    """
    if status.reachable is None:
        return "unknown"
    return "reachable" if status.reachable else "unreachable"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """
    The answer to C{GET /healthz}: an HTTP status code and a JSON body.
    """

    code: int
    body: bytes


def healthReport(
    *,
    stopping: bool,
    listeners: Sequence[tuple[str, bool]],
    chainLoaded: bool,
    scanners: Sequence[tuple[str, ScannerStatus]],
) -> HealthReport:
    """
    The report of a process that is C{stopping} or not, whose listeners
    (by label) listen or not, with its chain loaded or not.  Scanners that
    cannot be reached do not make it unhealthy: the chain's C{on_error}
    policies decide what their messages get, and the body says which.
    """
    serving = all(up for _, up in listeners) and chainLoaded
    status = "stopping" if stopping else "serving" if serving else "starting"
    document: dict[str, Any] = {
        "status": status,
        "listeners": {label: "listening" if up else "down" for label, up in listeners},
        "chain": "loaded" if chainLoaded else "not loaded",
        "scanners": [
            {
                "filter": name,
                "daemon": scanner.daemon,
                "address": scanner.address,
                "state": scannerState(scanner),
                "since": scanner.since,
                "detail": scanner.detail,
            }
            for name, scanner in scanners
        ],
    }
    body = json.dumps(document, indent=2).encode("utf-8") + b"\n"
    return HealthReport(200 if status == "serving" else 503, body)


class Health:
    """
    The health of one process, read when asked.

    @param listeners: the listening services now, by label; one listens
        once its C{port} is set (a reload changes them).
    @param chain: the filter chain in use now (C{None}: not loaded).
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        listeners: Callable[[], Sequence[tuple[str, Any]]],
        chain: Callable[[], FilterChain | None],
    ) -> None:
        self._lifecycle = lifecycle
        self._listeners = listeners
        self._chain = chain

    def chainEntries(self) -> Sequence[ChainEntry]:
        """
        The entries of the chain in use now (none if it is not loaded).
        """
        chain = self._chain()
        return chain.entries if chain is not None else ()

    def report(self) -> HealthReport:
        chain = self._chain()
        return healthReport(
            stopping=self._lifecycle.stopping,
            listeners=[(label, listener.port is not None) for label, listener in self._listeners()],
            chainLoaded=chain is not None,
            scanners=scannerStatuses(chain.entries if chain is not None else ()),
        )
