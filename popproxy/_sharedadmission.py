"""
Admission with the per-address counts shared by several processes:
L{SharedAdmission} asks the process's own L{Admission} for the total
(which protects this process's descriptors) and an L{ISessionLedger} (the
main process's count, or Redis) for the sessions and connection rate of
the client's network, so one limit holds however many processes or
instances the connections are spread over.

The accept path never waits long for the ledger: an answer that has not
come within C{wait} seconds, or a ledger that fails, lets the process
decide on its own counts (as with one process), and the ledger is told of
the session afterwards (L{ISessionLedger.hold}) so it is counted once the
ledger answers again.  While the ledger's store is known to be down
(L{StoreOutage}), it is not asked at all: admission is local and adds no
latency until the store answers again.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from popproxy._addresscounts import AddressLimits
from popproxy._admission import (
    ADDRESS_REFUSALS,
    TOO_MANY_SESSIONS,
    Admission,
    ConnectionLimits,
    Network,
    Refusal,
    Ticket,
)
from popproxy._fallbackstore import StoreOutage
from popproxy._sessionledger import ISessionLedger
from popproxy._storeaddress import RedisAddress

__all__ = ["ADMISSION_WAIT", "ProcessAdmission", "SharedAdmission", "admissionWait", "leaseNames"]

#: The most a new connection waits for the shared count (seconds) before
#: the process decides on its own counts.
ADMISSION_WAIT = 0.2


def admissionWait(store: RedisAddress | None) -> float:
    """
    How long a new connection may wait for the shared count: at most
    L{ADMISSION_WAIT}, less if the store's own C{timeout} is shorter.
    """
    return ADMISSION_WAIT if store is None else min(ADMISSION_WAIT, store.timeout)


def leaseNames() -> Iterator[str]:
    """
    Names for this process's sessions that no other process (here or on
    another host) uses: a random instance part, the process id, a number.
    """
    instance = f"{secrets.token_hex(6)}.{os.getpid()}"
    return (f"{instance}.{number}" for number in itertools.count(1))


class SharedAdmission:
    """
    Admits or refuses new connections: the total in this process, the
    per-address limits in C{ledger}.

    @param outage: the shared store's state, if the ledger's failures are
        to be reported (and the ledger left alone while it is down).
    """

    def __init__(
        self,
        admission: Admission,
        ledger: ISessionLedger,
        clock: IReactorTime,
        *,
        wait: float = ADMISSION_WAIT,
        outage: StoreOutage | None = None,
    ) -> None:
        self.local = admission
        self._ledger = ledger
        self.clock = clock
        self.wait = wait
        self._outage = outage
        self._names = leaseNames()

    @property
    def maxSessions(self) -> int:
        return self.local.maxSessions

    @property
    def ledger(self) -> ISessionLedger:
        """
        Where the per-address counts are shared (other counts per client
        network may live there too, e.g. the logins in flight).
        """
        return self._ledger

    @property
    def outage(self) -> StoreOutage | None:
        return self._outage

    def reconfigure(self, limits: ConnectionLimits) -> None:
        self.local.reconfigure(limits)

    def admit(self, host: str | None) -> Deferred[Ticket | Refusal]:
        """
        Admit a connection from C{host}: fires with a L{Ticket} or a
        L{Refusal} within C{wait} seconds.
        """
        if self.local.full:
            return succeed(TOO_MANY_SESSIONS)
        network = self.local.networkOf(host)
        if network is None:
            return succeed(self.local.admit(host))
        lease = next(self._names)
        if self._outage is not None and self._outage.down:
            return succeed(self.admitLocally(host, network, lease))
        return _Asking(self, host, network, lease).answer

    def release(self, ticket: Ticket) -> None:
        """
        The session admitted with C{ticket} has ended.
        """
        self.local.release(ticket)
        if ticket.lease is not None and ticket.network is not None:
            self._ledger.leave(str(ticket.network), ticket.lease)

    @property
    def limits(self) -> AddressLimits:
        return self.local.addressLimits

    def enter(self, network: Network, lease: str) -> Deferred[str | None]:
        return self._ledger.enter(str(network), lease, self.limits)

    def admitShared(self, host: str | None, network: Network, lease: str) -> Ticket | Refusal:
        """
        The ledger counted the session: count it here too (refusing it,
        and leaving the ledger, if this process is full meanwhile).
        """
        answer = self.local.admit(host)
        if isinstance(answer, Refusal):
            self._ledger.leave(str(network), lease)
            return answer
        return replace(answer, lease=lease)

    def ledgerAnswered(self) -> None:
        if self._outage is not None:
            self._outage.answered()

    def ledgerFailed(self, reason: str) -> None:
        if self._outage is not None:
            self._outage.failed(reason)

    def leave(self, network: Network, lease: str) -> None:
        self._ledger.leave(str(network), lease)

    def admitLocally(self, host: str | None, network: Network, lease: str) -> Ticket | Refusal:
        """
        Decide on this process's counts; an admitted session is held in
        the ledger, to be counted there once it answers again.
        """
        answer = self.local.admit(host)
        if isinstance(answer, Refusal):
            return answer
        self._ledger.hold(str(network), lease)
        return replace(answer, lease=lease)


class _Asking:
    """
    One connection waiting for the ledger's answer, or for C{wait} to pass.
    """

    def __init__(
        self, admission: SharedAdmission, host: str | None, network: Network, lease: str
    ) -> None:
        self._admission = admission
        self._host = host
        self._network = network
        self._lease = lease
        self.answer: Deferred[Ticket | Refusal] = Deferred()
        self._heldLocally = False
        self._timer = admission.clock.callLater(admission.wait, self._late)
        asked = admission.enter(network, lease)
        asked.addCallbacks(self._answered, self._failed)

    def _answered(self, reason: str | None) -> None:
        if self.answer.called:
            # Too late: decided locally.  A session the ledger counted but
            # this process refused must not stay counted there.
            if reason is None and not self._heldLocally:
                self._admission.leave(self._network, self._lease)
            return
        self._timer.cancel()
        self._admission.ledgerAnswered()
        if reason is None:
            self.answer.callback(
                self._admission.admitShared(self._host, self._network, self._lease)
            )
        else:
            self.answer.callback(ADDRESS_REFUSALS[reason])

    def _failed(self, failure: Failure) -> None:
        if self.answer.called:
            return
        self._timer.cancel()
        self._admission.ledgerFailed(failure.getErrorMessage())
        self._decideLocally()

    def _late(self) -> None:
        self._admission.ledgerFailed(
            f"no answer to a new connection's admission within {self._admission.wait}s"
        )
        self._decideLocally()

    def _decideLocally(self) -> None:
        decision = self._admission.admitLocally(self._host, self._network, self._lease)
        self._heldLocally = isinstance(decision, Ticket)
        self.answer.callback(decision)


#: What admits a process's connections: its own counts, or shared ones.
ProcessAdmission = Admission | SharedAdmission
