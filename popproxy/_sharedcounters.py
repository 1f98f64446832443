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

The same pair carries the sessions per client network
(L{ISessionLedger}: C{enter}, C{hold}, C{leave}), so C{[limits]
max_sessions_per_address} and C{connection_rate} hold for all N processes
too.  The main process remembers which sessions each worker holds and
drops them when the worker's end of the pair closes: a worker that dies
(even by SIGKILL) leaves no session counted.

The same pair carries what the worker did, for the console in the main
process (L{popproxy._activity}): each message's filter verdicts and
times (C{filtered}) and each login block (C{blocked}), told without
waiting, handed to the main process's L{ActivityWatch}.

The main process asks over the same pair too: C{["?", id, "sessions"]}
gets the worker's open sessions (L{popproxy._sessionregistry}), answered
C{["!", id, [snapshot fields...], more]}, for the console's list of the
sessions open now: in lines of at most L{SNAPSHOTS_PER_LINE} sessions,
C{more} true on every line but the last (one line for all would outgrow
the line limit with some sixty sessions, and the main process would
hang up on its worker).

A worker that loses the main process (or gets no answer within
L{ANSWER_TIMEOUT}) counts in its own L{MemoryCounters} from then on, with
one warning: logins go on, limited per process, and so do admissions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from popproxy._activity import ActivityWatch, FilterRun, LoginBlock
from popproxy._addresscounts import AddressLimits
from popproxy._counterstore import CounterStoreUnavailable, ICounterStore
from popproxy._memorycounters import MemoryCounters
from popproxy._sessionledger import ISessionLedger
from popproxy._sessionrecord import SessionSnapshot

#: Seconds a worker waits for the main process's answer.
ANSWER_TIMEOUT = 2.0

#: The store's methods a worker may call, with their argument counts.
_METHODS = {"hit": 3, "count": 1, "blockUntil": 2, "blockedUntil": 1, "forget": 1}

#: The session ledger's methods, with their argument counts.
_LEDGER_METHODS = {"enter": 5, "hold": 2, "leave": 2}

#: What workers tell of their work, with argument counts.
_ACTIVITY_METHODS = {"filtered": 1, "blocked": 4}

log = Logger(namespace="popproxy.counters")


#: Sessions told per line of an answer to C{["?", id, "sessions"]}
#: (a snapshot is some 100 to 300 octets: well within the line limit).
SNAPSHOTS_PER_LINE = 20


class CounterServer(LineOnlyReceiver):
    """
    The main process's end of one worker's socket pair: answers its
    requests from C{store}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(
        self,
        store: ICounterStore,
        ledger: ISessionLedger | None = None,
        watch: ActivityWatch | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param ledger: the sessions per client network the workers share
            (C{None}: none; their requests are answered with an error).
        @param watch: where the workers' activity goes (C{None}: nowhere).
        @param clock: times the questions to the worker (C{None}: none asked).
        """
        self._store = store
        self._ledger = ledger
        self._watch = watch
        self._clock = clock
        self._asked = 0
        self._questions: dict[int, Deferred[tuple[SessionSnapshot, ...]]] = {}
        #: The sessions told so far, by question, until its last line.
        self._told: dict[int, list[SessionSnapshot]] = {}
        #: The sessions this worker holds in the ledger: lease -> network.
        self._leases: dict[str, str] = {}

    def askSessions(self) -> Deferred[tuple[SessionSnapshot, ...]]:
        """
        The worker's open sessions (fails after L{ANSWER_TIMEOUT} or when
        the worker is gone).
        """
        if not self.connected or self._clock is None:
            return fail(CounterStoreUnavailable("the worker is not connected"))
        self._asked += 1
        answer: Deferred[tuple[SessionSnapshot, ...]] = Deferred()
        answer.addTimeout(ANSWER_TIMEOUT, self._clock)
        self._questions[self._asked] = answer
        answer.addBoth(self._forget, self._asked)
        self.sendLine(json.dumps(["?", self._asked, "sessions"]).encode())
        return answer

    def _forget(self, result: object, number: int) -> object:
        self._questions.pop(number, None)
        self._told.pop(number, None)
        return result

    def _answered(self, number: int, fields: list[list[Any]], more: bool) -> None:
        """
        One line of a worker's sessions; the question is answered with the
        whole list at its last line.
        """
        if number not in self._questions:
            return
        self._told.setdefault(number, []).extend(snapshotFrom(entry) for entry in fields)
        if not more:
            answer = self._questions.pop(number)
            answer.callback(tuple(self._told.pop(number)))

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if request[:1] == ["!"] and len(request) == 4:
                self._answered(int(request[1]), request[2], bool(request[3]))
                return
            number, method, *arguments = request
            if (_LEDGER_METHODS | _ACTIVITY_METHODS).get(method) == len(arguments):
                call = getattr(self, f"_{method}")
            elif _METHODS.get(method) == len(arguments):
                call = getattr(self._store, method)
            else:
                raise ValueError(f"unknown request {method!r}")
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

    def _ledgerOrFail(self) -> ISessionLedger:
        if self._ledger is None:
            raise CounterStoreUnavailable("the main process shares no session counts")
        return self._ledger

    def _enter(
        self, key: str, lease: str, perAddress: int, rate: int, interval: float
    ) -> Deferred[str | None]:
        limits = AddressLimits(int(perAddress), int(rate), float(interval))
        answer = self._ledgerOrFail().enter(str(key), str(lease), limits)
        return answer.addCallback(self._entered, str(key), str(lease))

    def _entered(self, reason: str | None, key: str, lease: str) -> str | None:
        if reason is None:
            self._leases[lease] = key
        return reason

    def _hold(self, key: str, lease: str) -> None:
        if lease not in self._leases:
            self._ledgerOrFail().hold(str(key), str(lease))
            self._leases[str(lease)] = str(key)

    def _leave(self, key: str, lease: str) -> None:
        held = self._leases.pop(lease, None)
        if held is not None and self._ledger is not None:
            self._ledger.leave(held, lease)

    def _filtered(self, runs: list[list[Any]]) -> None:
        if self._watch is not None:
            self._watch.filtersRan(
                tuple(FilterRun(str(name), str(verdict), float(s)) for name, verdict, s in runs)
            )

    def _blocked(self, client: str, account: str, at: float, until: float) -> None:
        if self._watch is not None:
            self._watch.loginBlocked(LoginBlock(str(client), str(account), float(at), float(until)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The worker is gone: its sessions no longer count, and questions to
        it have no answer.
        """
        self.connected = False
        questions, self._questions = self._questions, {}
        for answer in questions.values():
            answer.errback(CounterStoreUnavailable("the worker is gone"))
        leases, self._leases = self._leases, {}
        if self._ledger is not None:
            for lease, key in leases.items():
                self._ledger.leave(key, lease)


class RemoteCounters(LineOnlyReceiver):
    """
    A worker's L{ICounterStore}: asks the main process's; once that is
    gone, counts in this process.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(
        self,
        clock: IReactorTime,
        sessions: Callable[[], tuple[SessionSnapshot, ...]] = tuple,
    ) -> None:
        """
        @param sessions: this worker's open sessions, for the main
            process's questions.
        """
        self._clock = clock
        self._sessions = sessions
        self._local: MemoryCounters | None = None
        self._pending: dict[int, tuple[Deferred[Any], IDelayedCall]] = {}
        self._next = 0
        self._stopping = False

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

    def enter(self, key: str, lease: str, limits: AddressLimits) -> Deferred[str | None]:
        if self._local is not None:
            return fail(CounterStoreUnavailable("the main process is gone"))
        return self._ask(
            "enter", key, lease, limits.perAddress, limits.connectionRate, limits.rateInterval
        )

    def hold(self, key: str, lease: str) -> None:
        self._tell("hold", key, lease)

    def leave(self, key: str, lease: str) -> None:
        self._tell("leave", key, lease)

    def filtersRan(self, runs: tuple[FilterRun, ...]) -> None:
        """
        Tell the main process of one message's filter answers.
        """
        self._tell("filtered", [[run.name, run.verdict, run.seconds] for run in runs])

    def loginBlocked(self, block: LoginBlock) -> None:
        """
        Tell the main process of a login block.
        """
        self._tell("blocked", block.client, block.account, block.at, block.until)

    def activityWatch(self) -> ActivityWatch:
        """
        This worker's activity, told to the main process.
        """
        return ActivityWatch(self.filtersRan, self.loginBlocked)

    def _tell(self, method: str, *arguments: object) -> None:
        """
        Ask without waiting for the answer (nothing to do once the main
        process is gone: it has dropped this worker's sessions).
        """
        if self._local is None and self.transport is not None:
            self._ask(method, *arguments).addErrback(lambda _: None)

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
            if number == "?" and error == ["sessions"]:
                self._tellSessions(result)
                return
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

    def _tellSessions(self, number: object) -> None:
        snapshots = [dataclasses.astuple(snapshot) for snapshot in self._sessions()]
        # One line at least: no sessions is an answer too.
        for start in range(0, max(len(snapshots), 1), SNAPSHOTS_PER_LINE):
            end = start + SNAPSHOTS_PER_LINE
            more = end < len(snapshots)
            self.sendLine(json.dumps(["!", number, snapshots[start:end], more]).encode())

    def _timedOut(self, number: int) -> None:
        entry = self._pending.pop(number, None)
        if entry is not None:
            entry[0].errback(CounterStoreUnavailable("the main process did not answer"))
            self._fallBack("the main process did not answer in time")

    def stopping(self) -> None:
        """
        This worker is ending (its reactor shuts down, or it retires): the
        close of the connection that follows is its own doing, not the
        main process going away, so it is not warned about.
        """
        self._stopping = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Either way the sessions left (when stopping: those finishing
        # their last commands) count in this process from now on.
        if self._stopping:
            self._fallBack("the worker is stopping")
        else:
            self._fallBack("the main process closed the connection")

    def _fallBack(self, why: str) -> MemoryCounters:
        """
        Count in this process from now on (warned once); requests still
        waiting fail, so their logins go on unthrottled once.
        """
        if self._local is None:
            if not self._stopping:
                log.warn(
                    "shared login counters unavailable ({why}): counting in this worker", why=why
                )
            self._local = MemoryCounters(self._clock)
            if self.transport is not None:
                self.transport.loseConnection()
        self._failPending(why)
        return self._local

    def _failPending(self, why: str) -> None:
        """
        Fail every request still waiting for an answer.
        """
        pending, self._pending = self._pending, {}
        for answer, timeout in pending.values():
            if timeout.active():
                timeout.cancel()
            answer.errback(CounterStoreUnavailable(why))


def snapshotFrom(fields: list[Any]) -> SessionSnapshot:
    """
    A worker's session snapshot from its fields as sent (types checked).

    @raise ValueError: they are not a snapshot's.
    """
    session, listener, client, user, upstream, since, commands, bytesIn, bytesOut = fields
    texts = (session, listener, client)
    optional = (user, upstream)
    numbers = (commands, bytesIn, bytesOut)
    if not all(isinstance(text, str) for text in texts) or not all(
        value is None or isinstance(value, str) for value in optional
    ):
        raise ValueError("a session snapshot's texts are not texts")
    if not isinstance(since, int | float) or not all(isinstance(n, int) for n in numbers):
        raise ValueError("a session snapshot's numbers are not numbers")
    return SessionSnapshot(
        session, listener, client, user, upstream, float(since), commands, bytesIn, bytesOut
    )
