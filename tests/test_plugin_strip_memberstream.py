"""
An archive member read as a seekable stream within a budget
(plugins/strip/_memberstream.py): any seeks and reads give the octets the
member holds, every octet inflated is counted, and the budget stops the
reading once it is over its limit.
"""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strip._memberstream import Budget, MemberStream, Refused, Uninspectable


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 300_000),
    st.integers(0, 2**32 - 1),
    st.sampled_from([16, 1000, 70_000, 1 << 20]),
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2]), st.integers(-400_000, 400_000), st.integers(-1, 90_000)
        ),
        max_size=12,
    ),
)
def test_memberStreamReadsLikeAFile(
    size: int, seed: int, keep: int, operations: list[tuple[int, int, int]]
) -> None:
    """
    A member stream answers any sequence of seeks and reads with the same
    octets as the member held in memory would, whatever it keeps of its
    end; and every octet it hands out was counted in the budget.
    """
    data = random.Random(seed).randbytes(size)
    budget = Budget()
    stream = MemberStream(lambda: io.BytesIO(data), budget, 1 << 40, keep=keep)
    reference = io.BytesIO(data)
    furthest = 0
    for whence, offset, count in operations:
        target = offset + (0, reference.tell(), size)[whence]
        if target < 0:
            with pytest.raises(OSError):
                stream.seek(offset, whence)
            continue
        assert stream.seek(offset, whence) == target
        reference.seek(target)
        if count > keep or (count < 0 and size - target > keep):
            continue  # more than a stream hands out at once (zipfile never asks)
        octets = stream.read(count)
        assert octets == reference.read(count)
        assert stream.tell() == reference.tell()
        if octets:
            furthest = max(furthest, stream.tell())
    assert budget.inflated >= furthest


def test_budgetRefusesPastItsLimit() -> None:
    """
    The budget adds up what is read and stops the inspection, naming the
    limit, as soon as the total is over it (not when it reaches it).
    """
    budget = Budget()
    budget.spend(60, 100)
    budget.spend(40, 100)
    assert budget.inflated == 100
    with pytest.raises(Refused) as raised:
        budget.spend(1, 100)
    assert raised.value.reason == "archive inflating to more than 100 bytes"


def test_streamRefusesWhenItsReadsExceedTheBudget() -> None:
    """
    A stream over a member bigger than the budget's limit stops with
    L{Refused} while it is read to its end: what was read is counted, not
    what the member declares.
    """
    budget = Budget()
    stream = MemberStream(lambda: io.BytesIO(bytes(300_000)), budget, 100_000, keep=1000)
    with pytest.raises(Refused):
        stream.seek(0, io.SEEK_END)
    assert budget.inflated > 100_000


def test_readLargerThanWhatIsKeptIsUninspectable() -> None:
    """
    One read of more octets than the stream keeps of its end cannot be
    answered without holding them: L{Uninspectable}, before anything is
    inflated.
    """
    budget = Budget()
    stream = MemberStream(lambda: io.BytesIO(bytes(5000)), budget, 1 << 40, keep=100)
    with pytest.raises(Uninspectable):
        stream.read(101)
    assert budget.inflated == 0
