"""
The C{[metrics]} listener: L{MetricsService} serves C{GET /metrics} (the
Prometheus text format) and C{GET /healthz} (L{popproxy._health}) with
twisted.web, in the proxy's own reactor.

It begins the process's L{Metrics} when the service starts, that is after
twistd has dropped privileges, so every file it makes belongs to the user
the proxy runs as.  With workers (C{[proxy] workers} above one) it uses
prometheus_client's multiprocess mode: it makes a private directory
(C{PROMETHEUS_MULTIPROC_DIR}, inherited by the workers it starts before),
every process counts into its own files there, and a scrape adds them up,
so each session, login or message is counted once, by the process that
served it.  A worker that ends is marked dead (its open-session gauge
leaves the sum; its counters stay).  The directory is removed when the
reactor has shut down.  Scanner reachability is read from the chain's
filters when scraped (L{ScannerCollector}), not counted; so is whether the
quarantine's database answers (L{QuarantineCollector}).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from twisted.application.service import MultiService
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from popproxy._chain import ChainEntry
from popproxy._health import HealthReport, scannerStatuses
from popproxy._metrics import PREFIX, Metrics
from popproxy._pgquarantine import PostgresQuarantine


class ScannerCollector(Collector):
    """
    Whether each scanning filter of the chain reaches its daemon, read at
    scrape time from the filters (L{popproxy.interfaces.IScannerStatus}).
    A filter that has not tried yet has no sample.
    """

    def __init__(self, entries: Callable[[], Sequence[ChainEntry]]) -> None:
        self._entries = entries

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reachable = GaugeMetricFamily(
            f"{PREFIX}_scanner_reachable",
            "1 if the filter reached its daemon at its last attempt, 0 if not.",
            labels=("filter", "daemon"),
        )
        changed = GaugeMetricFamily(
            f"{PREFIX}_scanner_last_change_timestamp_seconds",
            "When the filter's daemon last became reachable or unreachable.",
            labels=("filter", "daemon"),
        )
        for name, status in scannerStatuses(self._entries()):
            if status.reachable is None:
                continue
            reachable.add_metric((name, status.daemon), 1.0 if status.reachable else 0.0)
            if status.since is not None:
                changed.add_metric((name, status.daemon), status.since)
        yield reachable
        yield changed


class QuarantineCollector(Collector):
    """
    Whether the quarantine's database answered at its last attempt, read
    at scrape time (a directory quarantine has no such sample).
    """

    def __init__(self, quarantine: Callable[[], Any]) -> None:
        self._quarantine = quarantine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reachable = GaugeMetricFamily(
            f"{PREFIX}_quarantine_store_reachable",
            "1 if the quarantine's database answered at its last attempt, 0 if not.",
            labels=("store",),
        )
        changed = GaugeMetricFamily(
            f"{PREFIX}_quarantine_store_last_change_timestamp_seconds",
            "When the quarantine's database last began or stopped answering.",
            labels=("store",),
        )
        quarantine = self._quarantine()
        if isinstance(quarantine, PostgresQuarantine) and quarantine.status.reachable is not None:
            status = quarantine.status
            reachable.add_metric((status.store,), 1.0 if status.reachable else 0.0)
            if status.since is not None:
                changed.add_metric((status.store,), status.since)
        yield reachable
        yield changed


class MetricsPage(Resource):
    """
    C{GET /metrics}: every metric, in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, scrape: Callable[[], bytes]) -> None:
        super().__init__()
        self._scrape = scrape

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._scrape()


class HealthPage(Resource):
    """
    C{GET /healthz}: 200 while serving, 503 otherwise, and a JSON body.
    """

    isLeaf = True

    def __init__(self, report: Callable[[], HealthReport]) -> None:
        super().__init__()
        self._report = report

    def render_GET(self, request: Request) -> bytes:
        report = self._report()
        request.setResponseCode(report.code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return report.body


class QuietSite(Site):
    """
    A site that writes no access log: a scrape every few seconds would
    fill the proxy's log.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


class MetricsService(MultiService):
    """
    Begins the process's metrics and serves them (its child: the listening
    service of the C{[metrics]} endpoint, given the L{site}).

    @param multiprocess: worker processes record too (multiprocess mode).
    @param report: the health of this process, when asked.
    @param entries: the filter chain's entries in use now.
    """

    def __init__(
        self,
        reactor: Any,
        metrics: Metrics,
        *,
        multiprocess: bool,
        report: Callable[[], HealthReport],
        entries: Callable[[], Sequence[ChainEntry]],
        quarantine: Callable[[], Any] = lambda: None,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._metrics = metrics
        self._multiprocess = multiprocess
        self._entries = entries
        self._quarantine = quarantine
        self._registry: CollectorRegistry | None = None
        #: The multiprocess directory, once made.
        self.directory: str | None = None
        root = Resource()
        root.putChild(b"metrics", MetricsPage(self.scrape))
        root.putChild(b"healthz", HealthPage(report))
        self.site = QuietSite(root)

    def startService(self) -> None:
        registry = CollectorRegistry()
        if self._multiprocess:
            self.directory = tempfile.mkdtemp(prefix="popproxy-metrics-")
            self._reactor.addSystemEventTrigger("after", "shutdown", self._removeDirectory)
            self._metrics.begin(None, self.directory)
            MultiProcessCollector(registry, path=self.directory)
        else:
            self._metrics.begin(registry, None)
        registry.register(ScannerCollector(self._entries))
        registry.register(QuarantineCollector(self._quarantine))
        self._registry = registry
        super().startService()

    def stopService(self) -> None:
        # The listener stays open until the reactor closes every port
        # (after the services have stopped), so /healthz answers 503 for
        # as long as a graceful stop lasts.
        self.running = False

    def scrape(self) -> bytes:
        """
        Every metric now, in the Prometheus text format (added up over the
        processes in multiprocess mode).
        """
        if self._registry is None:
            return b""
        return generate_latest(self._registry)

    def workerEnded(self, pid: int) -> None:
        """
        A worker process ended: its open sessions leave the gauges' sums.
        """
        if self.directory is not None:
            mark_process_dead(pid, self.directory)

    def _removeDirectory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
