"""
Tests for popproxy._health: what GET /healthz answers while starting,
serving and stopping, and the scanners' states it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock
from zope.interface import implementer

from popproxy._chain import ChainEntry, FilterChain
from popproxy._health import Health, healthReport
from popproxy._lifecycle import Lifecycle
from popproxy.interfaces import Deliver, IMessageFilter, IScannerStatus, ScannerStatus


@implementer(IMessageFilter, IScannerStatus)
class FakeScanner:
    """
    A filter that reports a fixed state of its daemon.
    """

    def __init__(self, name: str, status: ScannerStatus) -> None:
        self.name = name
        self.status = status

    def filterMessage(self, message: Any, context: Any) -> Deliver:
        return Deliver()

    def scannerStatus(self) -> ScannerStatus:
        return self.status


@implementer(IMessageFilter)
class Plain:
    name = "plain"

    def filterMessage(self, message: Any, context: Any) -> Deliver:
        return Deliver()


@dataclass
class FakeListener:
    port: object | None


DOWN = ScannerStatus("clamd", "unix:/run/clamd.ctl", False, 1700000000.0, "connection refused")
UP = ScannerStatus("spamd", "tcp:127.0.0.1:783", True, 1700000100.0)
NEVER = ScannerStatus("clamd", "tcp:127.0.0.1:3310")


def scanningChain() -> FilterChain:
    return FilterChain(
        [
            ChainEntry("virus", FakeScanner("virus", DOWN)),
            ChainEntry("plain", Plain()),
            ChainEntry("spam", FakeScanner("spam", UP)),
            ChainEntry("other", FakeScanner("other", NEVER)),
        ],
        Clock(),
    )


def test_servingNamesEachScanner() -> None:
    """
    With its listener up and the chain loaded the process answers 200;
    the body names every scanning filter (and only those) with its
    daemon, address and last known state.
    """
    listener = FakeListener(port=object())
    chain = scanningChain()
    report = Health(Lifecycle(), lambda: [("proxy.listen[0]", listener)], lambda: chain).report()
    assert report.code == 200
    body = json.loads(report.body)
    assert body["status"] == "serving"
    assert body["listeners"] == {"proxy.listen[0]": "listening"}
    assert body["scanners"] == [
        {
            "filter": "virus",
            "daemon": "clamd",
            "address": "unix:/run/clamd.ctl",
            "state": "unreachable",
            "since": 1700000000.0,
            "detail": "connection refused",
        },
        {
            "filter": "spam",
            "daemon": "spamd",
            "address": "tcp:127.0.0.1:783",
            "state": "reachable",
            "since": 1700000100.0,
            "detail": "",
        },
        {
            "filter": "other",
            "daemon": "clamd",
            "address": "tcp:127.0.0.1:3310",
            "state": "unknown",
            "since": None,
            "detail": "",
        },
    ]


def test_stoppingIs503() -> None:
    """
    Once the stop has begun the answer is 503, listeners still up.
    """
    lifecycle = Lifecycle()
    chain = scanningChain()
    health = Health(lifecycle, lambda: [("proxy.listen[0]", FakeListener(object()))], lambda: chain)
    assert health.report().code == 200
    lifecycle.beginStopping()
    report = health.report()
    assert (report.code, json.loads(report.body)["status"]) == (503, "stopping")


def test_startingIs503() -> None:
    """
    A listener not listening yet, or no chain loaded, is not healthy.
    """
    chain = scanningChain()
    notListening = Health(
        Lifecycle(), lambda: [("tls.listen[0]", FakeListener(None))], lambda: chain
    )
    report = notListening.report()
    assert report.code == 503
    assert json.loads(report.body)["listeners"] == {"tls.listen[0]": "down"}
    noChain = healthReport(stopping=False, listeners=[], chainLoaded=False, scanners=[])
    assert (noChain.code, json.loads(noChain.body)["chain"]) == (503, "not loaded")


def test_unreachableScannerIsStillHealthy() -> None:
    """
    A scanner that cannot be reached does not fail the health check (its
    filter's on_error policy decides for the messages); the body says so.
    """
    report = healthReport(
        stopping=False,
        listeners=[("proxy.listen[0]", True)],
        chainLoaded=True,
        scanners=[("v", DOWN)],
    )
    assert report.code == 200
    assert json.loads(report.body)["scanners"][0]["state"] == "unreachable"
