"""
Header blocks of MIME entities: where a block ends, which fields it holds,
and what their values mean once decoded (RFC 5322 unfolding, RFC 2047
encoded-words, RFC 2045 and RFC 2231 parameters, transfer encodings).

A block is described by offsets into the message's bytes; nothing is
copied or rewritten.  Scanning stops at the first empty line, so the cost
of reading headers is the size of the headers, whatever follows.

Text decoded from header octets uses "surrogateescape" internally, so a
value that goes back to octets (a boundary) is exactly what was sent;
L{clean} turns the escapes into U+FFFD for everything shown to filters.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from popproxy._mimecodec import decodeBase64, decodeQEncoding, decodeText
from popproxy._mimedefects import Defect

# A header field: its name, the colon, and the rest of its first line and
# of every continuation line (a line starting with a space or a tab), each
# with its line end.  Group 2 is the value up to the last LF (a CR before
# that LF still belongs to the line end).
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]++)[ \t]*+:([^\n]*+(?:\n[ \t][^\n]*+)*+)\n?")
# Any number of whole fields, each with its line end (for skipping the
# fields beyond the limit without a step per field).
_FIELDS = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]++[ \t]*+:[^\n]*+(?:\n[ \t][^\n]*+)*+\n)*+")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]++)\?([bBqQ])\?([^?]*+)\?=")
# One item of a structured value: everything up to a semicolon that is not
# inside a quoted string.  In a quoted string a backslash escapes the next
# character; a quoted string without its closing quote runs to the end.
_SEGMENT = re.compile(r'(?:[^";]++|"(?:[^"\\]++|\\.)*+"?)*+', re.DOTALL)
_COMMENT = re.compile(r"\([^()]*\)")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_MEDIA_TYPE = re.compile(rf"\s*+({_TOKEN}++)\s*+/\s*+({_TOKEN}++)\s*+")
_EXTENDED_NAME = re.compile(r"([^*]+)\*(?:(\d{1,6})(\*)?)?")

KNOWN_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})
IDENTITY_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


class Field(NamedTuple):
    """
    One header field, as offsets into the bytes it was found in.  A named
    tuple rather than a frozen dataclass: a block makes one per field, and
    a tuple is built in half the time.

    @ivar name: the field name as written.
    @ivar start: offset of the first octet of the name.
    @ivar valueStart: offset just after the colon.
    @ivar valueEnd: offset of the line end that closes the field.
    @ivar end: offset after that line end (C{valueEnd} if there is none).
    """

    name: bytes
    start: int
    valueStart: int
    valueEnd: int
    end: int


class HeaderBlock(NamedTuple):
    """
    The header block of one entity.

    @ivar start: where the block begins.
    @ivar fields: the fields in order, duplicates kept.
    @ivar insertAt: where a new field goes: before the first field (after a
        leading mbox C{From } line or stray continuation lines).
    @ivar end: end of the last header line; the separating empty line, if
        any, lies between C{end} and C{bodyStart}.
    @ivar bodyStart: where the body begins.
    @ivar defects: what was wrong with the block.
    """

    start: int
    fields: tuple[Field, ...]
    insertAt: int
    end: int
    bodyStart: int
    defects: tuple[Defect, ...]


def scanHeaderBlock(
    data: bytes,
    start: int,
    end: int,
    maxFields: int | None = None,
    limitDefect: Defect = Defect.HEADER_FIELD_LIMIT,
) -> HeaderBlock:
    """
    Find the fields of the header block at C{data[start:end]}.

    Lines end with LF, optionally preceded by CR; a bare CR is not a line
    end.  The block ends at the first empty line, at the first line that is
    neither a field nor a continuation (a missing separator: that line
    starts the body), or at C{end}.

    @param maxFields: keep at most this many fields (may be 0); the scan
        still finds where the block ends, and records C{limitDefect} if
        there were more.
    @param limitDefect: the defect recorded when C{maxFields} cut the
        block short (L{Defect.TOTAL_HEADER_FIELD_LIMIT} when it is what is
        left of the message's total).
    """
    fields: list[Field] = []
    defects: list[Defect] = []
    room = end if maxFields is None else maxFields
    insertAt = -1
    pos = start
    # One match per field with its continuation lines (a long folded Received
    # costs no more than a short Subject); stray lines go to helpers.
    while pos < end:
        if room == 0:
            skipped = _skipFields(data, pos, end)
            if skipped > pos:
                _record(defects, limitDefect)
                pos = skipped
                continue
        first = data[pos]
        if first == 0x0A or (first == 0x0D and pos + 1 < end and data[pos + 1] == 0x0A):
            bodyStart = pos + 1 if first == 0x0A else pos + 2
            return _block(start, fields, insertAt, pos, bodyStart, defects)
        match = _FIELD.match(data, pos, end)
        if match is None:
            stray = _strayLineEnd(data, pos, end, defects)
            if stray == -1:
                defects.append(Defect.MISSING_HEADER_BODY_SEPARATOR)
                return _block(start, fields, insertAt, pos, pos, defects)
            pos = stray
            continue
        insertAt = pos if insertAt == -1 else insertAt
        valueStart, valueEnd = match.span(2)
        fieldEnd = match.end()
        if fieldEnd != valueEnd and valueEnd > valueStart and data[valueEnd - 1] == 0x0D:
            valueEnd -= 1
        if room > 0:
            room -= 1
            fields.append(Field(match.group(1), pos, valueStart, valueEnd, fieldEnd))
        else:
            _record(defects, limitDefect)
        pos = fieldEnd
    return _block(start, fields, insertAt, end, end, defects)


def _skipFields(data: bytes, pos: int, end: int) -> int:
    """
    Past the limit: where the whole fields from C{pos} on end (none kept),
    skipped in one match up to whatever ends the block or is no complete
    line; C{pos} if there is no such field.
    """
    skipped = _FIELDS.match(data, pos, end)
    return pos if skipped is None else skipped.end()


def _strayLineEnd(data: bytes, pos: int, end: int, defects: list[Defect]) -> int:
    """
    Where the line at C{pos}, which is neither empty nor a field, ends if
    it still belongs to the block, or -1: a continuation line with no
    field before it (a field takes its own continuations, so this one
    precedes any), or an mbox envelope line (C{From }) at the top of the
    message.
    """
    if data[pos] in (0x20, 0x09):
        _record(defects, Defect.FIRST_LINE_IS_CONTINUATION)
        return _nextLine(data, pos, end)
    if pos == 0 and data.startswith(b"From "):
        return _nextLine(data, pos, end)
    return -1


def _record(defects: list[Defect], defect: Defect) -> None:
    """
    Add C{defect} to C{defects} unless it is there already.
    """
    if defect not in defects:
        defects.append(defect)


def _block(
    start: int,
    fields: list[Field],
    insertAt: int,
    end: int,
    bodyStart: int,
    defects: list[Defect],
) -> HeaderBlock:
    """
    The block found: a new field goes before its first field or, without
    one, where its header lines end.
    """
    return HeaderBlock(
        start, tuple(fields), insertAt if insertAt != -1 else end, end, bodyStart, tuple(defects)
    )


def _nextLine(data: bytes, pos: int, end: int) -> int:
    newline = data.find(b"\n", pos, end)
    return end if newline == -1 else newline + 1


def unfold(raw: bytes) -> str:
    """
    The value of a field as text: line folds removed (RFC 5322 section
    2.2.3), surrounding whitespace stripped, octets read as UTF-8 with
    undecodable octets kept as surrogate escapes.
    """
    if b"\n" in raw:
        raw = _unfoldOctets(raw)
    return raw.strip(b" \t\r\n").decode("utf-8", "surrogateescape")


#: Unfolding works on slices of this many octets at most: a substitution
#: holds every piece between matches as an object of its own (ten times
#: the input for a value folded every few octets).
_UNFOLD_SLICE = 32768
_NOT_LINE_END = re.compile(rb"[^\r\n]")


def _unfoldOctets(raw: bytes) -> bytes:
    if len(raw) <= _UNFOLD_SLICE:
        return _FOLD.sub(b"", raw)
    pieces = []
    start, end = 0, len(raw)
    while start < end:
        # Cut after an octet that is no line end: no fold spans the cut.
        found = _NOT_LINE_END.search(raw, min(start + _UNFOLD_SLICE, end) - 1)
        stop = end if found is None else found.end()
        pieces.append(_FOLD.sub(b"", raw[start:stop]))
        start = stop
    return b"".join(pieces)


def clean(text: str) -> str:
    """
    Replace surrogate escapes (undecodable octets) with U+FFFD.
    """
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def decodeEncodedWords(text: str, maxWords: int | None = None) -> str:
    """
    Decode RFC 2047 encoded-words wherever they appear, as lenient clients
    do (also inside quoted strings and without surrounding whitespace).
    Whitespace between adjacent encoded-words is dropped; adjacent words in
    the same charset are joined before decoding, so a character split
    across two words survives.

    @param maxWords: decode at most this many words; the text after the
        last one decoded is kept as written.
    """
    if "=?" not in text:
        return text
    pieces: list[str] = []
    pendingCharset: str | None = None
    # A list, not repeated bytes concatenation: thousands of adjacent words
    # in one charset would otherwise be copied over and over.
    pendingOctets: list[bytes] = []
    pos = 0
    matches = _ENCODED_WORD.finditer(text)
    if maxWords is not None:
        matches = itertools.islice(matches, maxWords)
    for match in matches:
        between = text[pos : match.start()]
        if pendingCharset is None or between.strip(" \t\r\n"):
            if pendingCharset is not None:
                pieces.append(decodeText(b"".join(pendingOctets), pendingCharset))
                pendingCharset = None
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0]
        encoded = match.group(3).encode("utf-8", "surrogateescape")
        if match.group(2) in "bB":
            octets = decodeBase64(encoded)
        else:
            octets = decodeQEncoding(encoded)
        if pendingCharset is not None and pendingCharset.lower() == charset.lower():
            pendingOctets.append(octets)
        else:
            if pendingCharset is not None:
                pieces.append(decodeText(b"".join(pendingOctets), pendingCharset))
            pendingCharset = charset
            pendingOctets = [octets]
        pos = match.end()
    if pendingCharset is not None:
        pieces.append(decodeText(b"".join(pendingOctets), pendingCharset))
    pieces.append(text[pos:])
    return "".join(pieces)


def decodeValue(raw: bytes, maxWords: int | None = None) -> str:
    """
    A field value as a filter reads it: unfolded, encoded-words decoded (at
    most C{maxWords} of them), undecodable octets shown as U+FFFD.
    """
    return clean(decodeEncodedWords(clean(unfold(raw)), maxWords))


def hasMoreEncodedWords(raw: bytes, limit: int) -> bool:
    """
    Whether the field value C{raw} holds more than C{limit} encoded-words.
    Counting stops at the first one beyond the limit.
    """
    if raw.count(b"=?") <= limit:
        return False  # every encoded-word starts with "=?"
    text = unfold(raw)
    beyond = itertools.islice(_ENCODED_WORD.finditer(text), limit, limit + 1)
    return any(True for _ in beyond)


class RawParameter(NamedTuple):
    """
    One C{name=value} pair of a structured field, before RFC 2231.

    @ivar name: lowercased, as written (C{filename*0*}).
    @ivar value: unquoted (backslash escapes resolved).
    @ivar literal: between the quotes, escapes unresolved.
    """

    name: str
    value: str
    literal: str


def splitParameters(text: str) -> tuple[str, list[RawParameter]]:
    """
    Split C{value; name=value; ...} into its first item and its
    parameters.  Semicolons inside quoted strings do not split; an
    unterminated quoted string runs to the end.
    """
    main, found, _ = splitParametersWithin(text, None)
    return main, found


def splitParametersWithin(text: str, limit: int | None) -> tuple[str, list[RawParameter], bool]:
    """
    L{splitParameters}, reading at most C{limit} items after the first.

    @return: the first item, the parameters, and whether there were more
        items than C{limit} (those are not split or read).
    """
    # Splitting stops one item beyond the limit: that item, if any, holds
    # the whole unread rest.
    cut = -1 if limit is None else limit + 1
    segments: list[str]
    if '"' in text:
        segments = []
        position = 0
        while limit is None or len(segments) < limit + 2:
            found = _SEGMENT.match(text, position)
            assert found is not None  # it matches the empty string too
            segments.append(found.group())
            # What stopped the segment is a semicolon or the end.
            position = found.end() + 1
            if position > len(text):
                break
    else:
        segments = text.split(";", cut)
    exceeded = limit is not None and len(segments) > limit + 1
    if limit is not None:
        del segments[limit + 1 :]
    parameters: list[RawParameter] = []
    for segment in segments[1:]:
        name, equals, value = segment.partition("=")
        if not equals:
            continue
        name = name.strip(" \t").lower()
        value = value.strip(" \t")
        if value.startswith('"'):
            unquoted, literal = _unquote(value)
            parameters.append(RawParameter(name, unquoted, literal))
        else:
            parameters.append(RawParameter(name, value, value))
    return segments[0], parameters, exceeded


def _unquote(quoted: str) -> tuple[str, str]:
    """
    Read the quoted string at the start of C{quoted}.

    @return: the value with escapes resolved, and the text between the
        quotes as written.
    """
    if "\\" not in quoted:
        end = quoted.find('"', 1)
        between = quoted[1:] if end == -1 else quoted[1:end]
        return between, between
    value: list[str] = []
    escaped = False
    end = len(quoted)
    for index in range(1, len(quoted)):
        char = quoted[index]
        if escaped:
            value.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            end = index
            break
        else:
            value.append(char)
    return "".join(value), quoted[1:end]


class Parameter(NamedTuple):
    """
    One parameter after RFC 2231 processing.

    @ivar name: the base name, lowercased (C{filename} for C{filename*1*}).
    @ivar value: the decoded value (charset applied, continuations joined).
    @ivar extended: it came from RFC 2231 syntax (C{name*...}).
    @ivar literal: for plain parameters, the text between the quotes as
        written; otherwise the same as C{value}.
    """

    name: str
    value: str
    extended: bool
    literal: str


def parameters(raw: list[RawParameter]) -> list[Parameter]:
    """
    Resolve RFC 2231: extended values (C{name*=charset'lang'%XX}) and
    continuations (C{name*0*=}, C{name*1=} ...), joined in index order.
    Plain parameters come first, in order, then the extended ones.
    """
    return parametersWithin(raw, None)[0]


def parametersWithin(
    raw: list[RawParameter], maxContinuations: int | None
) -> tuple[list[Parameter], bool]:
    """
    L{parameters}, joining at most C{maxContinuations} pieces per name (the
    first ones found; later pieces of that name are ignored).

    @return: the parameters, and whether some name had more pieces.
    """
    exceeded = False
    plain: list[Parameter] = []
    extended: list[Parameter] = []
    continued: dict[str, dict[int, tuple[str, bool]]] = {}
    for parameter in raw:
        match = _EXTENDED_NAME.fullmatch(parameter.name) if "*" in parameter.name else None
        if match is None:
            plain.append(Parameter(parameter.name, parameter.value, False, parameter.literal))
            continue
        base = match.group(1).strip(" \t")
        if match.group(2) is None:
            value = _decodeExtended([(parameter.value, True)])
            extended.append(Parameter(base, value, True, value))
        else:
            pieces = continued.setdefault(base, {})
            index = int(match.group(2))
            if maxContinuations is not None and len(pieces) >= maxContinuations:
                exceeded = exceeded or index not in pieces
                continue
            pieces.setdefault(index, (parameter.value, match.group(3) is not None))
    for base, pieces in continued.items():
        value = _decodeExtended([pieces[index] for index in sorted(pieces)])
        extended.append(Parameter(base, value, True, value))
    return plain + extended, exceeded


def _decodeExtended(pieces: list[tuple[str, bool]]) -> str:
    """
    Join RFC 2231 pieces: C{(text, percentEncoded)}.  The first piece, if
    percent-encoded, may name the charset (C{charset'language'text}).
    Consecutive percent-encoded pieces are joined as octets before
    decoding, since a multi-octet character may be split across them.
    """
    charset: str | None = None
    first, encoded = pieces[0]
    if encoded:
        parts = first.split("'", 2)
        if len(parts) == 3:
            charset = parts[0]
            pieces = [(parts[2], True), *pieces[1:]]
    out: list[str] = []
    octets: list[bytes] = []
    for text, encoded in pieces:
        if encoded:
            octets.append(unquote_to_bytes(text.encode("utf-8", "surrogateescape")))
            continue
        if octets:
            out.append(decodeText(b"".join(octets), charset))
            octets = []
        out.append(text)
    if octets:
        out.append(decodeText(b"".join(octets), charset))
    return "".join(out)


@dataclass(frozen=True, slots=True)
class StructuredValue:
    """
    A parsed C{Content-Type} or C{Content-Disposition} value.

    @ivar main: the part before the first semicolon, comments removed,
        whitespace stripped, not lowercased.
    @ivar parameters: in order (see L{parameters}).
    @ivar defects: the limits parsing stopped at
        (L{Defect.PARAMETER_LIMIT}, L{Defect.CONTINUATION_LIMIT}).
    """

    main: str
    parameters: tuple[Parameter, ...]
    defects: tuple[Defect, ...] = ()

    def mapping(self) -> dict[str, str]:
        """
        One value per parameter name: the RFC 2231 value if there is one,
        else the first plain one; undecodable octets shown as U+FFFD.
        """
        found: dict[str, str] = {}
        for parameter in self.parameters:
            if parameter.extended:
                found.setdefault(parameter.name, clean(parameter.value))
        for parameter in self.parameters:
            if not parameter.extended:
                found.setdefault(parameter.name, clean(parameter.value))
        return found

    def exact(self, name: str) -> str | None:
        """
        The value as L{mapping} picks it, without replacing undecodable
        octets (their surrogate escapes encode back to the original).
        """
        for extended in (True, False):
            for parameter in self.parameters:
                if parameter.extended is extended and parameter.name == name:
                    return parameter.value
        return None


#: Structured values at most this long are remembered (see
#: L{parseStructured}); longer ones are rare and would make the cache big.
CACHED_VALUE_LENGTH = 200


def parseStructured(
    raw: bytes, maxParameters: int | None = None, maxContinuations: int | None = None
) -> StructuredValue:
    """
    Parse a structured field value with parameters, reading at most
    C{maxParameters} items and joining at most C{maxContinuations} RFC
    2231 pieces per parameter (see L{StructuredValue.defects}).

    Mail repeats the same few short values (C{text/plain; charset=utf-8})
    in part after part and message after message; those are parsed once
    and the (immutable) result is shared.
    """
    if len(raw) <= CACHED_VALUE_LENGTH:
        return _parseStructuredCached(raw, maxParameters, maxContinuations)
    return _parseStructured(raw, maxParameters, maxContinuations)


def _parseStructured(
    raw: bytes, maxParameters: int | None = None, maxContinuations: int | None = None
) -> StructuredValue:
    main, rawParameters, tooMany = splitParametersWithin(unfold(raw), maxParameters)
    if "(" in main:
        main = _COMMENT.sub("", main)
    main = main.strip(" \t")
    resolved, tooLong = parametersWithin(rawParameters, maxContinuations)
    defects = ((Defect.PARAMETER_LIMIT,) if tooMany else ()) + (
        (Defect.CONTINUATION_LIMIT,) if tooLong else ()
    )
    return StructuredValue(main, tuple(resolved), defects)


_parseStructuredCached = functools.lru_cache(maxsize=1024)(_parseStructured)


def mediaType(main: str) -> str | None:
    """
    The lowercased C{type/subtype}, or None if C{main} is not one.
    """
    match = _MEDIA_TYPE.fullmatch(main)
    if match is None:
        return None
    return f"{match.group(1)}/{match.group(2)}".lower()


def normalizeTransferEncoding(raw: bytes) -> tuple[str, tuple[Defect, ...]]:
    """
    Normalize a Content-Transfer-Encoding value the way the most lenient
    client would read it: folding, whitespace anywhere, comments and quotes
    removed, lowercased.  C{Base\\r\\n 64} and C{"base64 "} are base64.

    @return: the normalized name (unknown names kept, normalized) and the
        defects: irregular if cleaning changed more than case and
        surrounding whitespace, unknown if the result is not an RFC 2045
        encoding.
    """
    text = clean(unfold(raw))
    plain = text.lower()
    if plain in KNOWN_TRANSFER_ENCODINGS:
        return plain, ()  # nothing to clean up
    normalized = re.sub(r'[ \t\r\n"]+', "", _COMMENT.sub("", plain))
    defects: list[Defect] = []
    if normalized != plain:
        defects.append(Defect.IRREGULAR_TRANSFER_ENCODING)
    if not normalized:
        return "7bit", tuple(defects)
    if normalized not in KNOWN_TRANSFER_ENCODINGS:
        defects.append(Defect.UNKNOWN_TRANSFER_ENCODING)
    return normalized, tuple(defects)


def filenameForms(parameter: Parameter, maxWords: int | None = None) -> list[str]:
    """
    Every way a client might show one filename parameter: decoded RFC 2047
    encoded-words (inside quotes: clients do decode them) before the value
    as written, and the text between the quotes with backslashes kept (some
    clients do not resolve escapes).
    """
    forms: list[str] = []
    for text in (parameter.value, parameter.literal):
        text = clean(text)
        forms.append(clean(decodeEncodedWords(text, maxWords)))
        forms.append(text)
    return forms
