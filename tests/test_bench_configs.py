"""
The benchmark's configurations load the way twistd loads them, and their
chains do what bench/run.py's figures assume: the default chain and the
passthrough floor deliver the benchmark's mail unchanged (every message of
both mailboxes), so the load generator's byte check holds and the figures
measure filtering, not rewriting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from bench import _corpus
from popproxy._assembly import buildChain
from popproxy._chain import FilterChain
from popproxy._config import loadConfig
from popproxy.testing import makeContext

CONFIGS = Path(__file__).resolve().parents[1] / "bench" / "configs"
EXPECTED = {"chain.toml": ["strip", "tag"], "passthrough.toml": ["passthrough"]}
MAILBOXES = [_corpus.mailbox50k(count=10), _corpus.mixedMailbox(scale=0.1)]


@pytest.mark.parametrize("name", ["chain.toml", "passthrough.toml"])
def test_benchmarkChainsDeliverTheMailUnchanged(name: str) -> None:
    """
    Loaded from the file as twistd loads it, the chain hands back every
    message of both mailboxes byte for byte.
    """
    # The entries as twistd builds them, run in this thread (no thread pool).
    chain = FilterChain(list(buildChain(loadConfig(CONFIGS / name), Clock()).entries), Clock())
    assert [entry.name for entry in chain.entries] == EXPECTED[name]
    for mailbox in MAILBOXES:
        for message in mailbox.messages:
            delivered: list[object] = []
            chain.processMessage(makeContext(), message).addBoth(delivered.append)
            assert delivered == [message]


def test_everyBenchmarkConfigurationLoads() -> None:
    """
    No configuration beside the benchmark goes stale: each one loads and
    builds its chain.
    """
    configs = sorted(CONFIGS.glob("*.toml"))
    assert len(configs) >= 4
    for path in configs:
        buildChain(loadConfig(path), Clock())
