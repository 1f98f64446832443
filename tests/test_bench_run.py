"""
bench/run.py's issue #16 options cannot rot: run end to end at their
smallest size against a real Dovecot and the installed popproxy, pinned
runs really put the proxy (and popproxy's worker) on the proxy's CPUs and
Dovecot on the others, the CPU table accounts for every process role, the
scaling ratio is the ratio of the medians it prints, and memory under load
reports the bytes in flight and every session's cache within the budget
chain.toml leaves at its default.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.peers.daemons import unavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "run.py"
CHAIN = ROOT / "bench" / "configs" / "chain.toml"
CHAIN2 = ROOT / "bench" / "configs" / "chain-workers2.toml"
#: The smallest sizes: a 10-message 50k mailbox, a tenth of mixed, a 1 MB big message.
SMALL = ["--repeats", "1", "--messages", "10", "--mixed-scale", "0.1", "--big-mb", "1"]
VARIANTS = [f"--variant=chain,config={CHAIN}", f"--variant=chain-workers2,config={CHAIN2}"]


@pytest.fixture(scope="module")
def runnable() -> None:
    if os.geteuid() != 0:
        unavailable("bench/run.py needs root (its Dovecot runs mail as a system user)")
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        unavailable("dovecot is not installed")
    if len(os.sched_getaffinity(0)) < 2:
        unavailable("--pin auto needs two CPUs")


def runBench(arguments: list[str], json_: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL, *arguments, "--json", str(json_)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found: dict[str, Any] = json.loads(json_.read_text())
    found["stdout"] = result.stdout
    return found


@pytest.fixture(scope="module")
def pinned(runnable: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("bench") / "pinned.json"
    arguments = ["--mode", "throughput", "--min-megabytes", "4", "--sessions", "2"]
    arguments += ["--mailboxes", "50k", "--targets", "direct", *VARIANTS]
    return runBench([*arguments, "--scaling", "chain-workers2/chain", "--pin", "auto"], path)


@pytest.fixture(scope="module")
def loaded(runnable: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("bench") / "loaded.json"
    arguments = ["--mode", "loaded", "--load-sessions", "5", "--targets", "chain", VARIANTS[0]]
    return runBench(arguments, path)


def test_pinnedRunPutsEachProcessOnItsCpus(pinned: dict[str, Any]) -> None:
    """
    --pin auto on this machine splits its CPUs in two disjoint halves;
    Dovecot runs on the second, every proxy process (both of
    chain-workers2's) on the first, and the JSON and report say so.
    """
    pinning = pinned["pinning"]
    proxy, rest = set(pinning["proxy"]), set(pinning["rest"])
    assert proxy and rest and not proxy & rest
    assert proxy | rest == os.sched_getaffinity(0)
    assert set(pinning["dovecotAffinity"]) == rest
    affinities = {run["target"]: run["proxyAffinity"] for run in pinned["runs"]}
    assert affinities == {
        "direct": [],
        "chain": sorted(proxy),
        "chain-workers2": sorted(proxy),
    }
    assert pinned["settings"]["pin"] == {"proxy": sorted(proxy), "rest": sorted(rest)}
    assert "| proxy CPUs busy | other CPUs busy |" in pinned["stdout"]


def test_cpuTableAccountsForEveryRole(pinned: dict[str, Any]) -> None:
    """
    Every target has a CPU row with seconds per GB for each role: the
    proxy's main process and workers (none for direct; the worker of
    chain-workers2 does work), Dovecot and the load generator; the total
    is their sum, and Dovecot did work in the run.
    """
    rows = {row["target"]: row for row in pinned["cpu"]}
    assert set(rows) == {"direct", "chain", "chain-workers2"}
    assert rows["direct"]["cpuSecondsPerGB"]["proxyMain"] is None
    assert rows["chain"]["cpuSecondsPerGB"]["proxyOthers"] == 0
    assert rows["chain-workers2"]["cpuSecondsPerGB"]["proxyOthers"] > 0
    for row in rows.values():
        perGB = [value for value in row["cpuSecondsPerGB"].values() if value is not None]
        assert all(value >= 0 for value in perGB)
        assert math.isclose(row["allCpuSecondsPerGB"], sum(perGB))
    assert sum(run["cpuSeconds.dovecot"] for run in pinned["runs"]) > 0
    assert "## CPU by process (medians; seconds per GB relayed)" in pinned["stdout"]


def test_scalingIsTheRatioOfTheMedians(pinned: dict[str, Any]) -> None:
    """
    --scaling chain-workers2/chain prints chain-workers2's MB/s over
    chain's, from the same medians as the throughput table.
    """
    medians = {row["target"]: row["mbPerSecond"] for row in pinned["medians"]}
    [record] = pinned["scaling"]
    assert (record["numerator"], record["denominator"], record["sessions"]) == (
        "chain-workers2",
        "chain",
        2,
    )
    assert math.isclose(record["ratio"], medians["chain-workers2"] / medians["chain"])
    assert "| 50k | 2 | chain-workers2 ÷ chain |" in pinned["stdout"]


def test_memoryUnderLoadReportsInFlightBytesAndTheCache(loaded: dict[str, Any]) -> None:
    """
    Five sessions fetch the small mixed mailbox through the chain, every
    message verified; the report gives the peak RSS over the baseline and
    the bytes in flight (at most one message per session), and every
    session's cache line: within chain.toml's default budget of 1 MiB.
    """
    memory = loaded["loadedMemory"]
    assert (memory["sessions"], memory["mailbox"]) == (5, "mixed")
    row = memory["targets"]["chain"]
    messages = loaded["mailboxes"]["mixed"]["messages"]
    assert row["errors"] == 0 and row["messages"] == 5 * messages
    assert row["rssPeakMB"] >= row["rssBaselineMB"] > 0
    assert 0 < row["inFlightMeanMB"] <= row["inFlightMaxMB"] <= memory["boundMB"] + 1e-9
    assert row["samples"] > 0
    cache = row["cache"]
    assert cache["sessionsReporting"] == 5 and cache["budgetBytes"] == 1024 * 1024
    assert 0 < cache["maxPeakBytes"] <= cache["budgetBytes"] and cache["overBudget"] == 0
    assert "## Memory under load" in loaded["stdout"]
    assert "| chain |" in loaded["stdout"].split("## Memory under load")[1]
