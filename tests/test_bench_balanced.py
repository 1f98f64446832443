"""
The throughput benchmark's balanced targets (C{bench/run.py --targets
haproxy1,haproxy2}, issue #14) cannot rot: run end to end in its smallest
mode against a real Dovecot, a real HAProxy and the installed popproxy, with
the empty chain and with bench/configs/chain.toml, every message arrives
byte for byte through the balancer, both instances serve sessions, the
report has the "two instances vs one" ratio docs/scaling.md quotes, and
nothing it started is left running, also when it is interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.benchscript import alive, interruptAfter
from tests.peers.daemons import unavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "run.py"
TARGETS = "popproxy,haproxy1,haproxy2,haproxy2-chain"
SMALLEST = [
    "--quick",
    "--mode",
    "throughput",
    "--mailboxes",
    "50k",
    "--messages",
    "20",
    "--sessions",
    "4",
    "--load-processes",
    "2",
    "--variant",
    "chain,config=bench/configs/chain.toml",
]


@pytest.fixture(scope="module")
def runnable() -> None:
    if os.geteuid() != 0:
        unavailable("bench/run.py needs root (its Dovecot runs mail as a system user)")
    for name in ("dovecot", "haproxy"):
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            unavailable(f"{name} is not installed")


def startedPids(stderr: str) -> list[int]:
    """
    Every HAProxy and popproxy instance pid the balanced targets announced.
    """
    pids = []
    for line in stderr.splitlines():
        if found := re.search(r"haproxy pid (\d+) on .*popproxy pid@port (.*)$", line):
            pids.append(int(found.group(1)))
            pids += [int(item.split("@")[0]) for item in found.group(2).split()]
    return pids


@pytest.fixture(scope="module")
def report(runnable: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("bench") / "report.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALLEST, "--min-megabytes", "8"]
        + ["--targets", TARGETS, "--json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, Any] = json.loads(path.read_text())
    found["stdout"], found["stderr"] = result.stdout, result.stderr
    return found


def test_everyTargetRelaysEveryByte(report: dict[str, Any]) -> None:
    """
    Each target, the balanced ones with the empty chain and with the chain,
    was measured and the load generator found no byte out of place (it
    compares every message with what Dovecot holds).
    """
    assert report["failed"] is False
    assert report["settings"]["targets"] == [*TARGETS.split(","), "chain"]
    measured = {row["target"]: row for row in report["medians"]}
    assert set(measured) == {*TARGETS.split(","), "chain"}
    for target, row in measured.items():
        assert row["errors"] == 0, target
        assert row["mbPerSecond"] > 0, target
    assert all(run["errors"] == 0 and run["messages"] > 0 for run in report["runs"])


def test_twoInstancesShareTheSessions(report: dict[str, Any]) -> None:
    """
    HAProxy spread the sessions over both instances of each two-instance
    target (round robin: each served some, none served all), the one
    instance of haproxy1 served them all; the processes counted for the
    target's CPU include the balancer and every instance.
    """
    served = {
        name: [int(count) for count in counts.split(", ")]
        for name, counts in re.findall(
            r"(\S+): sessions served by each instance: (.*)$", report["stderr"], re.M
        )
    }
    assert set(served) == {"haproxy1", "haproxy2", "haproxy2-chain"}
    assert len(served["haproxy1"]) == 1 and served["haproxy1"][0] > 0
    for name in ("haproxy2", "haproxy2-chain"):
        assert len(served[name]) == 2 and min(served[name]) > 0, served
        assert abs(served[name][0] - served[name][1]) <= max(served[name]) // 2 + 1, served
    assert report["machine"]["haproxy"].startswith("HAProxy version")


def test_ratioToOneInstance(report: dict[str, Any]) -> None:
    """
    The ratios table compares each balanced target with its variant's one
    instance without a balancer: haproxy2 with popproxy, haproxy2-chain
    with chain; the plain targets have no such ratio.
    """
    medians = {row["target"]: row["mbPerSecond"] for row in report["medians"]}
    ratios = {row["target"]: row["vsOneInstance"] for row in report["ratios"]}
    assert ratios["haproxy2"] == pytest.approx(medians["haproxy2"] / medians["popproxy"])
    assert ratios["haproxy1"] == pytest.approx(medians["haproxy1"] / medians["popproxy"])
    assert ratios["haproxy2-chain"] == pytest.approx(medians["haproxy2-chain"] / medians["chain"])
    assert ratios["popproxy"] is None and ratios["chain"] is None
    assert "| MB/s ÷ one instance |" in report["stdout"]
    assert re.search(r"\| 50k \| 4 \| haproxy2 \| .* \| \d+\.\d\d× \|", report["stdout"])


def test_nothingLeftRunning(report: dict[str, Any]) -> None:
    """
    Every HAProxy and popproxy instance the run started is gone after it.
    """
    pids = startedPids(report["stderr"])
    assert len(pids) == 2 + 3 + 3
    assert not [pid for pid in pids if alive(pid)]


def test_interruptedRunLeavesNothingBehind(runnable: None) -> None:
    """
    Ctrl-C while the balanced targets carry load: the benchmark exits 130
    and HAProxy and the instances it started are all gone.
    """
    # Two runs of 100 MB: the first one's report line means the second is under way.
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *SMALLEST, "--min-megabytes", "100"]
        + ["--sessions", "1,4", "--targets", "haproxy2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = interruptAfter(process, lambda line: "round 1/1" in line, 180)
    pids = startedPids("".join(seen))
    assert len(pids) == 3, seen
    assert not [pid for pid in pids if alive(pid)]
