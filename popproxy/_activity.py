"""
What a process tells about its work as it happens, for the console's
charts and lists: each filter's verdict and time on a message
(L{FilterRun}) and each address the login throttle blocks
(L{LoginBlock}), as frozen values, handed to an L{ActivityWatch}.

L{popproxy._metrics.Metrics} (one per process, already told of every
chain run and every block) hands them on.  In the main process the watch
records them (L{popproxy._filteractivity}, L{popproxy._recentblocks});
in a worker it sends them to the main process over the worker's socket
pair (L{popproxy._sharedcounters}), so the console in the main process
sees what every worker did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FilterRun:
    """
    One filter's answer on one message.

    @ivar name: the filter's name in the chain.
    @ivar verdict: C{deliver}, C{rewrite}, C{replace}, C{tempfail},
        C{error} or C{timeout} (L{popproxy._metrics.verdictLabel}).
    @ivar seconds: how long it took.
    """

    name: str
    verdict: str
    seconds: float


@dataclass(frozen=True, slots=True)
class LoginBlock:
    """
    The login throttle blocked a client address.

    @ivar client: the address as the failed attempt came from.
    @ivar account: the account of the attempt that tipped it over.
    @ivar at: when (POSIX seconds).
    @ivar until: when the block ends.
    """

    client: str
    account: str
    at: float
    until: float


@dataclass(frozen=True, slots=True)
class ActivityWatch:
    """
    Where a process's activity goes.

    @ivar filtersRan: told of each message's filter answers, in chain order.
    @ivar loginBlocked: told of each block.
    """

    filtersRan: Callable[[tuple[FilterRun, ...]], None]
    loginBlocked: Callable[[LoginBlock], None]
