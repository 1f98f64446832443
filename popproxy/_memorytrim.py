"""
Give the memory that finished sessions freed back to the operating system.

Python frees a session's buffers and messages when it ends, but glibc's
malloc keeps the freed pages of its heap for the next allocation: after a
burst of sessions the idle proxy stayed at more than twice its baseline
(measured: 52 MB idle, 125 MB five seconds after 50 sessions had retrieved
10,000 messages through the chain, almost all of it free space in the
C{[heap]} mapping).  C{malloc_trim(0)} returns those free pages (also the
ones inside the heap, not only its top).  L{MemoryTrimmer} calls it a short
delay after a session ends, at most once per delay, so a busy proxy trims a
few times a second at most and an idle one never.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds between a session's end and the trim (and the least time between
#: two trims).
TRIM_DELAY = 2.0


def glibcTrim() -> Callable[[], object] | None:
    """
    C{malloc_trim(0)} of the C library this process runs on, or C{None}
    where there is none (musl, macOS: their allocators return memory by
    themselves or not at all).
    """
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: function(0)


class MemoryTrimmer:
    """
    Trims the allocator's free memory C{delay} seconds after a session
    ends; sessions ending meanwhile share that one trim.

    @param trim: what releases memory (L{glibcTrim}); C{None} does nothing.
    """

    def __init__(
        self, clock: IReactorTime, trim: Callable[[], object] | None, delay: float = TRIM_DELAY
    ) -> None:
        self._clock = clock
        self._trim = trim
        self._delay = delay
        self._pending: IDelayedCall | None = None
        #: How many times memory was trimmed.
        self.trims = 0

    def sessionClosed(self) -> None:
        """
        A session ended: its memory is free now, trim soon.
        """
        if self._trim is None or self._pending is not None:
            return
        self._pending = self._clock.callLater(self._delay, self._run)

    def _run(self) -> None:
        self._pending = None
        assert self._trim is not None
        self._trim()
        self.trims += 1
