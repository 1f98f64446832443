"""
The MIME message that filters read and edit: the original octets, a lazily
built view of their structure, and edits that splice new octets in.

A message is bytes in, bytes out.  Nothing is ever regenerated: an
unedited message serializes to the very object it was made from, and an
edit replaces one range of octets while every other octet stays as it
arrived (DKIM and S/MIME signatures over untouched parts survive).

Reading is lazy.  L{Message.headers} scans the top header block and
nothing else; the MIME tree is built when L{Message.root} is first used,
and each part splits its own body only when its children are asked for.

Values are frozen.  An edit returns a new L{Message}; the old one is
unchanged and its parts stay valid for further edits of the new one:

    stripped = message.withPartRemoved(message.root.children[2])
    stripped = stripped.withPartReplaced(message.root.children[1], textPart("removed"))

Rules for edits:

  - An edit addresses a part of this message or of any message it was
    derived from by edits.  A part found before an edit is mapped through
    it: it moves with the octets around it, and grows or shrinks when one
    of its descendants was edited.
  - A part that an earlier edit replaced or removed, or that lay inside a
    replaced or removed part, no longer exists: editing it raises
    L{EditError}.  Replacing an ancestor of an edited part is fine; it
    replaces the result.
  - Header edits apply to the top-level header block.  L{withHeaderAdded}
    inserts above the first field (trace-header style), so the last one
    added comes first.  L{withHeaderReplaced} rewrites the first field of
    that name in place and keeps the others unless C{removeOthers} is
    true; if there is none it adds one.  L{withHeaderRemoved} removes every
    field of that name.
  - An edit that changes no octet returns the same message, and a
    message whose edits cancel out is unchanged again (L{Message.changed}
    compares octets, not the number of edits).

Parsing caches its results inside the objects; the caches only ever go
from empty to a value that is the same whoever computes it, so a message
parsed in a worker thread can be read in the reactor thread afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import NamedTuple, cast

from popproxy._mimecodec import decodeBase64, decodeQuotedPrintable, decodeText, isCleanBase64
from popproxy._mimedefects import Defect
from popproxy._mimeheader import (
    IDENTITY_TRANSFER_ENCODINGS,
    Field,
    HeaderBlock,
    StructuredValue,
    clean,
    decodeValue,
    filenameForms,
    hasMoreEncodedWords,
    mediaType,
    normalizeTransferEncoding,
    parseStructured,
    scanHeaderBlock,
)
from popproxy._mimelimits import LIMIT_DEFECTS, LIMIT_KEYS, LimitExceeded, ParseLimits
from popproxy._mimesplice import RangeGone, Splice, applySplices, translateRange
from popproxy._mimestructure import MultipartLayout, splitMultipart
from popproxy._mimewrite import encodedWords, encodeField, textPart

__all__ = [
    "Defect",
    "EditError",
    "Headers",
    "LimitExceeded",
    "Message",
    "ParseLimits",
    "Part",
    "encodeField",
    "encodedWords",
    "textPart",
]

#: Default nesting limit: levels of multipart or message/rfc822 below the
#: top that are parsed; deeper content is an opaque leaf.
DEFAULT_MAX_DEPTH = ParseLimits().maxDepth

_EMPTY: Mapping[str, str] = MappingProxyType({})

#: The fields that say what a part's content is, lowercased.
_CONTENT_FIELDS = (b"content-type", b"content-disposition", b"content-transfer-encoding")


class EditError(Exception):
    """
    An edit that cannot be made: removing the top-level part, a part of
    another message, a part an earlier edit already replaced or removed,
    or replacement octets that contain an enclosing multipart's delimiter.
    """


class _Snapshot:
    """
    One state of a message: its octets and the splices that led there from
    the octets it was created with.  Parts keep the snapshot they were found
    in, which is what lets a later state map them.
    """

    __slots__ = ("data", "lineage", "history", "limits", "fieldsLeft")

    def __init__(
        self, data: bytes, lineage: object, history: tuple[Splice, ...], limits: ParseLimits
    ) -> None:
        self.data = data
        self.lineage = lineage
        self.history = history
        self.limits = limits
        #: What is left of C{limits.maxTotalHeaderFields}: every header
        #: block of these octets draws on it as it is scanned.
        self.fieldsLeft = limits.maxTotalHeaderFields

    def scanHeaderBlock(self, start: int, end: int) -> HeaderBlock:
        """
        The header block at C{data[start:end]}, keeping at most
        C{maxHeaderFields} fields and no more than the message has left of
        C{maxTotalHeaderFields}.  Blocks draw on the total in the order they
        are scanned (document order when the whole tree is walked); a block
        cut short by the total records L{Defect.TOTAL_HEADER_FIELD_LIMIT}.
        """
        perBlock = self.limits.maxHeaderFields
        if self.fieldsLeft < perBlock:
            block = scanHeaderBlock(
                self.data, start, end, self.fieldsLeft, Defect.TOTAL_HEADER_FIELD_LIMIT
            )
        else:
            block = scanHeaderBlock(self.data, start, end, perBlock)
        self.fieldsLeft -= len(block.fields)
        return block


class Headers:
    """
    A read-only view of one header block.  Names are matched without regard
    to case; repeated fields are all kept, in order.
    """

    __slots__ = ("_data", "_block", "_maxWords")

    def __init__(self, data: bytes, block: HeaderBlock, maxWords: int | None = None) -> None:
        self._data = data
        self._block = block
        self._maxWords = maxWords

    def _matching(self, name: str) -> list[Field]:
        try:
            wanted = name.lower().encode("ascii")
        except UnicodeEncodeError:
            return []
        return [field for field in self._block.fields if field.name.lower() == wanted]

    def names(self) -> tuple[str, ...]:
        """
        The field names as written, in order, repeats included.
        """
        return tuple(field.name.decode("ascii") for field in self._block.fields)

    def values(self, name: str) -> tuple[str, ...]:
        """
        Every value of the fields called C{name}, in order, unfolded, RFC
        2047 encoded-words decoded (up to the message's
        C{maxEncodedWords} per value; the rest as written), 8-bit octets
        read as UTF-8 (U+FFFD where that fails).  A block with more fields
        than the message's C{maxHeaderFields} shows only that many.
        """
        return tuple(self._decoded(field) for field in self._matching(name))

    def rawValues(self, name: str) -> tuple[bytes, ...]:
        """
        Every value of the fields called C{name} exactly as sent: the
        octets after the colon, folding included, up to the line end that
        closes the field (excluded).
        """
        return tuple(
            self._data[field.valueStart : field.valueEnd] for field in self._matching(name)
        )

    def get(self, name: str, default: str | None = None) -> str | None:
        """
        The first decoded value of C{name}, or C{default}.
        """
        found = self._matching(name)
        return self._decoded(found[0]) if found else default

    def items(self) -> tuple[tuple[str, str], ...]:
        """
        C{(name, decoded value)} for every field, in order.
        """
        return tuple(
            (field.name.decode("ascii"), self._decoded(field)) for field in self._block.fields
        )

    def fieldRanges(self, name: str) -> tuple[tuple[int, int], ...]:
        """
        Where each field called C{name} lies, from the first octet of its
        name to the end of its line end.
        """
        return tuple((field.start, field.end) for field in self._matching(name))

    @property
    def range(self) -> tuple[int, int]:
        """
        Where the header lines lie (the empty line after them excluded).
        """
        return self._block.start, self._block.end

    def _decoded(self, field: Field) -> str:
        return decodeValue(self._data[field.valueStart : field.valueEnd], self._maxWords)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._matching(name))

    def __len__(self) -> int:
        return len(self._block.fields)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"<Headers {list(self.names())!r}>"


class _HeaderInfo(NamedTuple):
    """
    What a part's header fields say about its content.
    """

    contentType: str
    typeValue: StructuredValue | None
    disposition: str | None
    dispositionValue: StructuredValue | None
    transferEncoding: str
    defects: tuple[Defect, ...]
    #: Every Content-Type and Content-Disposition value, in order (file
    #: names are looked for in all of them).
    typeValues: tuple[StructuredValue, ...]
    dispositionValues: tuple[StructuredValue, ...]


class _Structure(NamedTuple):
    """
    A part's place in the tree: its children and what went wrong finding
    them.
    """

    children: tuple[Part, ...]
    layout: MultipartLayout | None
    defects: tuple[Defect, ...]


#: The structure of every part that is neither a multipart nor a message.
_LEAF = _Structure((), None, ())


class Part:
    """
    One MIME entity of a message: the top-level message itself, a part of
    a multipart, or the message inside a message/rfc822 part.

    Parts are read-only and built on demand; offsets are into the octets of
    the message the part was found in (C{message.toBytes()}, which is
    C{message.raw} for an unedited message).
    """

    __slots__ = ("_snapshot", "_path", "_start", "_end", "_defaultType", "_block", "_info", "_tree")

    def __init__(
        self,
        snapshot: _Snapshot,
        path: tuple[int, ...],
        start: int,
        end: int,
        defaultType: str,
        block: HeaderBlock | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._path = path
        self._start = start
        self._end = end
        self._defaultType = defaultType
        self._block = block
        self._info: _HeaderInfo | None = None
        self._tree: _Structure | None = None

    # Where the part is.

    @property
    def path(self) -> tuple[int, ...]:
        """
        The child indexes leading from the top-level part, which is C{()}.
        """
        return self._path

    @property
    def range(self) -> tuple[int, int]:
        """
        The part's octets: header lines, empty line and body.  For a part of
        a multipart, the delimiter lines around it are excluded, and so is
        the line end before the next delimiter (RFC 2046 counts it as part
        of the delimiter).
        """
        return self._start, self._end

    @property
    def headerRange(self) -> tuple[int, int]:
        """
        The header lines, up to the empty line that ends them (excluded).
        """
        block = self._headerBlock()
        return block.start, block.end

    @property
    def bodyRange(self) -> tuple[int, int]:
        """
        The body: from after the empty line to the end of the part.
        """
        return self._headerBlock().bodyStart, self._end

    def body(self) -> bytes:
        """
        The body's octets as sent (still transfer-encoded).
        """
        return self._snapshot.data[self._headerBlock().bodyStart : self._end]

    # What the header fields say.

    @property
    def headers(self) -> Headers:
        """
        This part's own header fields.
        """
        return Headers(
            self._snapshot.data, self._headerBlock(), self._snapshot.limits.maxEncodedWords
        )

    @property
    def contentType(self) -> str:
        """
        The lowercased C{type/subtype}; C{text/plain} if absent or invalid
        (C{message/rfc822} for a part of a multipart/digest, RFC 2046
        section 5.1.5).
        """
        return self._headerInfo().contentType

    @property
    def params(self) -> Mapping[str, str]:
        """
        The Content-Type parameters by lowercased name, RFC 2231 values and
        continuations decoded (they win over a plain value of the same
        name).
        """
        value = self._headerInfo().typeValue
        return MappingProxyType(value.mapping()) if value is not None else _EMPTY

    @property
    def charset(self) -> str | None:
        """
        The C{charset} parameter, lowercased.
        """
        charset = self.params.get("charset")
        return charset.strip().lower() if charset is not None else None

    @property
    def disposition(self) -> str | None:
        """
        C{"inline"}, C{"attachment"}, or None without a Content-Disposition.
        An unknown disposition type counts as C{"attachment"} (RFC 2183
        section 2.8) and is recorded as a defect.
        """
        return self._headerInfo().disposition

    @property
    def dispositionParams(self) -> Mapping[str, str]:
        """
        The Content-Disposition parameters, like L{params}.
        """
        value = self._headerInfo().dispositionValue
        return MappingProxyType(value.mapping()) if value is not None else _EMPTY

    @property
    def filenames(self) -> tuple[str, ...]:
        """
        Every name a mail client might show for this part, most likely
        first, each once: Content-Disposition C{filename*} (RFC 2231,
        continuations and charsets), C{filename}, Content-Type C{name*},
        C{name}, then the unusual places (Content-Disposition C{name},
        Content-Type C{filename}), from every occurrence of those fields.
        A quoted value yields its RFC 2047-decoded form and the form as
        written, and the text between the quotes with backslashes kept if
        that differs.  Names are not otherwise cleaned up: trailing dots,
        spaces and directory parts are as sent.
        """
        info = self._headerInfo()
        typeValues, dispositionValues = info.typeValues, info.dispositionValues
        maxWords = self._snapshot.limits.maxEncodedWords
        candidates: list[str] = []
        order = (
            (dispositionValues, "filename"),
            (typeValues, "name"),
            (dispositionValues, "name"),
            (typeValues, "filename"),
        )
        for values, name in order:
            for extended in (True, False):
                for value in values:
                    for parameter in value.parameters:
                        if parameter.name != name or parameter.extended is not extended:
                            continue
                        if extended:
                            candidates.append(clean(parameter.value))
                        else:
                            candidates.extend(filenameForms(parameter, maxWords))
        return tuple(dict.fromkeys(candidate for candidate in candidates if candidate))

    @property
    def filename(self) -> str | None:
        """
        The name a client would most likely show: the first of
        L{filenames}.
        """
        names = self.filenames
        return names[0] if names else None

    @property
    def transferEncoding(self) -> str:
        """
        The Content-Transfer-Encoding, normalized: lowercased, with
        whitespace, folding, comments and quotes removed (C{Base\\r\\n 64}
        is C{base64}); C{7bit} if absent.  An unknown value is kept
        (normalized) and recorded as a defect, as is a value that needed
        more than lowercasing.
        """
        return self._headerInfo().transferEncoding

    @property
    def boundary(self) -> str | None:
        """
        The boundary of a multipart, as declared.
        """
        octets = self._boundaryOctets()
        return clean(octets.decode("utf-8", "surrogateescape")) if octets else None

    def _boundaryOctets(self) -> bytes | None:
        value = self._headerInfo().typeValue
        if value is None or not self.contentType.startswith("multipart/"):
            return None
        # RFC 2046 section 5.1.1: a boundary does not end with a space.
        boundary = (value.exact("boundary") or "").rstrip(" \t")
        return boundary.encode("utf-8", "surrogateescape") if boundary else None

    # The tree.

    @property
    def isMultipart(self) -> bool:
        """
        A multipart whose body could be split into parts.  A multipart
        without a boundary, without any delimiter line, or beyond the depth
        limit is a leaf (see L{defects}).
        """
        return self._structure().layout is not None

    @property
    def children(self) -> tuple[Part, ...]:
        """
        The parts of a multipart; for a message/rfc822 part, the top-level
        part of the embedded message; otherwise empty.
        """
        return self._structure().children

    def walk(self) -> Iterator[Part]:
        """
        This part and all its descendants, depth first, in order.
        """
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            yield part
            stack.extend(reversed(part.children))

    def preamble(self) -> bytes:
        """
        The octets of a multipart before its first delimiter (clients do not
        show them, but they travel with the message).
        """
        layout = self._structure().layout
        if layout is None:
            return b""
        return self._snapshot.data[self._headerBlock().bodyStart : layout.preambleEnd]

    def epilogue(self) -> bytes:
        """
        The octets of a multipart after its close delimiter line.
        """
        layout = self._structure().layout
        if layout is None:
            return b""
        return self._snapshot.data[layout.epilogueStart : self._end]

    # Content.

    def payload(self) -> bytes:
        """
        The body with its transfer encoding undone: base64 (leniently:
        whitespace, junk and missing padding tolerated) and
        quoted-printable are decoded, anything else is returned as is.  A
        multipart's payload is its body.
        """
        if self.isMultipart:
            return self.body()
        encoding = self.transferEncoding
        if encoding == "base64":
            return decodeBase64(self.body())
        if encoding == "quoted-printable":
            return decodeQuotedPrintable(self.body())
        return self.body()

    def text(self) -> str:
        """
        The payload decoded with the part's charset (UTF-8 if absent or
        unknown; undecodable octets become U+FFFD).
        """
        return decodeText(self.payload(), self.charset)

    @property
    def defects(self) -> tuple[Defect, ...]:
        """
        What was wrong with this part (not with its descendants), in the
        order found, including the parse limits it reached.  Checking
        base64 bodies makes this cost one pass over the body of a base64
        leaf.
        """
        found = [*self._headerBlock().defects, *self._headerInfo().defects]
        if self._hasTooManyEncodedWords():
            found.append(Defect.ENCODED_WORD_LIMIT)
        structure = self._structure()
        found.extend(structure.defects)
        if (
            structure.layout is None
            and self.transferEncoding == "base64"
            and not isCleanBase64(self.body())
        ):
            found.append(Defect.BAD_BASE64)
        return tuple(dict.fromkeys(found))

    def _limitReached(self) -> str | None:
        """
        The first parse limit this part (not its descendants) reaches, by
        attribute name (C{"maxParts"} ...), or C{None}.
        """
        found = [*self._headerBlock().defects, *self._headerInfo().defects]
        if self._hasTooManyEncodedWords():
            found.append(Defect.ENCODED_WORD_LIMIT)
        found.extend(self._structure().defects)
        for defect in found:
            if defect in LIMIT_DEFECTS:
                return LIMIT_DEFECTS[defect]
        return None

    def _hasTooManyEncodedWords(self) -> bool:
        data = self._snapshot.data
        limit = self._snapshot.limits.maxEncodedWords
        block = self._headerBlock()
        # No field holds more "=?" than the whole block: one count in place
        # usually settles it, then one per field spares a copy of each value.
        if data.count(b"=?", block.start, block.end) <= limit:
            return False
        return any(
            data.count(b"=?", field.valueStart, field.valueEnd) > limit
            and hasMoreEncodedWords(data[field.valueStart : field.valueEnd], limit)
            for field in block.fields
        )

    # Lazy parsing.

    def _headerBlock(self) -> HeaderBlock:
        if self._block is None:
            self._block = self._snapshot.scanHeaderBlock(self._start, self._end)
        return self._block

    def _contentFields(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """
        The raw values of the Content-Type, Content-Disposition and
        Content-Transfer-Encoding fields, in one pass over the block.
        """
        data = self._snapshot.data
        found: dict[bytes, list[bytes]] = {name: [] for name in _CONTENT_FIELDS}
        for field in self._headerBlock().fields:
            values = found.get(field.name.lower())
            if values is not None:
                values.append(data[field.valueStart : field.valueEnd])
        return (
            found[b"content-type"],
            found[b"content-disposition"],
            found[b"content-transfer-encoding"],
        )

    def _headerInfo(self) -> _HeaderInfo:
        if self._info is not None:
            return self._info
        defects: list[Defect] = []
        types, dispositions, encodings = self._contentFields()
        limits = self._snapshot.limits
        typeValues = tuple(
            parseStructured(raw, limits.maxParameters, limits.maxContinuations) for raw in types
        )
        dispositionValues = tuple(
            parseStructured(raw, limits.maxParameters, limits.maxContinuations)
            for raw in dispositions
        )
        for value in typeValues + dispositionValues:
            defects.extend(value.defects)
        contentType = self._defaultType
        typeValue = None
        if typeValues:
            if len(typeValues) > 1:
                defects.append(Defect.DUPLICATE_CONTENT_TYPE)
            typeValue = typeValues[0]
            declared = mediaType(typeValue.main)
            if declared is None:
                defects.append(Defect.INVALID_CONTENT_TYPE)
            else:
                contentType = declared
        disposition = None
        dispositionValue = None
        if dispositionValues:
            if len(dispositionValues) > 1:
                defects.append(Defect.DUPLICATE_DISPOSITION)
            dispositionValue = dispositionValues[0]
            kind = dispositionValue.main.strip().lower()
            if kind in ("inline", "attachment"):
                disposition = kind
            elif kind:
                disposition = "attachment"
                defects.append(Defect.UNKNOWN_DISPOSITION)
        transferEncoding = "7bit"
        if encodings:
            if len(encodings) > 1:
                defects.append(Defect.DUPLICATE_TRANSFER_ENCODING)
            transferEncoding, encodingDefects = normalizeTransferEncoding(encodings[0])
            defects.extend(encodingDefects)
        self._info = _HeaderInfo(
            contentType,
            typeValue,
            disposition,
            dispositionValue,
            transferEncoding,
            tuple(defects),
            typeValues,
            dispositionValues,
        )
        return self._info

    def _structure(self) -> _Structure:
        if self._tree is None:
            self._tree = self._findStructure()
        return self._tree

    def _findStructure(self) -> _Structure:
        contentType = self.contentType
        isMultipart = contentType.startswith("multipart/")
        isMessage = contentType in ("message/rfc822", "message/global")
        if not (isMultipart or isMessage):
            return _LEAF
        if len(self._path) >= self._snapshot.limits.maxDepth:
            return _Structure((), None, (Defect.DEPTH_LIMIT,))
        defects: list[Defect] = []
        if self.transferEncoding not in IDENTITY_TRANSFER_ENCODINGS:
            defects.append(Defect.ENCODED_CONTAINER)
            if isMessage:
                # The embedded message is not in the octets as sent; a
                # filter can decode the payload and parse it separately.
                return _Structure((), None, tuple(defects))
        bodyStart = self._headerBlock().bodyStart
        if isMessage:
            child = Part(self._snapshot, (*self._path, 0), bodyStart, self._end, "text/plain")
            return _Structure((child,), None, tuple(defects))
        boundary = self._boundaryOctets()
        if not boundary:
            defects.append(Defect.MISSING_BOUNDARY)
            return _Structure((), None, tuple(defects))
        layout = splitMultipart(
            self._snapshot.data, bodyStart, self._end, boundary, self._snapshot.limits.maxParts
        )
        defects.extend(layout.defects)
        if not layout.found:
            return _Structure((), None, tuple(defects))
        childType = "message/rfc822" if contentType == "multipart/digest" else "text/plain"
        children = tuple(
            Part(self._snapshot, (*self._path, index), part.start, part.end, childType)
            for index, part in enumerate(layout.parts)
        )
        return _Structure(children, layout, tuple(defects))

    def __repr__(self) -> str:
        return f"<Part {self._path!r} {self.contentType} [{self._start}:{self._end}]>"


class Message:
    """
    A mail message as octets, with a lazily parsed MIME view and splicing
    edits.  Create one with L{Message.fromBytes}.
    """

    __slots__ = ("_raw", "_snapshot", "_block", "_root")

    def __init__(
        self, raw: bytes, *, maxDepth: int | None = None, limits: ParseLimits | None = None
    ) -> None:
        if not isinstance(cast(object, raw), bytes):  # untyped callers pass bytearray, memoryview
            raw = bytes(raw)
        limits = limits or ParseLimits()
        if maxDepth is not None and maxDepth != limits.maxDepth:
            limits = replace(limits, maxDepth=maxDepth)
        self._raw = raw
        self._snapshot = _Snapshot(raw, object(), (), limits)
        self._block: HeaderBlock | None = None
        self._root: Part | None = None

    @classmethod
    def fromBytes(
        cls, raw: bytes, *, maxDepth: int | None = None, limits: ParseLimits | None = None
    ) -> Message:
        """
        Wrap a message's octets.  Nothing is parsed yet.

        @param limits: how much of the message is built (default:
            L{ParseLimits}C{()}).  Parsing stops at each limit and records
            a defect where it stopped (L{Defect.PART_LIMIT} ...);
            L{checkLimits} tells whether the message goes over any.
        @param maxDepth: replaces C{limits.maxDepth}: how many levels of
            multipart or message/rfc822 nesting below the top are parsed;
            deeper content becomes an opaque leaf with L{Defect.DEPTH_LIMIT}.
        """
        return cls(raw, maxDepth=maxDepth, limits=limits)

    @classmethod
    def _derived(cls, raw: bytes, snapshot: _Snapshot) -> Message:
        message = cls.__new__(cls)
        message._raw = raw
        message._snapshot = snapshot
        message._block = None
        message._root = None
        return message

    # The octets.

    @property
    def raw(self) -> bytes:
        """
        The octets the message was created with, before any edit.
        """
        return self._raw

    def toBytes(self) -> bytes:
        """
        The message with every edit applied; L{raw} itself if none changed
        anything.
        """
        return self._snapshot.data

    @property
    def changed(self) -> bool:
        """
        Whether the edits changed any octet (if not, L{toBytes} returns
        L{raw} itself).
        """
        return self._snapshot.data is not self._raw

    @property
    def maxDepth(self) -> int:
        """
        The nesting limit this message was created with (edits keep it).
        """
        return self._snapshot.limits.maxDepth

    @property
    def limits(self) -> ParseLimits:
        """
        The parse limits this message was created with (edits keep them).
        """
        return self._snapshot.limits

    def checkLimits(self) -> None:
        """
        Walk the whole tree, in order, and stop at the first parse limit
        the message goes over.  Nothing beyond a limit is built: a
        multipart splits into at most C{maxParts} parts, a header block
        keeps at most C{maxHeaderFields} fields and the blocks together at
        most C{maxTotalHeaderFields}, and so on.

        @raise LimitExceeded: naming the limit and the part where it was
            reached.
        """
        limits = self._snapshot.limits
        count = -1  # the top-level part is not counted
        for part in self.walk():
            count += 1
            if count > limits.maxParts:
                raise LimitExceeded("max_parts", limits.maxParts, part.path)
            reached = part._limitReached()
            if reached is not None:
                raise LimitExceeded(LIMIT_KEYS[reached], getattr(limits, reached), part.path)

    @property
    def lineEnding(self) -> bytes:
        """
        The message's line ending, judged by its first line: CRLF or LF
        (CRLF if there is no line end at all).  New header fields use it;
        pass it to L{textPart}.
        """
        data = self._snapshot.data
        newline = data.find(b"\n")
        if newline == -1 or (newline > 0 and data[newline - 1] == 0x0D):
            return b"\r\n"
        return b"\n"

    # Reading.

    def _headerBlock(self) -> HeaderBlock:
        if self._block is None:
            self._block = self._snapshot.scanHeaderBlock(0, len(self._snapshot.data))
        return self._block

    @property
    def headers(self) -> Headers:
        """
        The top-level header fields.  Reading them does not look at the
        body.
        """
        return Headers(
            self._snapshot.data, self._headerBlock(), self._snapshot.limits.maxEncodedWords
        )

    @property
    def root(self) -> Part:
        """
        The top-level part; the tree below it is built as it is explored.
        """
        if self._root is None:
            data = self._snapshot.data
            self._root = Part(self._snapshot, (), 0, len(data), "text/plain", self._headerBlock())
        return self._root

    def walk(self) -> Iterator[Part]:
        """
        Every part, depth first, in order, starting with L{root}.
        """
        return self.root.walk()

    def partAt(self, path: tuple[int, ...]) -> Part:
        """
        The part at C{path} (see L{Part.path}).

        @raise IndexError: there is no such part.
        """
        part = self.root
        for depth, index in enumerate(path):
            children = part.children
            if not 0 <= index < len(children):
                raise IndexError(f"no part at {tuple(path[: depth + 1])!r}")
            part = children[index]
        return part

    # Editing.

    def withBytes(self, raw: bytes) -> Message:
        """
        Replace the whole message.  Parts found before can no longer be
        edited.
        """
        data = self._snapshot.data
        return self._edited([(0, len(data), bytes(raw))])

    def withHeaderAdded(self, name: str, value: str) -> Message:
        """
        Add a header field above the existing ones.  A value that is not
        printable ASCII is RFC 2047-encoded; long values are folded; the
        message's own line ending is used.

        @raise ValueError: invalid name, or a line break in C{value}.
        """
        field = encodeField(name, value, self.lineEnding)
        at = self._headerBlock().insertAt
        return self._edited([(at, at, field)])

    def withHeaderReplaced(self, name: str, value: str, *, removeOthers: bool = False) -> Message:
        """
        Rewrite the first field called C{name} in place, keeping its
        position; the other fields of that name stay unless
        C{removeOthers}.  Without such a field, this adds one like
        L{withHeaderAdded}.

        @raise ValueError: invalid name, or a line break in C{value}.
        """
        field = encodeField(name, value, self.lineEnding)
        ranges = self.headers.fieldRanges(name)
        if not ranges:
            at = self._headerBlock().insertAt
            return self._edited([(at, at, field)])
        (start, end), *others = ranges
        edits = [(start, end, field)]
        if removeOthers:
            edits.extend((otherStart, otherEnd, b"") for otherStart, otherEnd in others)
        return self._edited(edits)

    def withHeaderRemoved(self, name: str) -> Message:
        """
        Remove every top-level field called C{name}.
        """
        return self._edited([(start, end, b"") for start, end in self.headers.fieldRanges(name)])

    def withPartReplaced(self, part: Part, newPart: bytes) -> Message:
        """
        Replace a part (header lines, empty line and body) with
        C{newPart}, which must be a complete MIME part in the message's
        line ending, for example from L{textPart}.  The delimiter lines
        around the part are kept.  Should the part not start a line of its
        own (a truncated message), a line end is inserted before it.

        @raise EditError: the part is not (or no longer) in this message,
            or C{newPart} contains a line starting with the delimiter of an
            enclosing multipart (it would change the structure).
        """
        return self.withPartsEdited([(part, bytes(newPart))])

    def _replacement(self, target: Part, newPart: bytes) -> tuple[int, int, bytes]:
        """
        The splice that replaces C{target}, a part of this message, with
        C{newPart}; see L{withPartReplaced}.
        """
        for ancestor in self._ancestors(target):
            boundary = ancestor._boundaryOctets()
            if boundary is None:
                continue
            marker = re.escape(b"--" + boundary)
            if re.search(rb"(?:^|\n)" + marker, newPart):
                raise EditError(
                    f"the new part contains the delimiter of the multipart at {ancestor.path!r}"
                )
        start, end = target.range
        return start, end, self._separatorBefore(target) + newPart

    def _separatorBefore(self, part: Part) -> bytes:
        """
        What must go before new octets replacing C{part} so that they start
        a part of their own: normally nothing.  A part can start on the line
        before it (a delimiter line without a line end, at the very end of
        a truncated message), and the message inside a message/rfc822 part
        can follow its header block without an empty line.
        """
        data = self._snapshot.data
        start = part.range[0]
        separator = b""
        if start > 0 and data[start - 1] != 0x0A:
            separator += self.lineEnding
        if part.path:
            parent = self.partAt(part.path[:-1])
            block = parent._headerBlock()
            if not parent.isMultipart and block.bodyStart == block.end:
                separator += self.lineEnding
        return separator

    def withPartRemoved(self, part: Part) -> Message:
        """
        Remove a part of a multipart together with its delimiter line; the
        multipart stays well-formed.

        @raise EditError: the part is the top-level part, the message
            inside a message/rfc822 part (remove or replace that part), the
            only part of its multipart (replace it instead, e.g. with a
            L{textPart} notice), or not (or no longer) in this message.
        """
        return self.withPartsEdited([(part, None)])

    def withPartsRemoved(self, parts: Iterable[Part]) -> Message:
        """
        Remove many parts at once, as L{withPartRemoved} would one after
        another; see L{withPartsEdited}.
        """
        return self.withPartsEdited((part, None) for part in parts)

    def withPartsEdited(self, edits: Iterable[tuple[Part, bytes | None]]) -> Message:
        """
        Make many part edits at once: C{(part, newPart)} replaces C{part}
        as L{withPartReplaced} does, C{(part, None)} removes it as
        L{withPartRemoved} does.

        The result is, octet for octet, that of making the edits one after
        another in the order given, and an edit the sequence would refuse
        raises the same L{EditError} (a part edited twice, a part inside
        one an earlier edit replaced or removed, the last part of a
        multipart removed...); replacing a part after editing some of its
        descendants replaces the result.  (One difference: where an edit
        changes how a neighbour is read, for example when the last part of
        a multipart without a close delimiter is removed and the part
        before it takes the line end that preceded the delimiter, the
        sequence cannot address that neighbour any more; the batch edits
        every part as it is in this message.)  But the message is split once
        and its octets are spliced once: the cost is one pass over the
        message and sorting the edits, however many there are, where a
        chain of single edits splits the message again after every edit.
        """
        data = self._snapshot.data
        # What the edits splice, in this message's offsets, by the path of
        # the part they edit; the proper prefixes of those paths; how many
        # parts each multipart lost so far.
        planned: dict[tuple[int, ...], tuple[int, int, bytes]] = {}
        below: set[tuple[int, ...]] = set()
        removed: dict[tuple[int, ...], int] = {}
        for part, newPart in edits:
            target = self._locate(part)
            path = target.path
            if any(path[:depth] in planned for depth in range(len(path) + 1)):
                raise EditError(
                    f"the part at {part.path!r} was replaced or removed by an earlier edit"
                )
            if newPart is None:
                edit = self._removal(target, removed.get(path[:-1], 0))
                removed[path[:-1]] = removed.get(path[:-1], 0) + 1
            else:
                edit = self._replacement(target, bytes(newPart))
            inner = (
                [other for other in planned if other[: len(path)] == path] if path in below else []
            )
            start, end, replacement = edit
            if newPart is not None and self._spliced(data, start, end, inner, planned) == (
                replacement
            ):
                # Changes nothing, so it removes nothing either: later
                # edits may still address this part.
                continue
            for other in inner:
                del planned[other]
            planned[path] = edit
            below.update(path[:depth] for depth in range(len(path)))
        return self._edited(list(planned.values()))

    @staticmethod
    def _spliced(
        data: bytes,
        start: int,
        end: int,
        inner: list[tuple[int, ...]],
        planned: dict[tuple[int, ...], tuple[int, int, bytes]],
    ) -> bytes:
        """
        C{data[start:end]} with the planned edits of the parts at C{inner}
        (all inside that range) applied.
        """
        pieces = []
        position = start
        for editStart, editEnd, replacement in sorted(planned[path] for path in inner):
            pieces.append(data[position:editStart])
            pieces.append(replacement)
            position = editEnd
        pieces.append(data[position:end])
        return b"".join(pieces)

    def _removal(self, target: Part, alreadyRemoved: int) -> tuple[int, int, bytes]:
        """
        The splice that removes C{target}, a part of this message, when
        C{alreadyRemoved} of its siblings are being removed too; see
        L{withPartRemoved}.
        """
        if not target.path:
            raise EditError("the top-level part cannot be removed; use withBytes")
        parent = self.partAt(target.path[:-1])
        layout = parent._structure().layout
        if layout is None:
            raise EditError(
                "the message inside a message/rfc822 part cannot be removed alone; "
                "remove or replace the message/rfc822 part"
            )
        if len(layout.parts) - alreadyRemoved <= 1:
            raise EditError("the only part of a multipart cannot be removed; replace it")
        encapsulated = layout.parts[target.path[-1]]
        return encapsulated.delimiterStart, encapsulated.nextDelimiter, b""

    def _ancestors(self, part: Part) -> list[Part]:
        ancestors = []
        node = self.root
        for index in part.path:
            ancestors.append(node)
            node = node.children[index]
        return ancestors

    def _locate(self, part: Part) -> Part:
        """
        The part of this message that C{part} (found in this message or in
        one it was derived from) has become.
        """
        if not isinstance(part, Part):
            raise TypeError(f"expected a Part, got {type(part).__name__}")
        mine = self._snapshot
        theirs = part._snapshot
        if theirs is mine:
            return part
        if theirs.lineage is not mine.lineage:
            raise EditError("the part belongs to another message")
        done = len(theirs.history)
        # Splices are compared by identity: two edits that happen to
        # splice the same range with as many octets are still different.
        if len(mine.history) < done or any(
            a is not b for a, b in zip(mine.history, theirs.history, strict=False)
        ):
            raise EditError("the part belongs to a different edit of this message")
        start, end = part.range
        try:
            for splice in mine.history[done:]:
                start, end = translateRange(start, end, splice)
        except RangeGone:
            raise EditError(
                f"the part at {part.path!r} was replaced or removed by an earlier edit"
            ) from None
        depth = len(part.path)
        node = self.root
        while True:
            if node.range == (start, end) and len(node.path) == depth:
                return node
            for child in node.children if len(node.path) < depth else ():
                childStart, childEnd = child.range
                if childStart <= start and end <= childEnd:
                    node = child
                    break
            else:
                raise EditError(f"the part at {part.path!r} is no longer a part of this message")

    def _edited(self, edits: list[tuple[int, int, bytes]]) -> Message:
        data = self._snapshot.data
        effective = [edit for edit in edits if data[edit[0] : edit[1]] != edit[2]]
        if not effective:
            return self
        newData, splices = applySplices(data, effective)
        if newData == self._raw:
            newData = self._raw
        snapshot = _Snapshot(
            newData,
            self._snapshot.lineage,
            self._snapshot.history + tuple(splices),
            self._snapshot.limits,
        )
        return Message._derived(self._raw, snapshot)

    def __repr__(self) -> str:
        state = "changed" if self.changed else "unchanged"
        return f"<Message {len(self._snapshot.data)} octets, {state}>"
