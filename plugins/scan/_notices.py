"""
What the scan filter writes into a message: the notice standing in for an
infected part, the notice replacing an infected message, and the value of
the header saying what the scan did.  Plain functions of the message, the
findings and the settings; nothing here scans or keeps anything.
"""

from __future__ import annotations

from collections.abc import Callable

from popproxy.interfaces import RemovedPart, Replace, TempFail, Verdict
from popproxy.message import Message, Part, textPart

from ._findings import Findings
from ._settings import ScanSettings
from ._wire import printable

#: What every X-Virus-Scanned value starts with.
STAMP = "popproxy/clamd"

#: An infected leaf, the part it removes, and every signature found in that part.
Target = tuple[Part, Part, tuple[str, ...]]


def names(found: tuple[str, ...]) -> str:
    return ", ".join(found)


def partLabel(part: Part) -> str:
    if not part.path:
        return "the message body"
    label = "part " + ".".join(str(index + 1) for index in part.path)
    if part.filename:
        label += f" ({printable(part.filename, 80)})"
    return label


def removable(message: Message, part: Part) -> Part:
    """
    The part to replace when leaf C{part} is infected: the leaf itself, or,
    when it is the whole of an attached message, that message/rfc822 part
    (the top-level part when the message itself is a single part).
    """
    target = part
    while target.path:
        parent = message.partAt(target.path[:-1])
        if parent.isMultipart:
            break
        target = parent
    return target


def removalTargets(message: Message, infected: list[tuple[Part, tuple[str, ...]]]) -> list[Target]:
    """
    The parts the findings remove, each once, with every signature found in it.
    """
    targets: dict[tuple[int, ...], Target] = {}
    for part, found in infected:
        target = removable(message, part)
        if target.path in targets:
            first, _, before = targets[target.path]
            targets[target.path] = (first, target, tuple(dict.fromkeys(before + found)))
        else:
            targets[target.path] = (part, target, found)
    return list(targets.values())


def removedParts(message: Message, targets: list[Target]) -> list[RemovedPart]:
    """
    What the quarantine keeps of each target: its exact octets, headers included.
    """
    data = message.toBytes()
    return [
        RemovedPart(data[slice(*target.range)], target.path, f"virus found: {names(found)}")
        for _, target, found in targets
    ]


def withPartNotices(
    message: Message,
    targets: list[Target],
    identifiers: list[str],
    settings: ScanSettings,
    itemUrl: Callable[[str], str] = lambda identifier: "",
) -> Message:
    """
    C{message} with a notice naming its quarantine id in place of each
    target, made in one edit; its C{{url}} is C{itemUrl} of the id (the
    console's link, or empty).
    """
    edits = []
    for (part, target, found), identifier in zip(targets, identifiers, strict=True):
        notice = settings.notice.format(
            virus=names(found),
            filename=printable(target.filename or part.filename or "(no name)", 200),
            id=identifier,
            part=partLabel(target),
            url=itemUrl(identifier),
        )
        edits.append((target, textPart(notice, lineEnding=message.lineEnding)))
    return message.withPartsEdited(edits)


def noQuarantine(found: tuple[str, ...]) -> TempFail:
    return TempFail(
        "a virus was found but there is no quarantine to keep it, try again later",
        note=f"virus {names(found)}, no quarantine",
    )


def wholeReplaced(message: Message, found: tuple[str, ...], settings: ScanSettings) -> Verdict:
    """
    A notice standing in for the whole message (the chain keeps the
    original in the quarantine).
    """
    eol = message.lineEnding
    subject = message.headers.get("Subject") or ""
    head = b""
    for name in ("From", "To", "Cc", "Date", "Message-ID"):
        for value in message.headers.rawValues(name):
            head += name.encode("ascii") + b":" + value + eol
    text = settings.messageNotice.format(
        virus=names(found),
        sender=message.headers.get("From") or "(unknown)",
        subject=subject or "(none)",
    )
    body = textPart(text, lineEnding=eol)
    notice = Message.fromBytes(head + b"MIME-Version: 1.0" + eol + body)
    notice = notice.withHeaderReplaced(
        "Subject", settings.subject.format(virus=names(found), subject=subject)
    )
    notice = notice.withHeaderAdded(
        settings.header, f"{STAMP}; infected ({names(found)}), message replaced"
    )
    return Replace(notice, f"virus found: {names(found)}", note=f"virus {names(found)}")


def stamp(
    findings: Findings, removed: tuple[str, ...], partial: bool, settings: ScanSettings
) -> tuple[str | None, list[str]]:
    """
    The header value saying what the scan did (None: leave the message
    unstamped) and the notes for the verdict.  A message is only called
    clean when every stream it needed was scanned.
    """
    notes = [f"removed {names(removed)}"] if removed else []
    if findings.unchecked:
        reasons = list(dict.fromkeys(item.reason for item in findings.unchecked))
        reason = reasons[0] if len(reasons) == 1 else f"{reasons[0]}; {len(reasons) - 1} more"
        value = f"{STAMP}; unchecked ({reason})"
        if removed:
            value += f"; infected parts replaced ({names(removed)})"
        notes.append(f"unchecked: {reason}")
    elif partial:
        # A TOP preview lacks most of its body: what is missing was not scanned.
        value = f"{STAMP}; unchecked (partial message)"
        notes.append("unchecked: partial message")
    elif removed:
        value = f"{STAMP}; infected parts replaced ({names(removed)})"
    elif settings.stampClean:
        value = f"{STAMP}; clean"
        notes.append("clean")
    else:
        return None, ["clean"]
    return value, notes
