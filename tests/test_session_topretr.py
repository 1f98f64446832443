"""
Protocol tests for TOP and RETR of the same message in one session, in
every order a client may use, under both C{[chain] top} modes (issue #11):
with C{top = "full"} TOP is filtered exactly as RETR is (the whole message,
not partial) and shows RETR's header block byte for byte; with
C{top = "partial"} a partial result never reaches a later RETR, LIST or
STAT.  What RETR delivers is always what a fresh session's RETR delivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed

from popproxy._framing import stuff
from popproxy._retrievalflow import topOf
from popproxy.interfaces import FilterContext
from tests.sessionharness import Harness

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

#: The upstream's mailbox: message numbers to messages.
MAILBOX = {
    1: b"From: a@example.com\r\nSubject: hello\r\n\r\n"
    + b"".join(b"line %d\r\n" % n for n in range(1, 9))
    + b".dot line\r\n",
    2: b"From: b@example.com\r\nSubject: test\r\n\r\n" + GTUBE + b"\r\n",
    3: b"From: c@example.com\r\nSubject: folded\r\n\tsecond part\r\n\r\n.\r\nlast\r\n",
}
UIDS = {1: b"uid-a", 2: b"uid-b", 3: b"uid-c"}
MODES = ("full", "partial")


@dataclass
class StampingHook:
    """
    A chain that behaves as the shipped scan and tag do towards partial
    messages: a partial one is stamped unchecked and never tagged; a whole
    one is stamped clean and GTUBE gets a subject tag.
    """

    active = True
    seen: list[tuple[FilterContext, bytes]] = field(default_factory=list)

    def processMessage(self, context: FilterContext, message: bytes) -> Deferred[bytes]:
        self.seen.append((context, message))
        if context.partial:
            return succeed(b"X-Checked: unchecked (partial message)\r\n" + message)
        out = b"X-Checked: clean\r\n" + message
        if GTUBE in message:
            out = out.replace(b"Subject: ", b"Subject: [SPAM] ", 1)
        return succeed(out)


def answer(request: bytes) -> bytes:
    """
    The upstream's response to one command line (without its CRLF).
    """
    verb, *arguments = request.split(b" ")
    numbers = [int(argument) for argument in arguments]
    if verb == b"UIDL" and numbers:
        return b"+OK %d %s\r\n" % (numbers[0], UIDS[numbers[0]])
    if verb == b"UIDL":
        return b"+OK\r\n" + b"".join(b"%d %s\r\n" % item for item in UIDS.items()) + b".\r\n"
    if verb == b"LIST" and numbers:
        return b"+OK %d %d\r\n" % (numbers[0], len(MAILBOX[numbers[0]]))
    if verb == b"LIST":
        lines = b"".join(b"%d %d\r\n" % (n, len(m)) for n, m in MAILBOX.items())
        return b"+OK %d messages\r\n" % len(MAILBOX) + lines + b".\r\n"
    if verb == b"STAT":
        return b"+OK %d %d\r\n" % (len(MAILBOX), sum(map(len, MAILBOX.values())))
    if verb == b"RETR":
        message = MAILBOX[numbers[0]]
        return b"+OK %d octets\r\n" % len(message) + stuff(message)
    if verb == b"TOP":
        return b"+OK\r\n" + stuff(topOf(MAILBOX[numbers[0]], numbers[1]))
    raise AssertionError(f"unexpected upstream command {request!r}")


def session(top: str) -> tuple[Harness, StampingHook]:
    """
    A logged-in session through a L{StampingHook} in the given TOP mode.
    """
    hook = StampingHook()
    h = Harness(hook=hook, chain={"top": top})
    h.login()
    return h, hook


def command(h: Harness, line: bytes) -> bytes:
    """
    Send one command, play the upstream (with L{MAILBOX}) for whatever the
    proxy asks, and return the client's bytes.
    """
    h.send(line + b"\r\n")
    for _ in range(10):
        requests = h.upstream.received()
        if not requests:
            break
        for request in requests.split(b"\r\n")[:-1]:
            h.upstream.reply(answer(request))
    h.settle()
    return h.received()


def freshRetr(index: int) -> bytes:
    """
    What RETR delivers in a session that did nothing else.
    """
    h, _ = session("full")
    return command(h, b"RETR %d" % index)


def delivered(response: bytes) -> bytes:
    """
    The message in a multi-line response: no status line, unstuffed.
    """
    status, _, body = response.partition(b"\r\n")
    assert status.startswith(b"+OK"), response
    assert body.endswith(b"\r\n.\r\n")
    lines = body[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def headerBlock(message: bytes) -> bytes:
    return message[: message.index(b"\r\n\r\n") + 4]


FILTERED = {index: delivered(freshRetr(index)) for index in MAILBOX}


def test_freshRetrIsFilteredWhole() -> None:
    """
    The reference every other test compares with: a RETR in a fresh session
    is the whole message stamped clean, GTUBE tagged.
    """
    assert FILTERED[1] == b"X-Checked: clean\r\n" + MAILBOX[1]
    assert headerBlock(FILTERED[2]) == (
        b"X-Checked: clean\r\nFrom: b@example.com\r\nSubject: [SPAM] test\r\n\r\n"
    )


def test_fullTopThenRetr() -> None:
    """
    The bug of issue #11: in "full" mode 'TOP n 0' then 'RETR n' gives the
    RETR a fresh session gets (tagged, stamped clean, never "partial"), the
    TOP shows RETR's header block byte for byte, and the chain saw the whole
    message as not partial, once.
    """
    for index in MAILBOX:
        h, hook = session("full")
        top = command(h, b"TOP %d 0" % index)
        retr = command(h, b"RETR %d" % index)
        assert retr == freshRetr(index)
        assert delivered(top) == headerBlock(delivered(retr))
        assert b"partial" not in top + retr
        assert [(c.command, c.partial, m) for c, m in hook.seen] == [("TOP", False, MAILBOX[index])]
    h, _ = session("full")
    command(h, b"TOP 2 0")
    assert b"Subject: [SPAM] test\r\n" in command(h, b"RETR 2")


def test_fullRetrThenTop() -> None:
    """
    In "full" mode, TOP n 0 and TOP n 5 after RETR n are cut from what RETR
    delivered; the upstream is not asked again.
    """
    h, hook = session("full")
    retr = command(h, b"RETR 1")
    assert retr == freshRetr(1)
    assert delivered(command(h, b"TOP 1 0")) == headerBlock(FILTERED[1])
    assert delivered(command(h, b"TOP 1 5")) == topOf(FILTERED[1], 5)
    assert len(hook.seen) == 1


def test_fullTopWithLinesThenRetr() -> None:
    """
    'TOP n 5' in "full" mode is the first five body lines of the message
    RETR delivers, and the RETR after it is a fresh session's.
    """
    h, _ = session("full")
    top = command(h, b"TOP 1 5")
    assert delivered(top) == topOf(FILTERED[1], 5)
    assert command(h, b"RETR 1") == freshRetr(1)


def test_partialTopThenRetr() -> None:
    """
    In "partial" mode TOP is filtered as a partial message (stamped so), and
    the RETR after it fetches and filters the whole message again: it equals
    a fresh session's RETR, with no trace of the partial result.
    """
    for lines in (0, 5):
        h, hook = session("partial")
        top = command(h, b"TOP 2 %d" % lines)
        assert delivered(top) == (
            b"X-Checked: unchecked (partial message)\r\n" + topOf(MAILBOX[2], lines)
        )
        retr = command(h, b"RETR 2")
        assert retr == freshRetr(2)
        assert b"partial" not in retr and b"[SPAM]" in retr
        assert [(c.command, c.partial) for c, _ in hook.seen] == [("TOP", True), ("RETR", False)]


def test_partialTopNotUsedForSizes() -> None:
    """
    In "partial" mode a TOP does not change the sizes LIST and STAT report
    (they stay the upstream's until RETR has filtered the whole message),
    and after RETR they are the size RETR delivered.
    """
    h, _ = session("partial")
    command(h, b"TOP 1 0")
    raw = len(MAILBOX[1])
    assert command(h, b"LIST 1") == b"+OK 1 %d\r\n" % raw
    assert command(h, b"LIST").startswith(b"+OK 3 messages\r\n1 %d\r\n" % raw)
    total = sum(map(len, MAILBOX.values()))
    assert command(h, b"STAT") == b"+OK 3 %d\r\n" % total
    command(h, b"RETR 1")
    assert command(h, b"LIST 1") == b"+OK 1 %d\r\n" % len(FILTERED[1])
    grown = len(FILTERED[1]) - raw
    assert command(h, b"STAT") == b"+OK 3 %d\r\n" % (total + grown)


def test_fullTopSetsRetrSizes() -> None:
    """
    In "full" mode TOP filtered the whole message, so LIST reports the size
    RETR will deliver right after the TOP; UIDL listed before is relayed as
    the upstream sent it.
    """
    h, _ = session("full")
    assert command(h, b"UIDL") == answer(b"UIDL")
    command(h, b"TOP 2 0")
    assert command(h, b"LIST 2") == b"+OK 2 %d\r\n" % len(FILTERED[2])
    retr = command(h, b"RETR 2")
    assert retr == freshRetr(2)
    assert len(delivered(retr)) == len(FILTERED[2])


COMMANDS = st.sampled_from(
    [b"RETR %d", b"TOP %d 0", b"TOP %d 5", b"LIST %d", b"UIDL %d", b"LIST", b"UIDL", b"STAT"]
)


@settings(max_examples=150, deadline=None)
@given(
    top=st.sampled_from(MODES),
    steps=st.lists(st.tuples(COMMANDS, st.sampled_from(sorted(MAILBOX))), max_size=10),
)
def test_anyOrderOfCommands(top: str, steps: list[tuple[bytes, int]]) -> None:
    """
    Whatever the order of RETR, TOP n 0, TOP n 5, LIST, UIDL and STAT: RETR
    equals a fresh session's RETR; a TOP in "full" mode, or after RETR, is
    cut from it; a TOP in "partial" mode otherwise is the partial preview;
    LIST and STAT report RETR's size for messages whose whole message the
    session has filtered and the upstream's for the others, never a
    partial result's.
    """
    h, _ = session(top)
    whole: set[int] = set()

    def size(index: int) -> int:
        return len(FILTERED[index]) if index in whole else len(MAILBOX[index])

    for template, index in steps:
        line = template % index if b"%d" in template else template
        verb = line.split(b" ")[0]
        response = command(h, line)
        if verb == b"RETR":
            assert response == freshRetr(index)
            whole.add(index)
        elif verb == b"TOP":
            lines = int(line.split(b" ")[2])
            if top == "full" or index in whole:
                assert response == b"+OK top of message follows\r\n" + stuff(
                    topOf(FILTERED[index], lines)
                )
                assert headerBlock(delivered(response)) == headerBlock(FILTERED[index])
                whole.add(index)
            else:
                assert delivered(response) == (
                    b"X-Checked: unchecked (partial message)\r\n" + topOf(MAILBOX[index], lines)
                )
        elif line == b"LIST":
            listing = b"".join(b"%d %d\r\n" % (n, size(n)) for n in MAILBOX)
            assert response == b"+OK 3 messages\r\n" + listing + b".\r\n"
        elif verb == b"LIST":
            assert response == b"+OK %d %d\r\n" % (index, size(index))
        elif verb == b"STAT":
            assert response == b"+OK 3 %d\r\n" % sum(size(n) for n in MAILBOX)
        else:
            assert response == answer(line)
