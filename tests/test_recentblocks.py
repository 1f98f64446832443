"""
Tests for popproxy._recentblocks: the last blocks, newest first, bounded.
"""

from __future__ import annotations

from popproxy._activity import LoginBlock
from popproxy._recentblocks import RecentBlocks


def test_newestFirstAndBounded() -> None:
    """
    Blocks come back newest first; past the limit the oldest go.
    """
    blocks = RecentBlocks(limit=3)
    for n in range(5):
        blocks.add(LoginBlock(f"192.0.2.{n}", "bob", float(n), n + 900.0))
    assert [block.client for block in blocks.recent()] == ["192.0.2.4", "192.0.2.3", "192.0.2.2"]
    assert len(blocks) == 3
