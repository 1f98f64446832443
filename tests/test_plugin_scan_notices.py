"""
What the scan filter writes into a message (plugins/scan/_notices.py): the parts a finding
removes, the notices in their place, the notice replacing a whole message and the stamp.
"""

from __future__ import annotations

from plugins.scan._findings import Findings, Unchecked
from plugins.scan._notices import (
    STAMP,
    partLabel,
    removable,
    removalTargets,
    removedParts,
    stamp,
    wholeReplaced,
    withPartNotices,
)
from plugins.scan._settings import ScanSettings
from popproxy.interfaces import Replace
from popproxy.message import Message
from popproxy.testing import attachmentPart, buildMessage, textPart

MESSAGE = Message.fromBytes(
    buildMessage(
        attachmentPart(b"one", "a.com"),
        attachmentPart(b"two", "b.com"),
        headers=[("From", "m@example.com"), ("Subject", "hi")],
    )
)


def test_oneTargetPerRemovedPartWithEverySignature() -> None:
    """
    Two findings in one part remove it once, naming both signatures; the quarantine gets the
    part's exact octets.
    """
    first = MESSAGE.partAt((0,))
    targets = removalTargets(MESSAGE, [(first, ("A",)), (first, ("B", "A"))])
    assert [(target.path, found) for _, target, found in targets] == [((0,), ("A", "B"))]
    [kept] = removedParts(MESSAGE, targets)
    assert kept.original == MESSAGE.toBytes()[slice(*first.range)]
    assert kept.reason == "virus found: A, B"


def test_partNoticesNameTheQuarantineId() -> None:
    """
    Each removed part becomes a text notice holding its virus, file name and id; the other
    parts stay as they were.
    """
    first = MESSAGE.partAt((0,))
    targets = removalTargets(MESSAGE, [(first, ("Eicar",))])
    edited = withPartNotices(MESSAGE, targets, ["q-1"], ScanSettings())
    text = edited.partAt((0,)).payload()
    assert b"Eicar" in text and b"a.com" in text and b"q-1" in text
    assert edited.partAt((1,)).payload() == b"two"


def test_singlePartMessageIsRemovedWhole() -> None:
    """
    The body of a single-part message is not a part that can go: the whole message is.
    """
    single = Message.fromBytes(b"Subject: x\r\n\r\n" + textPart("body\n"))
    assert removable(single, single.partAt(())).path == ()
    assert partLabel(single.partAt(())) == "the message body"
    assert partLabel(MESSAGE.partAt((1,))) == "part 2 (b.com)"


def test_wholeNoticeKeepsTheAddressesAndStamps() -> None:
    """
    The notice replacing a message keeps its From, takes the configured subject and says
    on its stamp that the message was replaced.
    """
    verdict = wholeReplaced(MESSAGE, ("Eicar",), ScanSettings())
    assert isinstance(verdict, Replace)
    assert verdict.notice.headers.get("From") == "m@example.com"
    assert verdict.notice.headers.get("Subject") == "[VIRUS] hi"
    assert verdict.notice.headers.get("X-Virus-Scanned") == (
        f"{STAMP}; infected (Eicar), message replaced"
    )


def test_stampIsCleanOnlyWhenEverythingWasScanned() -> None:
    """
    Unchecked streams and partial previews are stamped unchecked, removals are named, and
    only a fully scanned message is called clean (or left unstamped when told so).
    """
    settings = ScanSettings()
    unchecked = Findings(unchecked=[Unchecked("error", "broke")])
    assert stamp(unchecked, (), False, settings)[0] == f"{STAMP}; unchecked (broke)"
    assert stamp(Findings(), (), True, settings)[0] == f"{STAMP}; unchecked (partial message)"
    assert stamp(Findings(), ("E",), False, settings) == (
        f"{STAMP}; infected parts replaced (E)",
        ["removed E"],
    )
    assert stamp(Findings(), (), False, settings) == (f"{STAMP}; clean", ["clean"])
    assert stamp(Findings(), (), False, ScanSettings(stampClean=False)) == (None, ["clean"])
