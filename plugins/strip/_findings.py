"""
What the strip policy removes from a message (L{findBlocked}): every part
judged by its names, its declared type, its size and its first decoded
octets, attached archives, TNEF streams and encoded attached messages
looked into, and uuencoded files found in plain text.  Nothing here
changes the message or keeps anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from popproxy.message import LimitExceeded, Message, ParseLimits, Part

from ._decoding import (
    DECODED_ENCODINGS,
    UU_ENCODINGS,
    decodedPayload,
    decodedSize,
    partOctets,
)
from ._detection import detectionReason
from ._memberstream import Budget
from ._names import canonicalName, displayName, nameReason
from ._settings import StripPolicy
from ._tnef import TNEF_SIGNATURE, TNEF_TYPES, tnefAttachments
from ._uuencode import UuBlock, findUuBlocks
from ._zip import ZIP_SIGNATURES, ZIP_TYPES, inspectZip, looksLikeArchive


@dataclass(frozen=True)
class Finding:
    """
    One part to remove or cut.

    @ivar part: the part whose octets go to the quarantine and are
        replaced (for a file inside an attached message: the
        message/rfc822 part).
    @ivar filename: the name to show for what was removed.
    @ivar reason: why, in a few words.
    @ivar signed: it lies inside a multipart/signed.
    @ivar blocks: for uuencoded files cut from a text part: where they are
        (offsets into the payload, or into the message for an unencoded
        part); empty when the whole part is replaced.
    """

    part: Part
    filename: str
    reason: str
    signed: bool = False
    blocks: tuple[UuBlock, ...] = ()


@dataclass(frozen=True)
class _Search:
    """
    One message being searched: its octets, the policy, its parse limits,
    how deep in encoded attached messages it lies, and what was found.
    """

    data: bytes
    policy: StripPolicy
    limits: ParseLimits
    nesting: int
    findings: list[Finding]


def findBlocked(message: Message, policy: StripPolicy, nesting: int = 0) -> list[Finding]:
    """
    Every part of C{message} the policy removes, in message order; parts
    never lie inside one another.
    """
    search = _Search(message.toBytes(), policy, message.limits, nesting, [])
    _visit(search, message.root, None, False)
    return search.findings


def _visit(search: _Search, part: Part, container: Part | None, signed: bool) -> None:
    """
    Judge C{part} and, unless it goes whole, what it holds.

    @param container: the message/rfc822 part whose body C{part} is.
    @param signed: C{part} lies inside a multipart/signed.
    """
    if part.isMultipart:
        inSigned = signed or part.contentType == "multipart/signed"
        for child in part.children:
            _visit(search, child, None, inSigned)
        return
    judged = _judgePart(part, search.data, search.policy, search.limits, search.nesting)
    if judged is not None:
        # A file that is the whole of an attached message takes the
        # message/rfc822 part with it, not just the body under it.
        search.findings.append(Finding(container or part, judged[0], judged[1], signed))
        return
    children = part.children
    if children:
        _visit(search, children[0], part, signed)
        return
    if search.policy.uuencode and part.contentType == "text/plain":
        finding = _uuFinding(part, search.data, search.policy, signed)
        if finding is not None:
            search.findings.append(finding)


def _judgePart(
    part: Part, data: bytes, policy: StripPolicy, limits: ParseLimits, nesting: int
) -> tuple[str, str] | None:
    """
    The name to show and the reason if the part must go, or None.
    Containers (message/rfc822) are judged on their headers only; their
    contents are visited separately.
    """
    names = part.filenames
    shown = displayName(names[0]) if names else _describe(part)
    for name in names:
        reason = nameReason(name, policy)
        if reason is not None:
            return displayName(name), reason
    contentType = part.contentType
    if contentType in policy.contentTypes:
        return shown, f"blocked content type {contentType}"
    isMessage = contentType in ("message/rfc822", "message/global")
    isContainer = isMessage or contentType.startswith("multipart/")
    if isContainer and len(part.path) >= limits.maxDepth:
        return shown, "nested too deeply to be checked"
    if isMessage and part.children:
        return None
    if isMessage:
        reason = _encodedMessageReason(part, data, policy, limits, nesting)
        return None if reason is None else (shown, reason)
    if contentType.startswith("text/") and not names and part.disposition != "attachment":
        return None  # the text of the message itself
    return _judgeContent(part, data, policy, names, shown)


def _encodedMessageReason(
    part: Part, data: bytes, policy: StripPolicy, limits: ParseLimits, nesting: int
) -> str | None:
    """
    Why an encoded message/rfc822 part (RFC 2045 forbids it, clients
    decode it anyway) must go whole, or None: the message inside is
    checked like the outer one.
    """
    if nesting >= limits.maxDepth:
        return "nested too deeply to be checked"
    inner = Message.fromBytes(decodedPayload(part, data), limits=limits)
    try:
        # The chain checked the outer message only: an attached message
        # past a limit would hide whatever lies beyond it.
        inner.checkLimits()
    except LimitExceeded as e:
        return f"attached message too complex to check ({e.limit})"
    found = findBlocked(inner, policy, nesting + 1)
    if found:
        return f"attached message holds {found[0].filename} ({found[0].reason})"
    return None


def _judgeContent(
    part: Part, data: bytes, policy: StripPolicy, names: tuple[str, ...], shown: str
) -> tuple[str, str] | None:
    """
    L{_judgePart} for a leaf whose names and type pass: its size, the
    uuencoded files of a uuencoded body, then what its first octets are,
    the archive or TNEF stream it may be.
    """
    if policy.maxSize and decodedSize(part, data) > policy.maxSize:
        if part.transferEncoding != "quoted-printable" or len(part.payload()) > policy.maxSize:
            return shown, f"larger than {policy.maxSize} bytes"
    if policy.uuencode and part.transferEncoding in UU_ENCODINGS:
        start, end = part.bodyRange
        for block in findUuBlocks(data, start, end):
            reason = nameReason(block.name, policy)
            if reason is not None:
                return displayName(block.name), f"uuencoded {displayName(block.name)}: {reason}"
    if not (policy.detect or policy.archives or policy.tnef):
        return None
    octets = partOctets(part, data)
    head = octets.read(0, 16)
    if policy.detect:
        reason = detectionReason(octets, policy)
        if reason is not None:
            return shown, reason
    contentType = part.contentType
    if policy.archives and (
        head.startswith(ZIP_SIGNATURES)
        or contentType in ZIP_TYPES
        or any(looksLikeArchive(name) for name in names)
    ):
        reason = inspectZip(decodedPayload(part, data), policy, Budget())
        if reason is not None:
            return shown, reason
    if policy.tnef and (
        head.startswith(TNEF_SIGNATURE)
        or contentType in TNEF_TYPES
        or any(canonicalName(name) == "winmail.dat" for name in names)
    ):
        reason = _tnefReason(decodedPayload(part, data), policy)
        if reason is not None:
            return shown, reason
    return None


def _tnefReason(payload: bytes, policy: StripPolicy) -> str | None:
    """
    Why a TNEF stream must go (an attachment in it of a blocked name or
    type), or None.
    """
    for attachment in tnefAttachments(payload):
        for name in attachment.names:
            reason = nameReason(name, policy)
            if reason is not None:
                return f"winmail.dat holds {displayName(name)}: {reason}"
        if policy.detect:
            reason = detectionReason(attachment.head, policy)
            if reason is not None:
                label = displayName(attachment.names[0]) if attachment.names else "a file"
                return f"winmail.dat holds {label}: {reason}"
    return None


def _describe(part: Part) -> str:
    return f"an unnamed {part.contentType} part"


def _uuFinding(part: Part, data: bytes, policy: StripPolicy, signed: bool) -> Finding | None:
    """
    The uuencoded files of blocked names or types in a plain text part,
    as one finding that cuts them out, or None.
    """
    start, end = part.bodyRange
    if part.transferEncoding in DECODED_ENCODINGS:
        blocks = findUuBlocks(part.payload())
    else:
        blocks = findUuBlocks(data, start, end)
    removed: list[UuBlock] = []
    reasons: list[str] = []
    for block in blocks:
        reason = nameReason(block.name, policy)
        if reason is None and policy.detect:
            reason = detectionReason(block.head, policy)
        if reason is not None:
            removed.append(block)
            reasons.append(reason)
    if not removed:
        return None
    names = ", ".join(displayName(block.name) for block in removed)
    return Finding(part, names, f"uuencoded {names}: {reasons[0]}", signed, tuple(removed))
