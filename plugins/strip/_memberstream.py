"""
An archive member read as a seekable file within a budget: what lets
C{zipfile} open a member archive without it being held whole, and the
count of every octet inflated out of an attachment's archives, which stops
the reading once it is over the limit.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

#: How much of a member is inflated at a time while looking for its end or
#: skipping to a place in it.
_CHUNK_BYTES = 64 * 1024


class Refused(Exception):
    """
    A limit was reached while reading an attachment's archives: the
    attachment is removed, whatever C{unreadable} says.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Uninspectable(Exception):
    """
    A member archive cannot be read as a stream: C{unreadable} decides.
    """


@dataclass
class Budget:
    """
    What opening one attachment's archives has cost so far: the members
    listed, the inflated sizes their headers declare, and the octets
    actually read out of members (each time they are read).
    """

    members: int = 0
    declared: int = 0
    inflated: int = 0

    def spend(self, octets: int, limit: int) -> None:
        """
        Count C{octets} read out of a member; stop everything once more
        than C{limit} have been.
        """
        self.inflated += octets
        if self.inflated > limit:
            raise Refused(f"archive inflating to more than {limit} bytes")


class MemberStream(io.RawIOBase):
    """
    An archive member read as a seekable file, so that C{zipfile} can open
    the archive it holds without it being held whole.

    Reads going forward come from one inflating stream.  Once the end has
    been reached, the last C{keep} octets are kept and reads there are
    answered from them.  Going back before them opens the member afresh
    and inflates it again up to the place asked for.  Every octet taken
    from the inflating stream is counted in the budget, so going back is
    paid for like the first reading.
    """

    def __init__(
        self,
        open: Callable[[], IO[bytes]],
        budget: Budget,
        limit: int,
        keep: int,
    ) -> None:
        super().__init__()
        self._open = open
        self._budget = budget
        self._limit = limit
        self._keep = keep
        self._stream: IO[bytes] | None = None
        self._streamAt = 0
        self._at = 0
        self._size: int | None = None
        self._recent: deque[bytes] = deque()
        self._recentSize = 0
        #: The member's last C{keep} octets, once its end has been reached.
        self.tail = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._end()
        elif whence == io.SEEK_CUR:
            offset += self._at
        if offset < 0:
            raise OSError("seek before the start of an archive member")
        self._at = offset
        return offset

    def read(self, size: int | None = -1) -> bytes:
        end = self._end() if size is None or size < 0 else self._at + size
        if self._size is not None:
            end = min(end, self._size)
            tailStart = self._size - len(self.tail)
            if self._at >= tailStart:
                data = self.tail[self._at - tailStart : max(end, self._at) - tailStart]
                self._at += len(data)
                return data
        if end - self._at > self._keep:
            raise Uninspectable(f"a read of {end - self._at} octets")
        if self._at < self._streamAt:
            self._rewind()
        while self._streamAt < self._at:
            if not self._pull(min(_CHUNK_BYTES, self._at - self._streamAt)):
                return b""
        data = self._pull(end - self._at) if end > self._at else b""
        self._at += len(data)
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()

    def _end(self) -> int:
        """
        The member's size, inflating it to its end the first time.
        """
        while self._size is None:
            self._pull(_CHUNK_BYTES)
        return self._size

    def _pull(self, count: int) -> bytes:
        if self._stream is None:
            self._stream = self._open()
        data = self._stream.read(count)
        self._budget.spend(len(data), self._limit)
        self._streamAt += len(data)
        if self._size is None:
            # Not yet at the end: every octet so far was read in order
            # from the start; keep the last ones.
            self._recent.append(data)
            self._recentSize += len(data)
            while self._recentSize - len(self._recent[0]) >= self._keep:
                self._recentSize -= len(self._recent.popleft())
            if len(data) < count:
                self._size = self._streamAt
                tail = b"".join(self._recent)
                self.tail = tail[-self._keep :] if len(tail) > self._keep else tail
                self._recent.clear()
        return data

    def _rewind(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._streamAt = 0
        if self._size is None:
            self._recent.clear()
            self._recentSize = 0
