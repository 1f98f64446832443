"""
What the proxy counts for Prometheus: L{Metrics}, one per process, handed
to the sessions (through L{popproxy._sessionsettings.SessionSettings}), the
login exchange, the retrieval flow, the filter chain and the quarantine.

Each of them reports what it decided, as a word or a frozen value it
already has (a L{ChainOutcome}, a login result, a session's ending), and
this module turns that into metric samples with bounded label values:
never a user name or an address.  A L{Metrics} records nothing until
L{Metrics.begin} gives it a registry, so tests, the offline runner and a
proxy without C{[metrics]} pay one attribute test per event and nothing
else.

With C{[proxy] workers} above one, every process records into files of one
private directory (prometheus_client's multiprocess mode) and the main
process adds them up when it is scraped: see L{popproxy._metricsservice}.

Watched (L{Metrics.watch}), it also hands each chain's verdicts and each
login block on as L{popproxy._activity} values, recorded or not: the
console's charts and list of blocks are made of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from twisted.python.failure import Failure

from popproxy._activity import ActivityWatch, FilterRun, LoginBlock
from popproxy._outcome import ChainOutcome, FilterStep
from popproxy._upstream import failureKind

#: What every metric name starts with.
PREFIX = "popproxy"

#: How a session ended (the C{ending} label): the start of the reason the
#: session logs, and the word the metric gives it.  An ending not listed
#: here counts as C{"other"}.
SESSION_ENDINGS: tuple[tuple[str, str], ...] = (
    ("client quit", "quit"),
    ("client closed the connection", "client_closed"),
    ("idle timeout", "idle_timeout"),
    ("login timeout", "login_timeout"),
    ("command line timeout", "command_deadline"),
    ("upstream", "upstream_lost"),
    ("client sent an overlong line", "protocol_error"),
    ("filter failed during keepalive", "filter_failed"),
    ("command failed", "error"),
    ("retrieval failed", "error"),
    ("proxy stopping: cut", "stop_cut"),
    ("proxy stopping", "stopping"),
)

#: What a RETR or TOP came to (the C{outcome} label of
#: C{popproxy_retrievals_total}).
RETRIEVAL_OUTCOMES = (
    "relayed",
    "filtered_unchanged",
    "rewritten",
    "replaced",
    "tempfail",
    "oversize",
    "over_limits",
    "cached",
    "upstream_refused",
)

#: Histogram buckets for filter and chain latency, in seconds: a message
#: filtered in a millisecond and a scanner near its 30 s timeout both land
#: in a bucket of their own.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def endingKind(reason: str) -> str:
    """
    The C{ending} label for a session that ended for C{reason} (as logged).
    """
    if reason.endswith(" failed logins"):
        return "failed_logins"
    for start, kind in SESSION_ENDINGS:
        if reason.startswith(start):
            return kind
    return "other"


def retrievalOutcome(outcome: ChainOutcome) -> str:
    """
    The C{outcome} label of a message the filter chain handled.
    """
    if outcome.overLimit is not None:
        return "over_limits" if outcome.output is not None else "tempfail"
    if outcome.output is None:
        return "tempfail"
    if not outcome.changed:
        return "filtered_unchanged"
    if any(step.quarantineId is not None for step in outcome.steps):
        return "replaced"
    return "rewritten"


def verdictLabel(step: FilterStep) -> str:
    """
    The C{verdict} label of one filter's answer: C{deliver}, C{rewrite},
    C{replace}, C{tempfail}, or C{error} / C{timeout} when it gave none.
    """
    if step.verdict is None:
        return "timeout" if step.timedOut else "error"
    return step.kind.lower()


def listenerLabel(table: str, position: int) -> str:
    """
    The C{listener} label of the listener at C{position} of C{[proxy]
    listen} (C{table} C{"proxy"}) or C{[tls] listen} (C{"tls"}): where it
    is configured, not the address it listens on.
    """
    return f"{table}.listen[{position}]"


@dataclass(frozen=True)
class _LimitInstruments:
    """
    The C{[limits]} metrics beyond refusals and throttled logins.
    """

    invalidCommands: Counter
    storeFallback: Gauge
    storeOutages: Counter
    sessionLimit: Gauge


@dataclass(frozen=True)
class _Instruments:
    """
    The prometheus_client objects one process records into.
    """

    sessionsOpen: Gauge
    sessions: Counter
    logins: Counter
    upstreamErrors: Counter
    receivedBytes: Counter
    sentBytes: Counter
    retrievals: Counter
    verdicts: Counter
    filterSeconds: Histogram
    chainSeconds: Histogram
    quarantined: Counter
    quarantineFailures: Counter
    refused: Counter
    loginsThrottled: Counter
    loginBlocks: Counter
    limits: _LimitInstruments


def _instruments(registry: CollectorRegistry | None) -> _Instruments:
    """
    Make every metric, registered in C{registry} (C{None} in multiprocess
    mode, where the scrape reads the processes' files instead).
    """

    def counter(name: str, help: str, labels: tuple[str, ...]) -> Counter:
        return Counter(f"{PREFIX}_{name}", help, labels, registry=registry)

    def histogram(name: str, help: str, labels: tuple[str, ...]) -> Histogram:
        return Histogram(
            f"{PREFIX}_{name}", help, labels, registry=registry, buckets=LATENCY_BUCKETS
        )

    return _Instruments(
        sessionsOpen=Gauge(
            f"{PREFIX}_sessions_open",
            "Client sessions open now.",
            ("listener",),
            registry=registry,
            multiprocess_mode="livesum",
        ),
        sessions=counter("sessions", "Client sessions ended, by how.", ("listener", "ending")),
        logins=counter("logins", "Login commands that ended.", ("method", "result")),
        upstreamErrors=counter(
            "upstream_errors", "Upstream connections that failed or were lost.", ("kind",)
        ),
        receivedBytes=counter(
            "client_received_bytes", "Octets received from clients.", ("listener",)
        ),
        sentBytes=counter("client_sent_bytes", "Octets sent to clients.", ("listener",)),
        retrievals=counter(
            "retrievals", "RETR and TOP commands, by outcome.", ("command", "outcome")
        ),
        verdicts=counter("filter_verdicts", "Filter answers, by filter.", ("filter", "verdict")),
        filterSeconds=histogram("filter_seconds", "Time one filter took.", ("filter",)),
        chainSeconds=histogram("chain_seconds", "Time the whole chain took.", ()),
        quarantined=counter("quarantine_stored", "Items the quarantine kept.", ("kind",)),
        quarantineFailures=counter(
            "quarantine_failures", "Stores the quarantine could not do.", ("kind",)
        ),
        refused=counter(
            "connections_refused",
            "Connections refused at the door ([limits]), by reason.",
            ("listener", "reason"),
        ),
        loginsThrottled=counter(
            "logins_throttled", "Login attempts held back or refused by the throttle.", ("reason",)
        ),
        loginBlocks=counter("login_blocks", "Client addresses blocked for failed logins.", ()),
        limits=_limitInstruments(registry),
    )


def _limitInstruments(registry: CollectorRegistry | None) -> _LimitInstruments:
    """
    Make the C{[limits]} metrics beyond refusals and throttled logins.
    """
    return _LimitInstruments(
        invalidCommands=Counter(
            f"{PREFIX}_prelogin_invalid_commands",
            "Invalid commands before login, counted as failed logins ([limits]).",
            ("reason",),
            registry=registry,
        ),
        storeFallback=Gauge(
            f"{PREFIX}_counter_store_fallback",
            "1 while the shared counter store ([limits] store) cannot answer and the"
            " process counts on its own.",
            registry=registry,
            multiprocess_mode="livemax",
        ),
        storeOutages=Counter(
            f"{PREFIX}_counter_store_outages",
            "Times the shared counter store stopped answering.",
            registry=registry,
        ),
        sessionLimit=Gauge(
            f"{PREFIX}_session_limit",
            "Sessions the proxy admits at once ([limits] max_sessions, summed over processes).",
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


class Metrics:
    """
    Records what the proxy does into Prometheus metrics, once begun.
    """

    def __init__(self) -> None:
        self._instruments: _Instruments | None = None
        self._watch: ActivityWatch | None = None

    def watch(self, watch: ActivityWatch) -> None:
        """
        Hand every chain's verdicts and every login block to C{watch} from
        now on, whether recording or not.
        """
        self._watch = watch

    @property
    def recording(self) -> bool:
        return self._instruments is not None

    def begin(self, registry: CollectorRegistry | None, multiprocessDirectory: str | None) -> None:
        """
        Start recording: into C{registry} in a single process, or into
        files of C{multiprocessDirectory} (then C{registry} is C{None}).
        """
        if multiprocessDirectory is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocessDirectory
        else:
            # One process: never write into a directory left in the
            # environment by whoever started the proxy.
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # prometheus_client picks its value class from this variable when
        # first imported; the directory is made later (after twistd drops
        # privileges), so make that choice again, with its own function.
        values.ValueClass = values.get_value_class()
        self._instruments = _instruments(registry)

    def sessionOpened(self, listener: str) -> None:
        if (instruments := self._instruments) is not None:
            instruments.sessionsOpen.labels(listener).inc()

    def sessionClosed(self, listener: str, reason: str, bytesIn: int, bytesOut: int) -> None:
        """
        A session of C{listener} ended for C{reason} (as logged), after
        receiving C{bytesIn} octets and sending C{bytesOut}.
        """
        if (instruments := self._instruments) is None:
            return
        instruments.sessionsOpen.labels(listener).dec()
        instruments.sessions.labels(listener, endingKind(reason)).inc()
        instruments.receivedBytes.labels(listener).inc(bytesIn)
        instruments.sentBytes.labels(listener).inc(bytesOut)

    def connectionRefused(self, listener: str, reason: str) -> None:
        """
        A connection to C{listener} was refused over a C{[limits]} limit
        (C{reason}: one of L{popproxy._admission.REFUSAL_REASONS}).
        """
        if (instruments := self._instruments) is not None:
            instruments.refused.labels(listener, reason).inc()

    def loginEnded(self, method: str, result: str) -> None:
        """
        A login command (C{method}: C{user}, C{apop} or C{auth}) ended
        with C{result} (see L{popproxy._loginexchange.LoginAnswer.result}).
        """
        if (instruments := self._instruments) is not None:
            instruments.logins.labels(method, result).inc()

    def upstreamConnectFailed(self, reason: Failure) -> None:
        """
        An upstream connection a session wanted could not be made (counted
        by L{popproxy._upstream.failureKind}).
        """
        if (instruments := self._instruments) is not None:
            instruments.upstreamErrors.labels(failureKind(reason)).inc()

    def upstreamLost(self) -> None:
        """
        A session's upstream connection ended without being asked to.
        """
        if (instruments := self._instruments) is not None:
            instruments.upstreamErrors.labels("lost").inc()

    def retrieved(self, command: str, outcome: str) -> None:
        """
        A RETR or TOP that did not go through the chain came to
        C{outcome} (one of L{RETRIEVAL_OUTCOMES}).
        """
        if (instruments := self._instruments) is not None:
            instruments.retrievals.labels(command, outcome).inc()

    def chainRan(self, command: str, outcome: ChainOutcome, seconds: float) -> None:
        """
        The chain handled the message of a C{command} in C{seconds}.
        """
        if self._watch is not None and outcome.steps:
            self._watch.filtersRan(
                tuple(FilterRun(s.name, verdictLabel(s), s.seconds) for s in outcome.steps)
            )
        if (instruments := self._instruments) is None:
            return
        instruments.retrievals.labels(command, retrievalOutcome(outcome)).inc()
        instruments.chainSeconds.observe(seconds)
        for step in outcome.steps:
            instruments.verdicts.labels(step.name, verdictLabel(step)).inc()
            instruments.filterSeconds.labels(step.name).observe(step.seconds)

    def quarantineStored(self, kind: str, count: int) -> None:
        """
        The quarantine kept C{count} items of C{kind} (C{message}: a whole
        message; C{part}: parts removed from one).
        """
        if (instruments := self._instruments) is not None:
            instruments.quarantined.labels(kind).inc(count)

    def quarantineFailed(self, kind: str) -> None:
        if (instruments := self._instruments) is not None:
            instruments.quarantineFailures.labels(kind).inc()

    def loginThrottled(self, reason: str) -> None:
        """
        The login throttle held back (C{delayed}) or refused (C{blocked},
        C{queue_full}) a login attempt.
        """
        if (instruments := self._instruments) is not None:
            instruments.loginsThrottled.labels(reason).inc()

    def loginBlocked(self, block: LoginBlock | None = None) -> None:
        """
        The login throttle blocked a client address (C{block}: which, for
        whom, until when).
        """
        if self._watch is not None and block is not None:
            self._watch.loginBlocked(block)
        if (instruments := self._instruments) is not None:
            instruments.loginBlocks.inc()

    def invalidCommandBeforeLogin(self, reason: str) -> None:
        """
        A client sent an invalid command before login (C{reason}:
        C{invalid} or C{too_long}), which counts as a failed login.
        """
        if (instruments := self._instruments) is not None:
            instruments.limits.invalidCommands.labels(reason).inc()

    def counterStoreFallback(self, down: bool) -> None:
        """
        The shared counter store stopped answering (C{down}) or answers
        again.
        """
        if (instruments := self._instruments) is None:
            return
        instruments.limits.storeFallback.set(1 if down else 0)
        if down:
            instruments.limits.storeOutages.inc()

    def sessionLimit(self, limit: int) -> None:
        """
        This process admits C{limit} sessions at once.
        """
        if (instruments := self._instruments) is not None:
            instruments.limits.sessionLimit.set(limit)


class _NoMetrics(Metrics):
    """
    Never records: the default of everything that takes a L{Metrics}.
    """

    def begin(self, registry: CollectorRegistry | None, multiprocessDirectory: str | None) -> None:
        raise TypeError("NO_METRICS is shared: begin a Metrics of your own")

    def watch(self, watch: ActivityWatch) -> None:
        raise TypeError("NO_METRICS is shared: watch a Metrics of your own")


NO_METRICS: Metrics = _NoMetrics()
