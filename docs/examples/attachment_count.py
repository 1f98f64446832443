"""
An example popproxy filter: tag each message with the number of its
attachments, e.g. C{X-Attachment-Count: 2}.

Settings (the C{settings} table of its C{[[filter]]} entry):

  - C{header}: the header field to set (default C{X-Attachment-Count});
  - C{min}: tag only messages with at least this many attachments
    (default 0: tag every message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from popproxy.interfaces import (
    Deliver,
    FilterContext,
    IMessageFilter,
    Rewrite,
    SettingsReader,
    Verdict,
)
from popproxy.message import Message, Part

DEFAULT_HEADER = "X-Attachment-Count"

# RFC 5322: printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")


def isAttachment(part: Part) -> bool:
    """
    Would a mail client list this part as an attachment?  Yes if it has a
    file name (in any of the places clients look) or is marked attachment.
    """
    if part.isMultipart:
        return False
    return part.disposition == "attachment" or bool(part.filenames)


def countAttachments(part: Part) -> int:
    """
    The attachments in C{part} and below.  An attached message counts once,
    whatever it contains, as a mail client shows it.
    """
    if isAttachment(part):
        return 1
    return sum(countAttachments(child) for child in part.children)


@implementer(IMessageFilter)
class AttachmentCount:
    """
    Sets a header with the number of attachments.
    """

    name = "attachment_count"

    def __init__(self, header: str = DEFAULT_HEADER, minimum: int = 0) -> None:
        self.header = header
        self.minimum = minimum

    def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        if context.partial:
            # A TOP preview lacks most of the body: a count would be wrong.
            return Deliver()
        count = countAttachments(message.root)
        if count < self.minimum:
            # Anyone can put any header in a message they send: never let a
            # forged count through.
            cleaned = message.withHeaderRemoved(self.header)
            if cleaned is message:
                return Deliver()
            return Rewrite(cleaned, note=f"removed a forged {self.header}")
        tagged = message.withHeaderReplaced(self.header, str(count), removeOthers=True)
        return Rewrite(tagged, note=f"{count} attachment(s)")


def makeFilter(settings: Mapping[str, Any]) -> AttachmentCount:
    """
    Build the filter from its settings; a ValueError stops popproxy at
    start-up with a message naming the entry.
    """
    read = SettingsReader(settings)
    header = read.value("header", DEFAULT_HEADER)
    if not isinstance(header, str) or not _FIELD_NAME.fullmatch(header):
        raise ValueError(f"header must be a header field name, not {header!r}")
    minimum = read.integer("min", 0, minimum=0)
    read.finish()  # names a key no line above asked for: a typo
    return AttachmentCount(header, minimum)
