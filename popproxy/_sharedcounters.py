"""
The main process's counters, shared with its workers: with C{[proxy]
workers = N}, the main process serves its L{ICounterStore} over one
socket pair per worker (L{CounterServer}, one end inherited by the worker
like its listening sockets), and each worker's sessions count through a
L{RemoteCounters} on the other end, so one limit holds for all N
processes.

Why a socket pair: the main process already starts every worker, so an
inherited descriptor needs no address, no file on disk and no
authentication (only that worker holds it), and it closes by itself when
either process ends.  The requests are small (a login makes a handful),
one JSON array a line: C{[id, method, arguments...]}, answered by
C{[id, result]} or C{[id, null, error]}; JSON keeps a key's spaces and
control characters inside one line.

A worker that loses the main process (or gets no answer within
L{ANSWER_TIMEOUT}) counts in its own L{MemoryCounters} from then on, with
one warning: logins go on, limited per process.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from popproxy._counterstore import CounterStoreUnavailable, ICounterStore
from popproxy._memorycounters import MemoryCounters

#: Seconds a worker waits for the main process's answer.
ANSWER_TIMEOUT = 2.0

#: The store's methods a worker may call, with their argument counts.
_METHODS = {"hit": 3, "count": 1, "blockUntil": 2, "blockedUntil": 1, "forget": 1}

log = Logger(namespace="popproxy.counters")


class CounterServer(LineOnlyReceiver):
    """
    The main process's end of one worker's socket pair: answers its
    requests from C{store}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(self, store: ICounterStore) -> None:
        self._store = store

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            number, method, *arguments = request
            if _METHODS.get(method) != len(arguments):
                raise ValueError(f"unknown request {method!r}")
            call = getattr(self._store, method)
        except (ValueError, TypeError) as e:
            log.warn("a worker sent a bad counter request: {error}", error=str(e))
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        answering = maybeDeferred(call, *arguments)
        answering.addCallbacks(
            self._answer, self._failed, callbackArgs=(number,), errbackArgs=(number,)
        )

    def _answer(self, result: object, number: object) -> None:
        self.sendLine(json.dumps([number, result]).encode())

    def _failed(self, failure: Failure, number: object) -> None:
        self.sendLine(json.dumps([number, None, failure.getErrorMessage()]).encode())

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class RemoteCounters(LineOnlyReceiver):
    """
    A worker's L{ICounterStore}: asks the main process's; once that is
    gone, counts in this process.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._local: MemoryCounters | None = None
        self._pending: dict[int, tuple[Deferred[Any], IDelayedCall]] = {}
        self._next = 0

    def hit(self, key: str, amount: int, ttl: float) -> Deferred[int]:
        return self._ask("hit", key, amount, ttl)

    def count(self, key: str) -> Deferred[int]:
        return self._ask("count", key)

    def blockUntil(self, key: str, until: float) -> Deferred[None]:
        return self._ask("blockUntil", key, until)

    def blockedUntil(self, key: str) -> Deferred[float | None]:
        return self._ask("blockedUntil", key)

    def forget(self, key: str) -> Deferred[None]:
        return self._ask("forget", key)

    def _ask(self, method: str, *arguments: object) -> Deferred[Any]:
        if self._local is not None or self.transport is None:
            return maybeDeferred(getattr(self._fallBack("not connected"), method), *arguments)
        self._next += 1
        number = self._next
        answer: Deferred[Any] = Deferred()
        timeout = self._clock.callLater(ANSWER_TIMEOUT, self._timedOut, number)
        self._pending[number] = (answer, timeout)
        self.sendLine(json.dumps([number, method, *arguments]).encode())
        return answer

    def lineReceived(self, line: bytes) -> None:
        try:
            number, result, *error = json.loads(line)
        except (ValueError, TypeError):
            self._fallBack("the main process sent a bad answer")
            return
        entry = self._pending.pop(number, None)
        if entry is None:
            return
        answer, timeout = entry
        timeout.cancel()
        if error:
            answer.errback(CounterStoreUnavailable(str(error[0])))
        else:
            answer.callback(result)

    def _timedOut(self, number: int) -> None:
        entry = self._pending.pop(number, None)
        if entry is not None:
            entry[0].errback(CounterStoreUnavailable("the main process did not answer"))
            self._fallBack("the main process did not answer in time")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._fallBack("the main process closed the connection")

    def _fallBack(self, why: str) -> MemoryCounters:
        """
        Count in this process from now on (warned once); requests still
        waiting fail, so their logins go on unthrottled once.
        """
        if self._local is None:
            log.warn("shared login counters unavailable ({why}): counting in this worker", why=why)
            self._local = MemoryCounters(self._clock)
            if self.transport is not None:
                self.transport.loseConnection()
        pending, self._pending = self._pending, {}
        for answer, timeout in pending.values():
            if timeout.active():
                timeout.cancel()
            answer.errback(CounterStoreUnavailable(why))
        return self._local
