"""
How much of a message the MIME model builds: the limits on parts, nesting,
header fields (per block and in all), parameters, RFC 2231 continuations
and RFC 2047 encoded words, and the error that says which one a message
goes over.

The parsers stop building at a limit and record a defect on the part where
they stopped; L{popproxy.message.Message.checkLimits} walks a whole message
and raises L{LimitExceeded} at the first limit it goes over, which is what
the filter chain's C{over_limits} policy acts on.

The defaults leave room for any mail a person sends or a list server
relays, and bound the work and memory a crafted message can cost:

  - C{max_parts} 1000: MIME entities below the top (a mailing-list digest
    of a hundred messages with a few parts each has a few hundred; mail
    clients and providers cap attachments at tens).
  - C{max_depth} 30: multipart or message/rfc822 levels below the top;
    forwarding a forward of a forward is a handful.
  - C{max_header_fields} 1000 per header block: a message that crossed
    fifty relays (Postfix's C{hopcount_limit}) with DKIM, ARC and list
    headers has a few hundred at most.
  - C{max_total_header_fields} 10000 over every header block of the
    message: a thousand parts with a handful of fields each and a long
    top-level header.  This is what bounds the memory a message of tiny
    fields costs (about 200 octets per field kept, however short).
  - C{max_parameters} 100 per Content-Type or Content-Disposition field,
    counting every C{name=value} item (each RFC 2231 piece is one): real
    fields carry fewer than ten.
  - C{max_continuations} 50 per parameter: a 255-octet UTF-8 file name,
    percent-encoded, fills about a dozen pieces of a folded line.
  - C{max_encoded_words} 1000 per field: a long non-ASCII subject takes
    tens, a To: field with hundreds of named recipients hundreds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from popproxy._mimedefects import Defect


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """
    The limits one message is parsed under (frozen; C{dataclasses.replace}
    makes another).  Every limit is at least 1, but C{maxDepth} may be 0
    (only the top-level part is parsed).

    @ivar maxParts: MIME entities below the top-level part, counted over
        the whole message; a multipart never gets more children than this.
    @ivar maxDepth: levels of multipart or message/rfc822 nesting below
        the top that are parsed; deeper content is an opaque leaf.
    @ivar maxHeaderFields: fields kept per header block.
    @ivar maxParameters: C{name=value} items read per structured field.
    @ivar maxContinuations: RFC 2231 pieces joined per parameter.
    @ivar maxEncodedWords: RFC 2047 encoded-words decoded per field value.
    @ivar maxTotalHeaderFields: fields kept over every header block of the
        message together, in the order the blocks are scanned (last, so
        that positional arguments keep their meaning).
    """

    maxParts: int = 1000
    maxDepth: int = 30
    maxHeaderFields: int = 1000
    maxParameters: int = 100
    maxContinuations: int = 50
    maxEncodedWords: int = 1000
    maxTotalHeaderFields: int = 10000

    def __post_init__(self) -> None:
        for each in fields(self):
            value = getattr(self, each.name)
            least = 0 if each.name == "maxDepth" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"{each.name} must be an integer of at least {least}, not {value!r}"
                )


#: The configuration key of each limit, by attribute name (the name
#: L{LimitExceeded.limit} and the C{X-Popproxy-Unchecked} header use).
LIMIT_KEYS = {
    "maxParts": "max_parts",
    "maxDepth": "max_depth",
    "maxHeaderFields": "max_header_fields",
    "maxTotalHeaderFields": "max_total_header_fields",
    "maxParameters": "max_parameters",
    "maxContinuations": "max_continuations",
    "maxEncodedWords": "max_encoded_words",
}

#: The defect a parser records where it stopped at each limit.
LIMIT_DEFECTS = {
    Defect.PART_LIMIT: "maxParts",
    Defect.DEPTH_LIMIT: "maxDepth",
    Defect.HEADER_FIELD_LIMIT: "maxHeaderFields",
    Defect.TOTAL_HEADER_FIELD_LIMIT: "maxTotalHeaderFields",
    Defect.PARAMETER_LIMIT: "maxParameters",
    Defect.CONTINUATION_LIMIT: "maxContinuations",
    Defect.ENCODED_WORD_LIMIT: "maxEncodedWords",
}


class LimitExceeded(Exception):
    """
    A message goes over one of its L{ParseLimits}.

    @ivar limit: the configuration key of the limit (C{"max_parts"} ...).
    @ivar value: the limit's value.
    @ivar path: the path of the part where it was found (C{()} for the
        top-level part).
    """

    def __init__(self, limit: str, value: int, path: tuple[int, ...]) -> None:
        super().__init__(f"message exceeds parse limit {limit} ({value}) at part {path!r}")
        self.limit = limit
        self.value = value
        self.path = path
