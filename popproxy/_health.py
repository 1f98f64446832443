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
from popproxy._pgquarantine import PostgresQuarantine, StoreStatus
from popproxy._quarantine import DirectoryQuarantine
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


def scannerState(status: ScannerStatus | StoreStatus) -> str:
    """
    C{reachable}, C{unreachable}, or C{unknown} before any attempt.
    """
    if status.reachable is None:
        return "unknown"
    return "reachable" if status.reachable else "unreachable"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """
    The answer to C{GET /healthz}: an HTTP status code and the document
    its JSON body encodes (which the console's health panel reads as it is).
    """

    code: int
    document: dict[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps(self.document, indent=2).encode("utf-8") + b"\n"


def healthReport(
    *,
    stopping: bool,
    listeners: Sequence[tuple[str, bool]],
    chainLoaded: bool,
    scanners: Sequence[tuple[str, ScannerStatus]],
    quarantine: dict[str, Any] | None = None,
) -> HealthReport:
    """
    The report of a process that is C{stopping} or not, whose listeners
    (by label) listen or not, with its chain loaded or not.  Scanners that
    cannot be reached do not make it unhealthy: the chain's C{on_error}
    policies decide what their messages get, and the body says which.
    Neither does a quarantine store that cannot be reached (the body says
    so too): only the retrievals that must quarantine fail, temporarily,
    and another instance shares the same store.
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
    if quarantine is not None:
        document["quarantine"] = quarantine
    return HealthReport(200 if status == "serving" else 503, document)


def quarantineState(quarantine: Any) -> dict[str, Any] | None:
    """
    What the health page says of the chain's quarantine: its kind and
    place, and for a database whether it answered at the last attempt.
    """
    if isinstance(quarantine, DirectoryQuarantine):
        return {"store": "directory", "address": str(quarantine.directory)}
    if isinstance(quarantine, PostgresQuarantine):
        status = quarantine.status
        return {
            "store": status.store,
            "address": status.address,
            "state": scannerState(status),
            "since": status.since,
            "detail": status.detail,
        }
    return None


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

    def chainQuarantine(self) -> Any:
        """
        The quarantine of the chain in use now (C{None}: none).
        """
        chain = self._chain()
        return chain.quarantine if chain is not None else None

    def report(self) -> HealthReport:
        chain = self._chain()
        return healthReport(
            stopping=self._lifecycle.stopping,
            listeners=[(label, listener.port is not None) for label, listener in self._listeners()],
            chainLoaded=chain is not None,
            scanners=scannerStatuses(chain.entries if chain is not None else ()),
            quarantine=quarantineState(chain.quarantine) if chain is not None else None,
        )
