"""
The strip filter: remove dangerous attachments, keep them in the
quarantine, and leave a short notice where each one was.

A part is removed when any of its candidate file names (every name a mail
client might show, see L{popproxy.message.Part.filenames}) has a blocked
extension, when its declared content type is blocked, when its decoded
bytes are an executable, installer, shortcut or disk image whatever its
name says (told by its signatures at fixed offsets), when it is a zip archive holding
such a file (or too many files, too many bytes, too deep a nesting of
archives), when it is a TNEF C{winmail.dat} naming such a file, or when it
is larger than C{max_size}.  A uuencoded file (C{begin 644 setup.exe})
inside a plain text part is cut out of that text.

Each removed part is stored in the quarantine first, exactly as it was in
the message, then replaced by a C{text/plain} notice naming the file, the
reason and the quarantine id.  Every other octet of the message stays as
it arrived.  Without a quarantine, or when it cannot store, the verdict is
L{TempFail}: nothing is ever thrown away.

The package has one module per role: C{_settings} (the default policy,
L{StripPolicy} and the checks of the settings), C{_names} (file names as
Windows saves them, and blocked ones), C{_detection} (what a file's
octets are), C{_memberstream} (an archive member read as a bounded stream)
and C{_zip} (archives judged within their limits), C{_tnef}
(C{winmail.dat} read), C{_uuencode} (uuencoded files in a text),
C{_base64} and C{_decoding} (a part's payload read without decoding more
than needed), C{_findings} (what the policy removes from a message),
C{_notices} (what is written in its place), C{_filter} (L{Strip}) and
C{_factory} (C{makeFilter}).  This module only re-exports; every module
uses only popproxy's public API.

Settings and policy decisions are described in docs/plugins/strip.md.
"""

from ._decoding import decodedHead, decodedPayload, decodedSize
from ._detection import DETECT_BYTES, DetectedType, detectionReason, detectTypes
from ._factory import makeFilter
from ._filter import THREAD_THRESHOLD, Strip
from ._findings import Finding, findBlocked
from ._names import canonicalName, displayName, nameReason
from ._notices import SIGNATURE_BROKEN
from ._settings import (
    DEFAULT_CONTENT_TYPES,
    DEFAULT_EXTENSIONS,
    DEFAULT_NOTICE,
    SETTINGS,
    StripPolicy,
    parsePolicy,
)
from ._tnef import TNEF_SIGNATURE, TnefAttachment, tnefAttachments
from ._uuencode import UuBlock, findUuBlocks
from ._zip import NESTED_DIRECTORY_BYTES, inspectZip

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_EXTENSIONS",
    "DEFAULT_NOTICE",
    "DETECT_BYTES",
    "NESTED_DIRECTORY_BYTES",
    "SETTINGS",
    "SIGNATURE_BROKEN",
    "THREAD_THRESHOLD",
    "TNEF_SIGNATURE",
    "DetectedType",
    "Finding",
    "Strip",
    "StripPolicy",
    "TnefAttachment",
    "UuBlock",
    "canonicalName",
    "decodedHead",
    "decodedPayload",
    "decodedSize",
    "detectTypes",
    "detectionReason",
    "displayName",
    "findBlocked",
    "findUuBlocks",
    "inspectZip",
    "makeFilter",
    "nameReason",
    "parsePolicy",
    "tnefAttachments",
]
