"""
The scan filter's settings: their defaults, the notice templates, and the
checks that turn a C{[[filter]]} settings table into L{ScanSettings}.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popproxy.interfaces import SettingsReader

MODES = ("parts", "message", "both")
FAILURE_POLICIES = ("tempfail", "deliver")

DEFAULT_PART_NOTICE = """\
A virus was found in an attachment of this message, and the attachment
was removed.

  Virus:          {virus}
  Attachment:     {filename}
  Quarantine id:  {id}

If you need the original, ask your administrator and give the quarantine id.
"""

DEFAULT_MESSAGE_NOTICE = """\
A virus was found in a message sent to you, and the message was replaced
by this notice.

  Virus:    {virus}
  From:     {sender}
  Subject:  {subject}

The original is kept in quarantine; its id is in the X-Popproxy-Quarantine-Id
header of this notice.  If you need it, ask your administrator.
"""

DEFAULT_SUBJECT = "[VIRUS] {subject}"

_TEMPLATE_FIELDS = {
    "notice": ("virus", "filename", "id", "part", "url"),
    "message_notice": ("virus", "sender", "subject"),
    "subject": ("virus", "subject"),
}

# RFC 5322 field names: printable ASCII except the colon.
_FIELD_NAME_CHARACTERS = frozenset(chr(c) for c in range(33, 127)) - {":"}


@dataclass(frozen=True)
class ScanSettings:
    """
    The scan filter's settings, checked (see docs/plugins/scan.md).
    """

    address: str = "unix:/run/clamav/clamd.ctl"
    mode: str = "parts"
    maxStream: int = 25 * 1024 * 1024
    maxConnections: int = 4
    timeout: float = 20.0
    onFailure: str = "tempfail"
    onOversize: str = "deliver"
    header: str = "X-Virus-Scanned"
    stampClean: bool = True
    notice: str = DEFAULT_PART_NOTICE
    messageNotice: str = DEFAULT_MESSAGE_NOTICE
    subject: str = DEFAULT_SUBJECT


def _checkTemplate(name: str, template: str) -> str:
    allowed = _TEMPLATE_FIELDS[name]
    try:
        for _, fieldName, _, _ in string.Formatter().parse(template):
            if fieldName is not None and fieldName not in allowed:
                raise ValueError(
                    f"{name} may use {', '.join('{' + f + '}' for f in allowed)}, "
                    f"not {{{fieldName}}}"
                )
        template.format(**{f: "x" for f in allowed})
    except (IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"{name} is not a usable template: {e}") from None
    except ValueError as e:
        raise ValueError(f"{name} is not a usable template: {e}") from None
    return template


def parseSettings(settings: Mapping[str, Any]) -> ScanSettings:
    """
    Check the settings table of a scan entry.

    @raise ValueError: an unknown setting, or a value that cannot be used.
    """
    read = SettingsReader(settings)
    default = ScanSettings()
    address = read.string("address", default.address)
    if ":" not in address:
        raise ValueError(
            f"address must be a client endpoint string such as 'unix:/run/clamav/clamd.ctl' "
            f"or 'tcp:127.0.0.1:3310', not {address!r}"
        )
    header = read.string("header", default.header)
    if not header or not set(header) <= _FIELD_NAME_CHARACTERS:
        raise ValueError(f"header must be a header field name, not {header!r}")
    parsed = ScanSettings(
        address=address,
        mode=read.choice("mode", default.mode, MODES),
        maxStream=read.integer("max_stream", default.maxStream, minimum=1),
        maxConnections=read.integer("max_connections", default.maxConnections, minimum=1),
        timeout=read.number("timeout", default.timeout, above=0),
        onFailure=read.choice("on_failure", default.onFailure, FAILURE_POLICIES),
        onOversize=read.choice("on_oversize", default.onOversize, FAILURE_POLICIES),
        header=header,
        stampClean=read.boolean("stamp_clean", default.stampClean),
        notice=_checkTemplate("notice", read.string("notice", default.notice)),
        messageNotice=_checkTemplate(
            "message_notice", read.string("message_notice", default.messageNotice)
        ),
        subject=_checkTemplate("subject", read.string("subject", default.subject)),
    )
    read.finish()
    return parsed
