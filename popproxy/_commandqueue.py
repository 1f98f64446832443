"""
A client's command lines waiting for their turn: L{CommandQueue} frames
what the client sends (L{CommandFramer}: CRLF only, bounded lines) and holds
the lines until the session takes them, one at a time.  Pipelined commands
wait here; when too many wait, it stops reading the client, and reads again
once the session has caught up.  It is given the callables that pause and
resume reading, never the transport.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from popproxy._framing import CommandFramer, CommandLine

#: Pipelined command lines held before the proxy stops reading the client.
MAX_QUEUED = 64


class CommandQueue:
    """
    The framed command lines a session has not run yet.

    @ivar framer: frames the client's bytes (its C{maxLine} grows during a
        SASL exchange).
    """

    def __init__(
        self,
        pauseReading: Callable[[], None],
        resumeReading: Callable[[], None],
        limit: int = MAX_QUEUED,
    ) -> None:
        self.framer = CommandFramer()
        self._lines: deque[CommandLine] = deque()
        self._pauseReading = pauseReading
        self._resumeReading = resumeReading
        self._limit = limit
        self._readingPaused = False

    def feed(self, data: bytes) -> int:
        """
        Queue the complete lines in C{data}; pause reading the client when
        more than the limit wait.  Return how many lines C{data} completed.

        @raise popproxy._framing.FramingError: the client sent a line too
            long to be a command.
        """
        lines = self.framer.feed(data)
        self._lines.extend(lines)
        if len(self._lines) > self._limit and not self._readingPaused:
            self._readingPaused = True
            self._pauseReading()
        return len(lines)

    @property
    def partial(self) -> bool:
        """
        Whether the start of a line has arrived without its end.
        """
        return self.framer.buffered > 0

    def __bool__(self) -> bool:
        return bool(self._lines)

    def take(self) -> CommandLine:
        """
        The next command line (the queue must not be empty).
        """
        return self._lines.popleft()

    def limitLine(self, maxLine: int) -> None:
        """
        The longest line the client may send next (a SASL response may be
        longer than a command).
        """
        self.framer.maxLine = maxLine

    def caughtUp(self) -> None:
        """
        The session has taken what it can for now: read the client again
        if reading was paused and half the queue has gone.
        """
        if self._readingPaused and len(self._lines) < self._limit // 2:
            self._readingPaused = False
            self._resumeReading()

    def clear(self) -> None:
        """
        Forget the lines waiting (the session is ending, or entering UPDATE).
        """
        self._lines.clear()

    def restart(self) -> None:
        """
        Forget the lines waiting and any partial line (STLS: what the
        client said before TLS is not acted on).
        """
        self._lines.clear()
        self.framer.reset()
