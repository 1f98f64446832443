"""
Splices: how edited bytes are derived from the original, and how a byte
range seen before an edit maps to the bytes after it.

An edit never regenerates anything: it replaces one range of octets with
new octets and leaves every other octet where it was.  The history of
splices lets a part found before some edits still be addressed after them,
or be recognised as gone.
"""

from __future__ import annotations

from dataclasses import dataclass


class RangeGone(Exception):
    """
    The range was replaced or cut by an edit, so it no longer exists.
    """


@dataclass(frozen=True, slots=True)
class Splice:
    """
    C{data[start:end]} was replaced by C{length} new octets; offsets are in
    the bytes as they were before this splice.
    """

    start: int
    end: int
    length: int


def applySplices(data: bytes, edits: list[tuple[int, int, bytes]]) -> tuple[bytes, list[Splice]]:
    """
    Apply non-overlapping edits C{(start, end, replacement)}, all in
    C{data}'s coordinates.

    @return: the new bytes, and the splices as a history: in descending
        order of position, so that each one is expressed in the
        coordinates left by the ones before it.
    """
    ordered = sorted(edits, key=lambda edit: (edit[0], edit[1]))
    pieces: list[bytes] = []
    position = 0
    for start, end, replacement in ordered:
        if start < position:
            raise ValueError("overlapping edits")
        pieces.append(data[position:start])
        pieces.append(replacement)
        position = end
    pieces.append(data[position:])
    history = [Splice(start, end, len(replacement)) for start, end, replacement in ordered]
    history.reverse()
    return b"".join(pieces), history


def translateRange(start: int, end: int, splice: Splice) -> tuple[int, int]:
    """
    Where C{[start, end)} is after C{splice}.

    A range that contains the splice grows or shrinks with it (a part
    whose child was edited).  A pure insertion at either edge of the range
    is inside it (a header added at the top of a message belongs to the
    message).

    @raise RangeGone: the range was the spliced range, lay inside it, or
        overlapped it partly.
    """
    delta = splice.length - (splice.end - splice.start)
    if splice.start == splice.end:
        if start <= splice.start <= end:
            return start, end + delta
        if splice.start < start:
            return start + delta, end + delta
        return start, end
    if end <= splice.start:
        return start, end
    if start >= splice.end:
        return start + delta, end + delta
    if start <= splice.start and splice.end <= end and (start, end) != (splice.start, splice.end):
        return start, end + delta
    raise RangeGone(start, end)
