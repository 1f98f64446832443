"""
Tests for popproxy._mailboxview: UIDs, sizes as delivered, deletions, the
byte-budgeted cache and the LIST/STAT rewriting, with no session around.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from popproxy._mailboxview import (
    MAX_LISTING_OCTETS,
    MAX_REMEMBERED_UIDS,
    MAX_UID,
    MailboxView,
)


@dataclass(frozen=True)
class Entry:
    """
    A cache entry of a given footprint.
    """

    footprint: int
    name: str = ""


def view(cacheBytes: int = 1000) -> MailboxView[Entry]:
    return MailboxView(cacheBytes)


class TestUids:
    def test_answerAndListingAreNoted(self) -> None:
        """
        The UID in a C{+OK n uid} answer and the C{n uid} lines of a
        listing are remembered by message number.
        """
        v = view()
        v.noteUidAnswer(b"+OK 3 abc")
        v.noteUidListing(b"1 one\r\n2 two\r\n")
        assert (v.uidOf(1), v.uidOf(2), v.uidOf(3), v.uidOf(4)) == ("one", "two", "abc", None)

    def test_malformedPairsAreIgnored(self) -> None:
        """
        Lines that are not exactly C{number uid}, non-numeric numbers,
        empty UIDs and UIDs over 70 octets are not remembered.
        """
        v = view()
        v.noteUidAnswer(b"+OK 4")
        v.noteUidAnswer(b"+OK 5 a b")
        v.noteUidListing(b"x one\r\n6 \r\n7 a b\r\n8 " + b"u" * (MAX_UID + 1) + b"\r\n")
        v.noteUid(b"9", b"u" * MAX_UID)
        assert [v.uidOf(n) for n in range(4, 9)] == [None] * 5
        assert v.uidOf(9) == "u" * MAX_UID

    def test_atMostSoManyUids(self) -> None:
        """
        No more than L{MAX_REMEMBERED_UIDS} UIDs are kept, and a listing of
        that many fits L{MAX_LISTING_OCTETS}.
        """
        v = view()
        listing = b"".join(b"%d %s\r\n" % (n, b"u" * MAX_UID) for n in range(1, 20_002))
        v.noteUidListing(listing)
        assert v.uidOf(MAX_REMEMBERED_UIDS) is not None
        assert v.uidOf(MAX_REMEMBERED_UIDS + 1) is None
        assert len(b"%d %s\r\n" % (MAX_REMEMBERED_UIDS, b"u" * MAX_UID)) <= 80
        assert MAX_LISTING_OCTETS == MAX_REMEMBERED_UIDS * 80

    def test_nonAsciiUidIsReplaced(self) -> None:
        """
        UIDs are kept as text; octets outside ASCII become U+FFFD.
        """
        v = view()
        v.noteUid(b"1", b"a\xffb")
        assert v.uidOf(1) == "a\ufffdb"

    def test_onlyTheSecondLookupAsksForTheWholeListing(self) -> None:
        """
        The first unknown UID is looked up alone, the second with the whole
        listing, later ones alone again.
        """
        v = view()
        assert [v.lookupWholeListing() for _ in range(4)] == [False, True, False, False]


class TestCache:
    def test_rememberedEntryIsServed(self) -> None:
        """
        A remembered entry is returned for its message number only.
        """
        v = view()
        entry = Entry(10)
        v.remember(1, entry, 10, 8)
        assert v.cached(1) is entry and v.cached(2) is None
        assert v.cachedIndexes == (1,) and v.cachedBytes == 10

    def test_oldestAreDroppedBeyondTheBudget(self) -> None:
        """
        Entries beyond the budget push out the oldest ones.
        """
        v = view(25)
        for index in (1, 2, 3):
            v.remember(index, Entry(10), 10, 10)
        assert v.cachedIndexes == (2, 3) and v.cachedBytes == 20

    def test_entryOverTheBudgetIsNotKeptButItsSizeIs(self) -> None:
        """
        An entry larger than the whole budget is not cached (nothing is
        dropped for it), but its size is still reported.
        """
        v = view(25)
        v.remember(1, Entry(10), 10, 10)
        v.remember(2, Entry(26), 26, 20)
        assert v.cachedIndexes == (1,) and v.sizeOf(2) == 26

    def test_replacingAnEntryCountsItOnce(self) -> None:
        """
        Remembering a message number again replaces its entry and its size.
        """
        v = view()
        v.remember(1, Entry(10, "old"), 10, 8)
        v.remember(1, Entry(12, "new"), 12, 8)
        assert v.cached(1) == Entry(12, "new") and v.cachedBytes == 12 and v.sizeOf(1) == 12

    def test_clearDropsEverything(self) -> None:
        """
        A cleared view holds no entries, sizes or UIDs.
        """
        v = view()
        v.remember(1, Entry(10), 10, 8)
        v.noteUid(b"1", b"a")
        v.clear()
        assert v.cachedIndexes == () and v.cachedBytes == 0
        assert not v.rewritesListings and v.sizeOf(1) is None and v.uidOf(1) is None

    def test_peakIsTheMostHeldAtOnceAndOutlivesClear(self) -> None:
        """
        The peak is the most the kept entries held at once (after dropping
        the oldest for a newer one), and clearing the view keeps it, so a
        closing session can still report it.
        """
        v = view(25)
        v.remember(1, Entry(10), 10, 10)
        v.remember(2, Entry(12), 12, 12)
        v.remember(3, Entry(8), 8, 8)
        assert v.cachedBytes == 20 and v.peakCachedBytes == 22 and v.cacheBudget == 25
        v.clear()
        assert v.cachedBytes == 0 and v.peakCachedBytes == 22

    @given(
        st.integers(0, 200),
        st.lists(st.tuples(st.integers(1, 8), st.integers(0, 120)), max_size=40),
    )
    def test_cacheNeverExceedsItsBudget(self, budget: int, steps: list[tuple[int, int]]) -> None:
        """
        Whatever is remembered, the kept entries never hold more than the
        budget, the running total is their exact sum, and the latest entry
        is kept whenever it fits the budget on its own.
        """
        v = view(budget)
        for index, footprint in steps:
            v.remember(index, Entry(footprint), footprint, footprint)
            kept = [v.cached(n) for n in v.cachedIndexes]
            assert v.cachedBytes == sum(e.footprint for e in kept if e is not None)
            assert v.cachedBytes <= budget
            if footprint <= budget:
                assert v.cachedIndexes[-1] == index


class TestRewriting:
    def test_nothingToRewriteBeforeTheChain(self) -> None:
        """
        Until a message went through the chain, LIST and STAT are relayed.
        """
        assert not view().rewritesListings

    def test_listLineGetsTheDeliveredSize(self) -> None:
        """
        C{+OK n size} reports the size RETR delivers for a filtered message
        and is left alone for others or when malformed.
        """
        v = view()
        v.remember(2, Entry(0), 130, 100)
        assert v.rewritesListings
        assert v.rewriteListLine(b"+OK 2 100") == b"+OK 2 130"
        assert v.rewriteListLine(b"+OK 2 100 extra") == b"+OK 2 130 extra"
        assert v.rewriteListLine(b"+OK 1 100") == b"+OK 1 100"
        assert v.rewriteListLine(b"+OK 2") == b"+OK 2"

    def test_listingGetsTheDeliveredSizes(self) -> None:
        """
        Each C{n size} line of a listing reports the size RETR delivers.
        """
        v = view()
        v.remember(2, Entry(0), 130, 100)
        body = b"1 50\r\n2 100\r\n3 70\r\n"
        assert v.rewriteListing(body) == b"1 50\r\n2 130\r\n3 70\r\n"

    def test_statCountsUndeletedChanges(self) -> None:
        """
        STAT's octets change by what the chain added to or removed from the
        messages not deleted; RSET brings the deleted ones back.
        """
        v = view()
        v.remember(1, Entry(0), 130, 100)
        v.remember(2, Entry(0), 90, 100)
        assert v.rewriteStat(b"+OK 3 300") == b"+OK 3 320"
        v.markDeleted(1)
        assert v.rewriteStat(b"+OK 2 200") == b"+OK 2 190"
        v.reset()
        assert v.rewriteStat(b"+OK 3 300") == b"+OK 3 320"

    def test_statNeverGoesNegativeOrTouchesMalformedLines(self) -> None:
        """
        A STAT total is never reported below zero; an answer without a
        numeric octet count is left alone.
        """
        v = view()
        v.remember(1, Entry(0), 0, 500)
        assert v.rewriteStat(b"+OK 1 100") == b"+OK 1 0"
        assert v.rewriteStat(b"+OK 1 lots") == b"+OK 1 lots"
        assert v.rewriteStat(b"+OK") == b"+OK"

    @given(
        st.dictionaries(st.integers(1, 20), st.integers(0, 10_000), min_size=1),
        st.dictionaries(st.integers(1, 20), st.integers(0, 10_000)),
        st.sets(st.integers(1, 20)),
    )
    def test_reportedSizesAreWhatRetrDelivers(
        self, upstream: dict[int, int], delivered: dict[int, int], deleted: set[int]
    ) -> None:
        """
        For any mailbox, LIST reports the delivered size of every message
        that went through the chain and the upstream's size of the others,
        and STAT's octets are the sum of what LIST reports for the messages
        not deleted.
        """
        v = view()
        for index, size in delivered.items():
            if index in upstream:
                v.remember(index, Entry(0), size, upstream[index])
        for index in deleted:
            v.markDeleted(index)
        live = sorted(set(upstream) - deleted)
        listing = b"".join(b"%d %d\r\n" % (n, upstream[n]) for n in live)
        reported = {
            int(n): int(s)
            for n, s in (line.split(b" ") for line in v.rewriteListing(listing).split(b"\r\n")[:-1])
        }
        expected = {n: delivered.get(n, upstream[n]) for n in live}
        assert reported == expected
        total = sum(upstream[n] for n in live)
        stat = v.rewriteStat(b"+OK %d %d" % (len(live), total))
        assert stat == b"+OK %d %d" % (len(live), sum(expected.values()))
