"""
A few threads that run filter work off the reactor, each call stoppable:
cancelling a call's Deferred raises L{FilterInterrupted} inside the thread
running it, so a filter past its timeout stops using the CPU and its
thread serves the next call.

Python cannot kill a thread, but CPython can raise an exception in one
(C{PyThreadState_SetAsyncExc}): it is raised at the thread's next bytecode,
which stops any pure-Python loop at once.  A call into C code (a regex, a
decoder) is stopped when it returns, which is soon because every parser
the filters use is linear and messages are size-bounded.  Work that
catches L{FilterInterrupted} (a bare C{except:}) and goes on cannot be
stopped: after L{GRACE} seconds its thread is written off (logged, and
replaced so the pool keeps its size).  Written-off threads still use the
CPU, so there may be only so many (by default as many as the pool's
threads): while that many are still running, every new call fails at once
with L{FilterThreadsExhausted}, until one of them ends.

Work in a pool thread must not touch the reactor; L{FilterThreads.inPool}
tells it where it is, and L{FilterThreads.callInReactor} runs a call on
the reactor thread and waits for its result.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

#: Threads in the pool: with the GIL more threads add no CPU, only room
#: for calls of several sessions at once.
SIZE = 4

#: Seconds an interrupted call may take to end before its thread is
#: written off and replaced.
GRACE = 2.0

#: Seconds a pool thread waiting for the reactor thread sleeps between
#: checks, so that an interruption reaches it meanwhile.
_POLL = 0.05

_setAsyncExc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_setAsyncExc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_setAsyncExc.restype = ctypes.c_int
_clearAsyncExc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class FilterInterrupted(BaseException):
    """
    Raised inside filter work whose call was cancelled (its filter ran out
    of time).  A C{BaseException}, so C{except Exception} in a filter does
    not swallow it.
    """


class FilterThreadsExhausted(Exception):
    """
    The pool takes no call: too many of its threads were written off (their
    work ignored its interruption) and are still running.
    """


_QUEUED, _RUNNING, _DONE = "queued", "running", "done"


def _runHere(function: Callable[[], T]) -> Deferred[T]:
    """
    C{function}'s result as a fired Deferred, like C{maybeDeferred} except
    that L{FilterInterrupted} goes on up: caught here, it would let the
    interrupted work carry on.
    """
    try:
        result = function()
    except FilterInterrupted:
        raise
    except BaseException:
        return fail(Failure())
    if isinstance(result, Deferred):
        return result
    return succeed(result)


class _Call:
    """
    One call: its function, its Deferred, and where it is.
    """

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.deferred: Deferred[Any] = Deferred(self._cancelled)
        self.state = _QUEUED
        self.thread: int | None = None
        self.interrupted = False
        self.pool: FilterThreads | None = None

    def _cancelled(self, deferred: Deferred[Any]) -> None:
        assert self.pool is not None
        self.pool._cancel(self)


class FilterThreads:
    """
    Runs callables in up to C{size} daemon threads and hands their results
    to the reactor thread.

    @param callFromThread: hands a call to the reactor thread (the
        reactor's C{callFromThread}).
    @param clock: when to write off a thread that ignores its interruption.
    @param maxLost: how many written-off threads may still be running
        before calls are refused (by default C{size}).
    """

    log = Logger()

    def __init__(
        self,
        callFromThread: Callable[..., Any],
        clock: IReactorTime,
        size: int = SIZE,
        grace: float = GRACE,
        maxLost: int | None = None,
    ) -> None:
        self._callFromThread = callFromThread
        self._clock = clock
        self._size = size
        self._grace = grace
        self._maxLost = size if maxLost is None else maxLost
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Call] = deque()
        self._threads: dict[int, _Call | None] = {}
        self._idle = 0
        self._stopping = False
        self._local = threading.local()
        #: Threads written off: their work ignored its interruption.
        self.lost = 0
        # The written-off threads still running.
        self._lostThreads: set[int] = set()

    @property
    def stillLost(self) -> int:
        """
        How many written-off threads are still running.
        """
        with self._lock:
            return len(self._lostThreads)

    def inPool(self) -> bool:
        """
        Whether the caller runs in one of the pool's threads (where it must
        not touch the reactor).
        """
        return bool(getattr(self._local, "inPool", False))

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        """
        Hand C{function(*args)} to the reactor thread, not waiting for it.
        """
        self._callFromThread(function, *args)

    def callInReactor(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        From a pool thread: call C{function} on the reactor thread and wait
        for its result (the result of the Deferred it returns); its
        exception is raised here.

        Unlike Twisted's C{blockingCallFromThread}, the wait can be
        interrupted: the work waiting stops at its filter's timeout (the
        call itself goes on in the reactor thread).
        """
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def call() -> None:
            maybeDeferred(function, *args, **kwargs).addBoth(results.put)

        self._callFromThread(call)
        while True:
            try:
                result = results.get(timeout=_POLL)
            except queue.Empty:
                self._raiseIfInterrupted()
                continue
            if isinstance(result, Failure):
                result.raiseException()
            return result

    def _raiseIfInterrupted(self) -> None:
        """
        Raise L{FilterInterrupted} in a waiting pool thread whose call was
        cancelled.  The exception sent to the thread is lost when it lands
        in a garbage-collector callback or a C{__del__} (Python only reports
        exceptions raised there), and the wait must end anyway.
        """
        me = threading.get_ident()
        with self._lock:
            call = self._threads.get(me)
            if call is None or not call.interrupted or call.state != _RUNNING:
                return
            # Whether or not it was lost, none is pending after this: the
            # call gets exactly one FilterInterrupted, the one raised here.
            _clearAsyncExc(me, None)
        raise FilterInterrupted()

    def run(self, function: Callable[[], T]) -> Deferred[T]:
        """
        Run C{function} in a pool thread; cancelling the Deferred stops it.

        Called from a pool thread (work that offloads more work), the
        function runs at once in that thread: it is already off the reactor
        and under its caller's time limit.
        """
        if self.inPool():
            return _runHere(function)
        call = _Call(function)
        call.pool = self
        with self._lock:
            if self._stopping:
                raise RuntimeError("the filter threads are stopped")
            if len(self._lostThreads) >= self._maxLost:
                return fail(self._exhausted())
            self._queue.append(call)
            if self._idle == 0 and self._working() < self._size:
                self._startThread()
            self._wake.notify()
        return call.deferred

    def stop(self) -> None:
        """
        Let every thread end once its current call is done.
        """
        with self._lock:
            self._stopping = True
            self._wake.notify_all()

    def _working(self) -> int:
        return len(self._threads)

    def _startThread(self) -> None:
        thread = threading.Thread(target=self._serve, name="popproxy-filter", daemon=True)
        thread.start()
        assert thread.ident is not None
        self._threads[thread.ident] = None

    def _serve(self) -> None:
        self._local.inPool = True
        me = threading.get_ident()
        while True:
            with self._lock:
                self._idle += 1
                while not self._queue and not self._stopping and me in self._threads:
                    self._wake.wait()
                self._idle -= 1
                if self._stopping or me not in self._threads:
                    self._threads.pop(me, None)
                    if me in self._lostThreads:
                        self._lostThreads.discard(me)
                        self._callFromThread(self._lostThreadEnded)
                    return
                call = self._queue.popleft()
                call.state = _RUNNING
                call.thread = me
                self._threads[me] = call
            ok, result = self._perform(call)
            self._callFromThread(self._settle, call, ok, result)

    def _perform(self, call: _Call) -> tuple[bool, Any]:
        # At most one FilterInterrupted is ever sent to a call, and never
        # once it is done (both decided under the lock), so it lands in
        # exactly one of the places below or is cleared by _finish.
        ok: bool = False
        result: Any = None
        try:
            try:
                ok, result = True, call.function()
            except BaseException:
                ok, result = False, Failure()
            self._finish(call)
        except FilterInterrupted:
            # Landed after the work itself: the call was cancelled, so its
            # result would be dropped anyway.
            ok, result = False, Failure(FilterInterrupted())
            self._finish(call)
        return ok, result

    def _finish(self, call: _Call) -> None:
        with self._lock:
            if call.state == _RUNNING:
                call.state = _DONE
                if call.interrupted and call.thread is not None:
                    _clearAsyncExc(call.thread, None)
            if call.thread is not None and self._threads.get(call.thread) is call:
                self._threads[call.thread] = None

    def _settle(self, call: _Call, ok: bool, result: Any) -> None:
        if call.deferred.called:
            return
        if ok:
            call.deferred.callback(result)
        else:
            call.deferred.errback(result)

    def _cancel(self, call: _Call) -> None:
        with self._lock:
            if call.state == _QUEUED:
                self._queue.remove(call)
                call.state = _DONE
                return
            if call.state != _RUNNING or call.interrupted or call.thread is None:
                return
            call.interrupted = True
            _setAsyncExc(call.thread, FilterInterrupted)
        self._clock.callLater(self._grace, self._writeOffIfStuck, call)

    def _exhausted(self) -> FilterThreadsExhausted:
        return FilterThreadsExhausted(
            f"no filter thread: {len(self._lostThreads)} written-off threads whose work"
            " ignored its interruption are still running"
        )

    def _writeOffIfStuck(self, call: _Call) -> None:
        refused: list[_Call] = []
        with self._lock:
            if call.state != _RUNNING or call.thread is None:
                return
            # The thread leaves the pool; it ends by itself if its work ever
            # returns.  A new thread takes its place, unless too many are
            # lost already: then no call is taken, not even those waiting.
            self._threads.pop(call.thread, None)
            self._lostThreads.add(call.thread)
            self.lost += 1
            full = len(self._lostThreads) >= self._maxLost
            if full:
                refused = list(self._queue)
                self._queue.clear()
                for waiting in refused:
                    waiting.state = _DONE
            elif self._queue and self._idle == 0:
                self._startThread()
            stillLost = len(self._lostThreads)
            exhausted = self._exhausted()
        self.log.error(
            "filter work ignored its interruption for {grace} s: its thread is given up"
            " and still uses the CPU ({lost} so far, {stillLost} still running)",
            grace=self._grace,
            lost=self.lost,
            stillLost=stillLost,
        )
        if full:
            self.log.critical(
                "{stillLost} written-off filter threads are still running: every filter"
                " call fails at once (under its filter's on_error policy) until one ends",
                stillLost=stillLost,
            )
        for waiting in refused:
            waiting.deferred.errback(Failure(exhausted))

    def _lostThreadEnded(self) -> None:
        self.log.warn(
            "a written-off filter thread ended: its work returned at last"
            " ({stillLost} still running)",
            stillLost=self.stillLost,
        )
