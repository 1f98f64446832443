"""
The names of the ways a MIME message can be broken.

A defect never stops parsing: the model always produces a tree, and records
what it had to guess on the part where it guessed.  Filters and policies
decide whether a defect matters (a virus scanner may refuse a message with a
boundary-like line that mail clients could read differently).
"""

from __future__ import annotations

from enum import StrEnum


class Defect(StrEnum):
    """
    One defect of one part.  The values are plain strings, so a defect can be
    logged or compared with text as well as with these constants.
    """

    #: A line that is neither a header field nor a continuation ended the
    #: header block: there was no empty line before the body.
    MISSING_HEADER_BODY_SEPARATOR = "missing header/body separator"
    #: The header block started with a continuation line (leading whitespace).
    FIRST_LINE_IS_CONTINUATION = "first header line is a continuation"
    #: More than one Content-Type field; the first one is used.
    DUPLICATE_CONTENT_TYPE = "duplicate Content-Type"
    #: More than one Content-Transfer-Encoding field; the first one is used.
    DUPLICATE_TRANSFER_ENCODING = "duplicate Content-Transfer-Encoding"
    #: More than one Content-Disposition field; the first one is used.
    DUPLICATE_DISPOSITION = "duplicate Content-Disposition"
    #: The Content-Type value is not C{type/subtype}; the default is used.
    INVALID_CONTENT_TYPE = "invalid Content-Type"
    #: The Content-Transfer-Encoding value needed cleaning up (folded,
    #: padded, commented or quoted): a known evasion.
    IRREGULAR_TRANSFER_ENCODING = "irregular Content-Transfer-Encoding"
    #: The Content-Transfer-Encoding is not one RFC 2045 defines; the body
    #: is passed through undecoded.
    UNKNOWN_TRANSFER_ENCODING = "unknown Content-Transfer-Encoding"
    #: The Content-Disposition type is neither inline nor attachment (RFC
    #: 2183 section 2.8: treat it as attachment).
    UNKNOWN_DISPOSITION = "unknown Content-Disposition"
    #: A multipart without a (usable) boundary parameter: a leaf.
    MISSING_BOUNDARY = "multipart without boundary"
    #: A multipart whose body has no delimiter line at all: a leaf.
    START_BOUNDARY_NOT_FOUND = "start boundary not found"
    #: A multipart whose close delimiter is missing: the last part runs to
    #: the end of the multipart.
    MISSING_FINAL_BOUNDARY = "missing final boundary"
    #: A line starts with the delimiter but has more after it; RFC 2046
    #: parsers ignore it, some clients may split there.
    BOUNDARY_LIKE_LINE = "boundary-like line"
    #: A multipart or message with a transfer encoding other than 7bit, 8bit
    #: or binary (RFC 2045 section 6.4 forbids it).
    ENCODED_CONTAINER = "encoded multipart or message"
    #: The nesting limit was reached: this part is kept as an opaque leaf.
    DEPTH_LIMIT = "depth limit reached"
    #: A multipart has more parts than the part limit: the parts beyond it
    #: are not built (the rest of the body reads as the epilogue).
    PART_LIMIT = "part limit reached"
    #: A header block has more fields than the limit: the fields beyond it
    #: are not kept (the block still ends where it ends).
    HEADER_FIELD_LIMIT = "header field limit reached"
    #: The message's header blocks together have more fields than the
    #: total limit: this block keeps only what was left of it (blocks
    #: scanned later keep none).
    TOTAL_HEADER_FIELD_LIMIT = "total header field limit reached"
    #: A Content-Type or Content-Disposition field has more parameters than
    #: the limit: the ones beyond it are not read.
    PARAMETER_LIMIT = "parameter limit reached"
    #: An RFC 2231 parameter has more continuations than the limit: the
    #: pieces beyond it are not joined.
    CONTINUATION_LIMIT = "continuation limit reached"
    #: A field value has more RFC 2047 encoded-words than the limit: the
    #: words beyond it are shown as written.
    ENCODED_WORD_LIMIT = "encoded-word limit reached"
    #: The base64 body has characters outside the alphabet or bad padding.
    BAD_BASE64 = "bad base64"
