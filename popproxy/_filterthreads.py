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
replaced so the pool keeps its size).
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
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
    """

    log = Logger()

    def __init__(
        self,
        callFromThread: Callable[..., Any],
        clock: IReactorTime,
        size: int = SIZE,
        grace: float = GRACE,
    ) -> None:
        self._callFromThread = callFromThread
        self._clock = clock
        self._size = size
        self._grace = grace
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Call] = deque()
        self._threads: dict[int, _Call | None] = {}
        self._idle = 0
        self._stopping = False
        self._local = threading.local()
        #: Threads written off: their work ignored its interruption.
        self.lost = 0

    def run(self, function: Callable[[], T]) -> Deferred[T]:
        """
        Run C{function} in a pool thread; cancelling the Deferred stops it.

        Called from a pool thread (work that offloads more work), the
        function runs at once in that thread: it is already off the reactor
        and under its caller's time limit.
        """
        if getattr(self._local, "inPool", False):
            return _runHere(function)
        call = _Call(function)
        call.pool = self
        with self._lock:
            if self._stopping:
                raise RuntimeError("the filter threads are stopped")
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

    def _writeOffIfStuck(self, call: _Call) -> None:
        with self._lock:
            if call.state != _RUNNING or call.thread is None:
                return
            # The thread leaves the pool; it ends by itself if its work ever
            # returns.  A new thread takes its place.
            self._threads.pop(call.thread, None)
            self.lost += 1
            if self._queue and self._idle == 0:
                self._startThread()
        self.log.error(
            "filter work ignored its interruption for {grace} s: its thread is given up"
            " and still uses the CPU ({lost} so far)",
            grace=self._grace,
            lost=self.lost,
        )
