"""
Tests for popproxy._responserelay: an upstream answer reaches the client
verbatim as it arrives, its status line going out with the first piece of
the body; UIDL answers also leave their UIDs in the session's MailboxView.
"""

from __future__ import annotations

import pytest

from popproxy._framing import StatusLine
from popproxy._mailboxview import MAX_LISTING_OCTETS, MailboxView
from popproxy._responserelay import Relay, UidRecorder
from popproxy._retrievalflow import Filtered


class Client:
    """
    The session's write and command-done steps, recorded.
    """

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.done = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def finished(self) -> None:
        self.done += 1


def test_statusHeldForTheFirstChunk() -> None:
    """
    The status line goes out in one write with the body's first piece;
    later pieces follow verbatim; done is called once, at the end.
    """
    client = Client()
    relay = Relay(client.write, client.finished)
    relay.statusReceived(StatusLine(b"+OK 120 octets"))
    # The state is compared as a tuple: "assert not relay.inBody" would
    # narrow the attribute for mypy, which would then take the later
    # checks for unreachable and skip them.
    assert (client.writes, relay.inBody) == ([], False)
    relay.bodyReceived(b"Subject: x\r\n")
    assert (client.writes, relay.inBody) == ([b"+OK 120 octets\r\nSubject: x\r\n"], True)
    relay.bodyReceived(b"\r\n..dot\r\n.\r\n")
    assert client.writes[1:] == [b"\r\n..dot\r\n.\r\n"]
    assert client.done == 0
    relay.responseFinished()
    assert (client.done, relay.inBody) == (1, False)
    assert b"".join(client.writes) == b"+OK 120 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n"


@pytest.mark.parametrize("line", [b"+OK", b"-ERR no such message", b"+OK 1 2"])
def test_oneLineAnswer(line: bytes) -> None:
    """
    An answer without a body goes out at its end, once, before done.
    """
    order: list[bytes | str] = []
    relay = Relay(order.append, lambda: order.append("done"))
    relay.statusReceived(StatusLine(line))
    relay.responseFinished()
    assert order == [line + b"\r\n", "done"]
    assert not relay.inBody


def test_onStatusSeesTheStatusLine() -> None:
    """
    The optional onStatus step sees each status line as it arrives.
    """
    client = Client()
    seen: list[StatusLine] = []
    relay = Relay(client.write, client.finished, onStatus=seen.append)
    relay.statusReceived(StatusLine(b"-ERR [IN-USE] locked"))
    assert seen == [StatusLine(b"-ERR [IN-USE] locked")]


def recorder(
    listing: bool = True,
) -> tuple[UidRecorder[Filtered], Client, MailboxView[Filtered]]:
    client = Client()
    mailbox: MailboxView[Filtered] = MailboxView(1024)
    return UidRecorder(client.write, client.finished, mailbox, listing), client, mailbox


def test_uidListingNoted() -> None:
    """
    A UIDL listing reaches the client verbatim, however it was split, and
    its UIDs are noted by message number.
    """
    uids, client, mailbox = recorder()
    uids.statusReceived(StatusLine(b"+OK"))
    for piece in (b"1 whq", b"tWG\r\n2 Qh", b"LtZY8\r\n3 x-y_z\r\n.\r\n"):
        uids.bodyReceived(piece)
    uids.responseFinished()
    assert b"".join(client.writes) == b"+OK\r\n1 whqtWG\r\n2 QhLtZY8\r\n3 x-y_z\r\n.\r\n"
    assert client.done == 1
    assert [mailbox.uidOf(n) for n in (1, 2, 3, 4)] == ["whqtWG", "QhLtZY8", "x-y_z", None]


def test_uidAnswerNoted() -> None:
    """
    The answer to UIDL n (+OK n uid) names one message's UID.
    """
    uids, client, mailbox = recorder(listing=False)
    uids.statusReceived(StatusLine(b"+OK 2 QhLtZY8"))
    uids.responseFinished()
    assert client.writes == [b"+OK 2 QhLtZY8\r\n"]
    assert mailbox.uidOf(2) == "QhLtZY8"


def test_refusedUidlNotesNothing() -> None:
    """
    A -ERR answer is relayed and names no UID, whatever its words.
    """
    uids, client, mailbox = recorder(listing=False)
    uids.statusReceived(StatusLine(b"-ERR 2 deleted"))
    uids.responseFinished()
    assert client.writes == [b"-ERR 2 deleted\r\n"]
    assert mailbox.uidOf(2) is None


def test_oversizeListingRelayedNotNoted() -> None:
    """
    A listing bigger than the bound is still relayed whole, but none of
    its UIDs are kept (the memory it would take is bounded).
    """
    uids, client, mailbox = recorder()
    line = b"1 " + b"u" * 68 + b"\r\n"
    count = MAX_LISTING_OCTETS // len(line) + 1
    uids.statusReceived(StatusLine(b"+OK"))
    for _ in range(count):
        uids.bodyReceived(line)
    uids.bodyReceived(b".\r\n")
    uids.responseFinished()
    assert sum(map(len, client.writes)) == len(b"+OK\r\n") + count * len(line) + 3
    assert mailbox.uidOf(1) is None
    assert client.done == 1


def test_listingStatusNamesNoUid() -> None:
    """
    The status line of a whole UIDL listing names no message, even when
    it reads like "+OK n word" (here message 2 was deleted, so the listing
    does not correct it).
    """
    uids, client, mailbox = recorder()
    uids.statusReceived(StatusLine(b"+OK 2 messages"))
    uids.bodyReceived(b"1 whqtWG\r\n3 x-y_z\r\n.\r\n")
    uids.responseFinished()
    assert mailbox.uidOf(2) is None
