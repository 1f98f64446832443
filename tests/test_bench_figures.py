"""
The figures bench/run.py's issue #16 options compute, without a run:
--pin's CPU lists and split (bench/_pinning.py), the bytes in flight from
the load generator's RETR spans (bench/_loadedmemory.py), and the CPU and
scaling tables (bench/_cpushare.py).
"""

from __future__ import annotations

import math

import pytest

from bench._cpushare import cpuTable, parseScaling, record, scalingTable
from bench._loadedmemory import inFlight, levelAt, meanLevel
from bench._pinning import Pinning, parseCpuList, parsePinning

FOUR = frozenset({0, 1, 2, 3})


def test_cpuListsReadLikeTaskset() -> None:
    """
    Lists and ranges mix; anything else is refused.
    """
    assert parseCpuList("0,2-3") == {0, 2, 3}
    for bad in ("", "a", "1-", "-1", "0,,1"):
        with pytest.raises(ValueError):
            parseCpuList(bad)


def test_autoSplitsTheCpusInHalves() -> None:
    """
    auto gives the proxy the first half of the usable CPUs and everything
    else the rest; one CPU cannot be split.
    """
    assert parsePinning("auto", FOUR) == Pinning(frozenset({0, 1}), frozenset({2, 3}))
    assert parsePinning("auto", frozenset({4, 7})) == Pinning(frozenset({4}), frozenset({7}))
    with pytest.raises(ValueError, match="two CPUs"):
        parsePinning("auto", frozenset({0}))


def test_explicitSetsMustBeDisjointAndUsable() -> None:
    """
    PROXY:REST names both sets; they may not overlap or name a CPU this
    process may not use.
    """
    assert parsePinning("0:1-3", FOUR) == Pinning(frozenset({0}), frozenset({1, 2, 3}))
    for bad, why in (("0-1:1", "share"), ("0:4", "only use"), ("0", "PROXYCPUS:RESTCPUS")):
        with pytest.raises(ValueError, match=why):
            parsePinning(bad, FOUR)


def test_bytesInFlightFollowTheRetrSpans() -> None:
    """
    A message counts from its RETR until its last octet arrived: two
    overlapping RETRs add up, a message ending when another starts does
    not; the mean weighs each level by how long it lasted.
    """
    spans = [(0.0, 2.0, 100), (1.0, 3.0, 50), (3.0, 4.0, 10)]
    times, levels = inFlight(spans)
    assert max(levels) == 150
    assert [levelAt(times, levels, at) for at in (-1, 0.5, 1.5, 2.5, 3.0, 5)] == [
        0,
        100,
        150,
        50,
        10,
        0,
    ]
    assert math.isclose(meanLevel(times, levels), (100 + 150 + 50 + 10) / 4)


def run(target: str, rate: float, dovecot: float, **cpu: float) -> dict[str, object]:
    seconds = {"proxyMain": math.nan, "proxyOthers": math.nan, "loadGenerator": 0.5}
    seconds |= {"dovecot": dovecot, **cpu}
    return {
        "mailbox": "50k",
        "sessions": 10,
        "target": target,
        "mbPerSecond": rate,
        **record(seconds, rate * 2.0, 2.0),
    }


def test_cpuTableGivesSecondsPerGbAndBusyCpus() -> None:
    """
    200 MB in 2 s with 1 s of the proxy's main process, 0.5 s of its
    workers, 0.3 s of Dovecot and 0.5 s of load: 5, 2.5, 1.5 and 2.5 s/GB,
    1.15 cores, and 2 cores could give at most 2 / 11.5 GB/s (174 MB/s)
    at that cost; pinned 1+1, the proxy's CPU was 75 % busy, the other 40 %.
    A target without processes (direct) has no proxy figures.
    """
    runs = [
        run("chain", 100.0, 0.3, proxyMain=1.0, proxyOthers=0.5),
        run("direct", 100.0, 0.3),
    ]
    pinning = Pinning(frozenset({0}), frozenset({1}))
    text, rows = cpuTable(runs, ("direct", "chain"), pinning, 2)
    assert [row["target"] for row in rows] == ["direct", "chain"]
    chain = rows[1]
    assert chain["cpuSecondsPerGB"] == pytest.approx(
        {"proxyMain": 5.0, "proxyOthers": 2.5, "dovecot": 1.5, "loadGenerator": 2.5}
    )
    assert chain["allCpuSecondsPerGB"] == pytest.approx(11.5)
    assert chain["coresUsed"] == pytest.approx(1.15)
    assert chain["ceilingMBps"] == pytest.approx(2e3 / 11.5)
    assert (chain["proxyCpusBusy"], chain["otherCpusBusy"]) == pytest.approx((0.75, 0.4))
    assert math.isnan(rows[0]["cpuSecondsPerGB"]["proxyMain"])
    row = (
        "| 50k | 10 | chain | 100.0 | 5.00 | 2.50 | 1.50 | 2.50 | 11.50 | 1.15 | 174 | 75% | 40% |"
    )
    assert row in text
    header, separator = text.splitlines()[:2]
    assert header.count("|") == separator.count("|") == row.count("|")


def test_scalingDividesMedians() -> None:
    """
    The ratio is of the medians over repeats; a pair with a target not
    measured gives no number.
    """
    runs = [run("two", rate, 0.1) for rate in (150.0, 160.0, 170.0)]
    runs += [run("one", rate, 0.1) for rate in (100.0, 80.0)]
    text, records = scalingTable(runs, [("two", "one"), ("two", "absent")])
    assert records[0]["ratio"] == pytest.approx(160.0 / 90.0)
    assert math.isnan(records[1]["ratio"])
    assert "| 50k | 10 | two ÷ one | 160.0 | 90.0 | 1.78× |" in text
    assert parseScaling("a-b/c") == ("a-b", "c")
    for bad in ("a", "a/", "/b", "a/b/c"):
        with pytest.raises(ValueError):
            parseScaling(bad)
