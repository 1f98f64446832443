"""
The scan filter: virus scanning with clamd.

Each message is streamed to clamd with its INSTREAM command: by default
every decoded leaf part on its own, so base64-encoded malware is found
whatever clamd's own MIME support does; or the whole raw message; or both.
The infected parts of a message are stored in the quarantine together,
each under an id derived from the message and the part (a retry of the
message stores nothing twice), and replaced by short notices in one
edit; an infected message body is replaced whole (the chain quarantines
the original).  When clamd cannot scan (unreachable, too slow, an error, a
stream over the size limit) the configured policy decides: a temporary
failure, or delivery marked unchecked.  A message is never called clean
unless every scan it needed said so.

The filter says whether clamd can be reached (L{IScannerStatus}): it asks
clamd with a PING when the proxy starts (L{IStartable}) and learns from
every scan after that; each change is logged once, and the warning about
a message left unscanned at most once a minute.

The package has one module per role, each usable alone: C{_wire} (the
INSTREAM framing and reply parsing, plain code fed bytes), C{_idsession}
(clamd's IDSESSION: numbered requests and the reply that answers each,
plain code too), C{_connection} (what every clamd connection shares: the
frame producer, TCP_NODELAY), C{_sessionclient} (the Twisted session: the
parts of one message on one connection), C{_client} (the Twisted client:
one connection per scan, or a session per message, at most
C{maxConnections} connections at once, and PING), C{_settings},
C{_findings} (what the scans of one message found and the policies'
answer), C{_notices} (what is written into the message), C{_filter}
(L{VirusScan}, which only needs something with C{scan(data)}, C{session()}
and C{ping()} methods) and C{_factory} (C{makeFilter}).  This module only
re-exports;
every module uses only popproxy's public API and Twisted.

Settings and policies: docs/plugins/scan.md.
"""

from ._client import ClamdClient, InstreamProtocol, PingProtocol
from ._factory import makeFilter
from ._filter import Scanner, ScanSession, StreamScanner, VirusScan
from ._idsession import (
    END_COMMAND,
    IDSESSION_COMMAND,
    SessionExchange,
    StaleSession,
    UnexpectedReply,
    splitRequestNumber,
)
from ._sessionclient import ClamdSession, SessionProtocol
from ._settings import ScanSettings, parseSettings
from ._wire import (
    ClamdError,
    ClamdUnavailable,
    ReplyParser,
    ScanResult,
    StreamTooLarge,
    instreamFrames,
    interpretPong,
    interpretReplies,
)

__all__ = [
    "END_COMMAND",
    "IDSESSION_COMMAND",
    "ClamdClient",
    "ClamdError",
    "ClamdSession",
    "ClamdUnavailable",
    "InstreamProtocol",
    "PingProtocol",
    "ReplyParser",
    "ScanResult",
    "ScanSession",
    "ScanSettings",
    "Scanner",
    "SessionExchange",
    "SessionProtocol",
    "StaleSession",
    "StreamScanner",
    "StreamTooLarge",
    "UnexpectedReply",
    "VirusScan",
    "instreamFrames",
    "interpretPong",
    "interpretReplies",
    "makeFilter",
    "parseSettings",
    "splitRequestNumber",
]
