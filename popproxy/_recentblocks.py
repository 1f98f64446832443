"""
The login throttle's recent blocks, for the console: the last L{LIMIT}
blocks (address, account, when, until), newest first, kept in the main
process's memory (a worker's blocks reach it over the worker's socket
pair; see L{popproxy._activity}).  Bounded: a spray from many addresses
replaces the oldest entries.  Nothing here does I/O.
"""

from __future__ import annotations

from collections import deque

from popproxy._activity import LoginBlock

#: How many blocks are kept.
LIMIT = 100


class RecentBlocks:
    """
    The last blocks of this proxy.
    """

    def __init__(self, limit: int = LIMIT) -> None:
        self._blocks: deque[LoginBlock] = deque(maxlen=limit)

    def add(self, block: LoginBlock) -> None:
        """
        Note C{block} (the oldest goes once there are C{limit}).
        """
        self._blocks.append(block)

    def recent(self) -> tuple[LoginBlock, ...]:
        """
        The blocks kept, newest first.
        """
        return tuple(reversed(self._blocks))

    def __len__(self) -> int:
        return len(self._blocks)
