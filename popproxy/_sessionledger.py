"""
Where sessions per client network are counted when several processes
enforce one limit: the L{ISessionLedger} contract.  The main process's
count serves its workers (L{popproxy._addresscounts.LocalLedger}, asked
over L{popproxy._sharedcounters}); Redis serves several instances
(L{popproxy._redisledger.RedisLedger}).

Each session is a named lease (unique to the process that holds it), so a
ledger can tell a session entered twice from two sessions and can drop the
sessions of a process that died.  A ledger that cannot answer fails the
Deferred of L{ISessionLedger.enter} with
L{popproxy._counterstore.CounterStoreUnavailable}; the caller then decides
on its own counts (L{popproxy._sharedadmission}).
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from popproxy._addresscounts import AddressLimits

__all__ = ["ISessionLedger"]


class ISessionLedger(Protocol):
    """
    Sessions open and recent connections, per client network, shared.
    """

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        """
        Count session C{lease} of network C{key} if C{limits} allow it:
        fire with C{None} if so, else with the reason
        (L{popproxy._addresscounts.ADDRESS} or C{RATE}); a refused one is
        not counted.
        """
        ...

    def hold(self, key: str, lease: str) -> None:
        """
        Count session C{lease} of C{key} without checking: one this
        process admitted on its own while the ledger could not answer.
        Holding a lease already counted changes nothing.
        """
        ...

    def leave(self, key: str, lease: str) -> None:
        """
        Session C{lease} of C{key} has ended.
        """
        ...
