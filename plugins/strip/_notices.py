"""
What the strip filter writes into a message: the notice standing in for
each removed part (or for the uuencoded files cut out of a text), all of
them put in place in one edit, and the message that stands in for a
signed message holding blocked files.  Plain functions of the message,
the findings and the notice template; nothing here judges or keeps
anything.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import Callable

from popproxy.message import EditError, Message, textPart

from ._decoding import DECODED_ENCODINGS
from ._findings import Finding

#: Added to a notice in a message whose signature the removal breaks.
SIGNATURE_BROKEN = (
    "This message was digitally signed; removing the attachment means the "
    "signature no longer verifies.\n"
)


def noticeText(
    template: str, finding: Finding, identifier: str, withheld: bool = False, url: str = ""
) -> str:
    """
    The notice for one finding from the C{notice} template; C{withheld}
    leaves out its name and reason; C{url} is the console's link to the
    item (empty without a console).
    """
    text = template.format(
        filename="(name withheld)" if withheld else finding.filename,
        reason="blocked file" if withheld else finding.reason,
        id=identifier,
        url=url,
    )
    if not text.endswith("\n"):
        text += "\n"
    return text + (SIGNATURE_BROKEN if finding.signed else "")


def withNotices(
    message: Message,
    data: bytes,
    findings: list[Finding],
    identifiers: list[str],
    template: str,
    itemUrl: Callable[[str], str] = lambda identifier: "",
) -> Message:
    """
    C{message} with each finding's part replaced by its notice (or its
    uuencoded blocks cut out), in one edit however many there are; each
    notice's C{{url}} is C{itemUrl} of its quarantine id.
    Should a name in a notice read as a delimiter line of the message
    (a name chosen to break it), that notice goes without the names.
    """
    pairs = list(zip(findings, identifiers, strict=True))
    try:
        return message.withPartsEdited(
            (finding.part, replacement(message, data, finding, identifier, template, itemUrl))
            for finding, identifier in pairs
        )
    except EditError:
        pass
    edits = []
    for finding, identifier in pairs:
        octets = replacement(message, data, finding, identifier, template, itemUrl)
        try:
            message.withPartReplaced(finding.part, octets)
        except EditError:
            octets = replacement(
                message, data, finding, identifier, template, itemUrl, withheld=True
            )
        edits.append((finding.part, octets))
    return message.withPartsEdited(edits)


def replacement(
    message: Message,
    data: bytes,
    finding: Finding,
    identifier: str,
    template: str,
    itemUrl: Callable[[str], str] = lambda identifier: "",
    withheld: bool = False,
) -> bytes:
    """
    The octets that take the place of a finding's part: a notice part
    (with the top-level header fields when the part is the whole message
    body), or the part with its uuencoded blocks replaced by the notice.
    """
    eol = message.lineEnding
    part = finding.part
    text = noticeText(template, finding, identifier, withheld, itemUrl(identifier))
    partStart = part.range[0]
    if not finding.blocks:
        notice = textPart(text, lineEnding=eol)
        return _rootFields(message, data) + notice if not part.path else notice
    bodyStart, bodyEnd = part.bodyRange
    encoding = part.transferEncoding
    noticeOctets = _textOctets(text.replace("\n", "\r\n" if eol == b"\r\n" else "\n"), part.charset)
    if encoding in DECODED_ENCODINGS:
        source, position, stop = part.payload(), 0, None
    else:
        source, position, stop = data, bodyStart, bodyEnd
    pieces = []
    for block in finding.blocks:
        pieces.append(source[position : block.start])
        pieces.append(noticeOctets)
        position = block.end
    pieces.append(source[position:stop])
    body = b"".join(pieces)
    if encoding in DECODED_ENCODINGS:
        body = _encodeBody(body, encoding, eol)
    return data[partStart:bodyStart] + body


def signedNotice(message: Message, findings: list[Finding]) -> Message:
    """
    The message that stands in for a signed message holding blocked
    files: its identifying headers and a text naming them.
    """
    eol = message.lineEnding
    head = b""
    for name in ("From", "To", "Cc", "Date", "Message-ID", "Subject"):
        for value in message.headers.rawValues(name):
            head += name.encode("ascii") + b":" + value + eol
    listed = "".join(f"  - {finding.filename}: {finding.reason}\n" for finding in findings)
    text = (
        "This message was digitally signed and held attachments the mail gateway does "
        "not deliver:\n"
        f"{listed}"
        "Removing them would break the signature, so the whole message is kept in "
        "quarantine under the id in the X-Popproxy-Quarantine-Id header of this notice; "
        "ask your administrator if you need it.\n"
    )
    return Message.fromBytes(head + b"MIME-Version: 1.0" + eol + textPart(text, lineEnding=eol))


def shortened(text: str, limit: int = 400) -> str:
    """
    C{text} cut to C{limit} characters, for a note.
    """
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encodeBody(payload: bytes, encoding: str, lineEnding: bytes) -> bytes:
    """
    C{payload} in a transfer encoding, with the message's line ending.
    """
    if encoding == "base64":
        return base64.encodebytes(payload).replace(b"\n", lineEnding)
    lines = payload.splitlines(keepends=True)
    out = []
    for line in lines:
        content = line.rstrip(b"\r\n")
        encoded = binascii.b2a_qp(content, quotetabs=False, istext=False)
        out.append(encoded.replace(b"=\n", b"=" + lineEnding))
        if len(content) != len(line):
            out.append(lineEnding)
    return b"".join(out)


def _textOctets(text: str, charset: str | None) -> bytes:
    """
    A notice to put inside an existing text, in that text's charset.
    """
    try:
        codec = codecs.lookup(charset or "us-ascii").name
    except LookupError:
        codec = "ascii"
    if codec.startswith(("utf-16", "utf-32")):
        codec = "ascii"
    return text.encode(codec, "backslashreplace")


def _rootFields(message: Message, data: bytes) -> bytes:
    """
    The top-level header lines without the fields that described the
    removed content (the notice brings its own).
    """
    start, end = message.headers.range
    dropped = sorted(
        fieldRange
        for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition")
        for fieldRange in message.headers.fieldRanges(name)
    )
    kept = []
    position = start
    for fieldStart, fieldEnd in dropped:
        kept.append(data[position:fieldStart])
        position = fieldEnd
    kept.append(data[position:end])
    return b"".join(kept)
