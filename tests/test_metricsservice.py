"""
Tests for popproxy._metricsservice: the pages of the [metrics] listener
(GET /metrics in the Prometheus text format, GET /healthz as JSON), the
scanners' reachability read at scrape time, and that the service begins
the process's metrics when it starts.  The several-process case runs in
tests/test_e2e_metrics.py with real workers.
"""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from popproxy._chain import ChainEntry
from popproxy._health import Health
from popproxy._lifecycle import Lifecycle
from popproxy._metrics import Metrics
from popproxy._metricsservice import MetricsService
from tests.metricsamples import family, parseSamples, value
from tests.test_health import DOWN, NEVER, UP, FakeListener, FakeScanner, scanningChain


def get(service: MetricsService, path: bytes) -> tuple[int, bytes, bytes]:
    """
    GET C{path} from the service's site: status code, content type, body.
    """
    request = DummyRequest(path.strip(b"/").split(b"/"))
    resource = getChildForRequest(service.site.resource, request)
    body = resource.render(request)
    assert isinstance(body, bytes)
    contentType = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
    return request.responseCode or 200, contentType, body


def startedService(lifecycle: Lifecycle) -> tuple[MetricsService, Metrics]:
    chain = scanningChain()
    metrics = Metrics()
    health = Health(lifecycle, lambda: [("proxy.listen[0]", FakeListener(object()))], lambda: chain)
    service = MetricsService(
        Clock(), metrics, multiprocess=False, report=health.report, entries=health.chainEntries
    )
    service.startService()
    return service, metrics


def test_metricsPageShowsCountsAndScanners() -> None:
    """
    Once started, the service has begun the metrics: what a session
    records is on /metrics, in the Prometheus text format, with each
    scanning filter's reachability (1, 0, and no sample before any
    attempt) and when it last changed.
    """
    service, metrics = startedService(Lifecycle())
    assert metrics.recording
    metrics.sessionOpened("proxy.listen[0]")
    code, contentType, body = get(service, b"/metrics")
    assert (code, contentType) == (200, CONTENT_TYPE_LATEST.encode("ascii"))
    samples = parseSamples(body.decode("utf-8"))
    assert value(samples, "popproxy_sessions_open", listener="proxy.listen[0]") == 1
    assert family(samples, "popproxy_scanner_reachable") == {
        frozenset({("filter", "virus"), ("daemon", "clamd")}): 0,
        frozenset({("filter", "spam"), ("daemon", "spamd")}): 1,
    }
    assert family(samples, "popproxy_scanner_last_change_timestamp_seconds") == {
        frozenset({("filter", "virus"), ("daemon", "clamd")}): DOWN.since,
        frozenset({("filter", "spam"), ("daemon", "spamd")}): UP.since,
    }
    assert NEVER.reachable is None


def test_healthPage() -> None:
    """
    /healthz answers 200 and JSON while serving, 503 once the stop began,
    and is never cached.
    """
    lifecycle = Lifecycle()
    service, _ = startedService(lifecycle)
    code, contentType, body = get(service, b"/healthz")
    assert (code, contentType, json.loads(body)["status"]) == (200, b"application/json", "serving")
    lifecycle.beginStopping()
    code, _, body = get(service, b"/healthz")
    assert (code, json.loads(body)["status"]) == (503, "stopping")


def test_stopKeepsServing() -> None:
    """
    Stopping the service leaves its listener to the reactor's shutdown,
    so /healthz can say 503 through a graceful stop: the child stays up.
    """
    service, _ = startedService(Lifecycle())
    child = Service()
    child.setServiceParent(service)
    child.startService()
    service.stopService()
    assert not service.running and child.running


def test_scannerEntriesFollowTheChain() -> None:
    """
    The scanners are read from the chain in use when scraped.
    """
    entries: list[ChainEntry] = []
    metrics = Metrics()
    service = MetricsService(
        Clock(),
        metrics,
        multiprocess=False,
        report=Health(Lifecycle(), lambda: [], lambda: None).report,
        entries=lambda: entries,
    )
    service.startService()
    assert family(parseSamples(service.scrape().decode()), "popproxy_scanner_reachable") == {}
    entries.append(ChainEntry("virus", FakeScanner("virus", DOWN)))
    assert family(parseSamples(service.scrape().decode()), "popproxy_scanner_reachable") == {
        frozenset({("filter", "virus"), ("daemon", "clamd")}): 0
    }
