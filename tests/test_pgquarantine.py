"""
Tests for the PostgreSQL quarantine's reactor side, without a database: a
stand-in store and Twisted's Clock.  A failing store fails the Deferred
(so the chain answers -ERR [SYS/TEMP]) and is counted, the state turns
unreachable with one warning, the database is asked again until it
answers; at most maxConnections writes run at once; the health page shows
the state.  Also the setting: URL and connection string are databases,
anything else a directory, and neither repr nor describe shows a password.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from popproxy._assembly import checkQuarantineSchema, configuredQuarantine
from popproxy._config import ConfigError, loadConfig
from popproxy._health import healthReport, quarantineState
from popproxy._pgquarantine import PostgresQuarantine
from popproxy._quarantine import DirectoryQuarantine
from popproxy._quarantineaddress import DatabaseAddress, parseQuarantineAddress
from popproxy.interfaces import FilterContext, IPartQuarantine, RemovedPart

CONTEXT = FilterContext("RETR", 1, "alice", "127.0.0.1:1", "tcp:u:110", "s1", uidl="u-1")
PART = b"Content-Type: application/x-msdownload\r\n\r\nMZ\r\n"


class StandInStore:
    """
    Records what it is asked; fails while C{down}.
    """

    def __init__(self) -> None:
        self.down = False
        self.written: list[list[Any]] = []
        self.pings = 0

    def write(self, items: list[Any]) -> list[str]:
        if self.down:
            raise OSError("connection refused")
        self.written.append(items)
        return [identifier for identifier, _, _ in items]

    def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise OSError("connection refused")


def inline(function: Callable[[], Any]) -> Deferred[Any]:
    try:
        return succeed(function())
    except Exception as e:
        return fail(e)


def results(deferred: Deferred[Any]) -> list[Any]:
    seen: list[Any] = []
    deferred.addBoth(seen.append)
    return seen


def test_storeFailureFailsTheDeferredAndRecoveryIsSeen() -> None:
    """
    A store on a database that is down fails (the chain's temporary
    failure), logs one warning, and the database is asked again every
    5 s; once it answers the state is reachable again, without traffic.
    """
    store, clock = StandInStore(), Clock()
    quarantine = PostgresQuarantine(store, "postgresql://q@db/quarantine", inline, clock)
    assert IPartQuarantine.providedBy(quarantine)
    with capturedLogs() as warnings:
        store.down = True
        [failure] = results(quarantine.store(PART, CONTEXT, "blocked", "strip"))
        results(quarantine.storeParts(PART, [RemovedPart(PART, (1,), "x")], CONTEXT, "strip"))
    assert "connection refused" in str(failure.value)
    assert quarantine.status.reachable is False and quarantine.status.detail == "connection refused"
    ours = [e for e in warnings if "cannot be used" in e.get("log_format", "")]
    assert len(ours) == 1 and ours[0]["address"] == "postgresql://q@db/quarantine"
    clock.advance(5)
    assert store.pings == 1 and quarantine.status.reachable is False
    store.down = False
    clock.advance(5)
    status = quarantine.status  # read afresh: mypy keeps the narrowing above across the call
    assert status.reachable is True and status.since == 10
    [identifier] = results(quarantine.store(PART, CONTEXT, "blocked", "strip"))
    assert isinstance(identifier, str) and len(store.written) == 1
    clock.advance(60)
    assert store.pings == 2  # no more asking while it answers


def test_atMostMaxConnectionsWritesAtOnce() -> None:
    """
    With 2 connections, a third store waits (holding no thread) until one
    of the first two is done.
    """
    started: list[Deferred[Any]] = []

    def deferred(function: Callable[[], Any]) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        started.append(waiting)
        return waiting.addCallback(lambda _: function())

    quarantine = PostgresQuarantine(StandInStore(), "db", deferred, Clock(), maxConnections=2)
    stores = [quarantine.store(PART + bytes([n]), CONTEXT, "r", "strip") for n in range(3)]
    assert len(started) == 2
    started[0].callback(None)
    assert len(started) == 3 and results(stores[0])[0].startswith("m")


def test_healthShowsTheStore(tmp_path: Path) -> None:
    """
    The health body names the quarantine's kind and place, and for a
    database its state; an unreachable database leaves the status 200.
    """
    store, clock = StandInStore(), Clock()
    quarantine = PostgresQuarantine(store, "postgresql://q@db/quarantine", inline, clock)
    store.down = True
    quarantine.start()
    report = healthReport(
        stopping=False,
        listeners=[("proxy.listen[0]", True)],
        chainLoaded=True,
        scanners=[],
        quarantine=quarantineState(quarantine),
    )
    body = json.loads(report.body)
    assert report.code == 200
    assert body["quarantine"] == {
        "store": "postgresql",
        "address": "postgresql://q@db/quarantine",
        "state": "unreachable",
        "since": 0.0,
        "detail": "connection refused",
    }
    directory = quarantineState(DirectoryQuarantine(tmp_path))
    assert directory == {"store": "directory", "address": str(tmp_path)}


@pytest.mark.parametrize(
    ("text", "database"),
    [
        ("postgresql://popproxy:s3cret@db.example:5433/quarantine", True),
        ("postgres://db/quarantine", True),
        ("host=db dbname=quarantine password='s3 cret'", True),
        ("quarantine", False),
        ("/var/lib/popproxy/quarantine", False),
    ],
)
def test_settingNamesADatabaseOrADirectory(text: str, database: bool) -> None:
    """
    URLs and connection strings are databases, described without their
    password; anything else is a directory relative to the file's own.
    """
    address = parseQuarantineAddress(text, Path("/etc/popproxy"))
    assert isinstance(address, DatabaseAddress) is database
    if isinstance(address, DatabaseAddress):
        assert "s3" not in address.describe() and "s3" not in repr(address)
    else:
        assert address == Path("/etc/popproxy") / text


def test_configuredDatabaseQuarantine(tmp_path: Path) -> None:
    """
    [chain] quarantine = "postgresql://…" builds a PostgreSQL quarantine;
    a connection string libpq cannot read is one configuration error line.
    """
    config = tmp_path / "twistd.conf"
    config.write_text(
        '[upstream]\ndefault = "tcp:127.0.0.1:110"\n'
        '[chain]\nquarantine = "postgresql://q:pw@127.0.0.1:1/quarantine"\n'
    )
    loaded = loadConfig(config)
    assert isinstance(loaded.chain.quarantine, DatabaseAddress)
    assert loaded.chain.overLimits == "quarantine"
    built = configuredQuarantine(str(config), loaded.chain.quarantine, inline, Clock())
    assert isinstance(built, PostgresQuarantine)
    with pytest.raises(ConfigError, match=r"\[chain\] quarantine: not a PostgreSQL"):
        configuredQuarantine("f", DatabaseAddress("host='unterminated"), inline, Clock())
    checkQuarantineSchema(loaded)  # nothing listens on port 1: start anyway, with a warning
