"""
Tests for popproxy._mimelimits and the parse limits in the MIME model: each
limit stops the parser where it says (what a filter then reads), is
recorded as a defect, and makes L{Message.checkLimits} name it; messages
within the limits are untouched by them; hostile shapes of a megabyte and
more are refused fast and with a bounded memory peak.
"""

from __future__ import annotations

import base64
import re
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popproxy import _mimecodec, _mimeheader
from popproxy._mimelimits import LIMIT_DEFECTS, LIMIT_KEYS
from popproxy.message import Defect, LimitExceeded, Message, ParseLimits
from popproxy.strategies import mimeMessages

EOL = b"\r\n"


def multipart(count: int, boundary: bytes = b"b") -> bytes:
    parts = b"".join(b"--%s\r\n\r\npart %d\r\n" % (boundary, i) for i in range(count))
    return (
        b"Content-Type: multipart/mixed; boundary=" + boundary + EOL + EOL + parts
        + b"--" + boundary + b"--" + EOL
    )  # fmt: skip


def nested(depth: int) -> bytes:
    raw = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for level in range(depth):
        boundary = b"n%d" % level
        raw = (
            b"Content-Type: multipart/mixed; boundary=" + boundary + EOL + EOL
            + b"--" + boundary + EOL + raw + EOL + b"--" + boundary + b"--" + EOL
        )  # fmt: skip
    return raw


def headerFields(count: int) -> bytes:
    return b"".join(b"X-Field-%d: value\r\n" % i for i in range(count)) + EOL + b"the body\r\n"


def parameterField(count: int, quoted: bool = False) -> bytes:
    value = b'"v;%d"' if quoted else b"v%d"
    params = b"".join((b"; p%d=" + value) % (i, i) for i in range(count))
    return b"Content-Type: text/plain" + params + EOL + EOL + b"body\r\n"


def continuations(count: int) -> bytes:
    pieces = b"".join(b";\r\n filename*%d*=%%41" % i for i in range(count))
    return (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment" + pieces + EOL + EOL + b"body\r\n"
    )


def encodedWords(count: int) -> bytes:
    words = b" ".join(b"=?utf-8?q?w%d?=" % i for i in range(count))
    return b"Subject: " + words + EOL + EOL + b"body\r\n"


def refusal(raw: bytes, limits: ParseLimits | None = None) -> LimitExceeded | None:
    try:
        Message.fromBytes(raw, limits=limits).checkLimits()
    except LimitExceeded as e:
        return e
    return None


# The value and its defaults.


def test_defaultsAndNames() -> None:
    """
    The documented defaults; each limit has a configuration key and a
    defect that records where a parser stopped at it.
    """
    limits = ParseLimits()
    assert (
        limits.maxParts,
        limits.maxDepth,
        limits.maxHeaderFields,
        limits.maxParameters,
        limits.maxContinuations,
        limits.maxEncodedWords,
        limits.maxTotalHeaderFields,
    ) == (1000, 30, 1000, 100, 50, 1000, 10000)
    assert sorted(LIMIT_KEYS.values()) == sorted(
        [
            "max_parts",
            "max_depth",
            "max_header_fields",
            "max_parameters",
            "max_continuations",
            "max_encoded_words",
            "max_total_header_fields",
        ]
    )
    assert sorted(LIMIT_DEFECTS.values()) == sorted(LIMIT_KEYS)
    assert Message.fromBytes(b"").limits == limits


@pytest.mark.parametrize(
    "changes",
    [
        {"maxParts": 0},
        {"maxHeaderFields": -1},
        {"maxDepth": -1},
        {"maxParameters": True},
        {"maxTotalHeaderFields": 0},
    ],
)
def test_invalidLimits(changes: dict[str, object]) -> None:
    """
    A limit below 1 (below 0 for the depth) or not an integer is refused
    when the value is made, not when a message meets it.
    """
    with pytest.raises(ValueError, match=next(iter(changes))):
        ParseLimits(**changes)  # type: ignore[arg-type]


def test_maxDepthArgumentStillWorks() -> None:
    """
    C{Message.fromBytes(raw, maxDepth=n)} replaces only the depth limit.
    """
    message = Message.fromBytes(b"", maxDepth=2, limits=ParseLimits(maxParts=7))
    assert message.limits == ParseLimits(maxParts=7, maxDepth=2)
    assert message.maxDepth == 2


# Each limit, where the parser stops.


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_partLimit(count: int, limit: int) -> None:
    """
    A multipart gets at most C{maxParts} children, each whole; the unread
    rest is its epilogue and the multipart carries PART_LIMIT; checkLimits
    names max_parts exactly when there are more parts than the limit.
    """
    raw = multipart(count)
    message = Message.fromBytes(raw, limits=ParseLimits(maxParts=limit))
    children = message.root.children
    assert [child.body() for child in children] == [
        b"part %d" % i for i in range(min(count, limit))
    ]
    over = count > limit
    assert (Defect.PART_LIMIT in message.root.defects) is over
    if over:
        assert message.root.epilogue() == raw[raw.index(b"--b\r\n\r\npart %d" % limit) :]
        assert message.root.epilogue().endswith(b"--b--\r\n")
    exceeded = refusal(raw, ParseLimits(maxParts=limit))
    assert (exceeded.limit if exceeded else None) == ("max_parts" if over else None)
    assert message.toBytes() is raw


def test_partLimitCountsTheWholeMessage() -> None:
    """
    max_parts counts every part below the top, at every level: two
    multiparts of three parts each are eight parts, over a limit of five
    that neither multipart reaches on its own.
    """
    inner = multipart(3, b"inner")
    raw = (
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
        + b"--outer\r\n" + inner + b"\r\n--outer\r\n" + inner + b"\r\n--outer--\r\n"
    )  # fmt: skip
    assert refusal(raw, ParseLimits(maxParts=8)) is None
    exceeded = refusal(raw, ParseLimits(maxParts=5))
    assert exceeded is not None
    assert (exceeded.limit, exceeded.value, exceeded.path) == ("max_parts", 5, (1, 0))
    assert str(exceeded) == "message exceeds parse limit max_parts (5) at part (1, 0)"


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12))
def test_depthLimit(depth: int, limit: int) -> None:
    """
    checkLimits names max_depth exactly when the nesting goes deeper than
    the limit; the part at the limit is an opaque leaf with DEPTH_LIMIT.
    """
    raw = nested(depth)
    exceeded = refusal(raw, ParseLimits(maxDepth=limit))
    assert (exceeded.limit if exceeded else None) == ("max_depth" if depth > limit else None)
    if exceeded is not None:
        assert len(exceeded.path) == limit


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(1, 60))
def test_headerFieldLimit(count: int, limit: int) -> None:
    """
    A header block keeps its first C{maxHeaderFields} fields; the body is
    still found where it is; HEADER_FIELD_LIMIT and max_parts's sibling
    max_header_fields follow whether there were more.
    """
    raw = headerFields(count)
    message = Message.fromBytes(raw, limits=ParseLimits(maxHeaderFields=limit))
    assert message.headers.names() == tuple(f"X-Field-{i}" for i in range(min(count, limit)))
    assert message.root.body() == b"the body\r\n"
    over = count > limit
    assert (Defect.HEADER_FIELD_LIMIT in message.root.defects) is over
    exceeded = refusal(raw, ParseLimits(maxHeaderFields=limit))
    assert (exceeded.limit if exceeded else None) == ("max_header_fields" if over else None)


def fieldsInParts(counts: list[int]) -> bytes:
    """
    A multipart whose part C{i} has C{counts[i]} header fields named
    C{P<i>-<j>} (its top-level block has one field, the Content-Type).
    """
    parts = b"".join(
        b"--b\r\n"
        + b"".join(b"P%d-%d: v\r\n" % (i, j) for j in range(count))
        + b"\r\nbody %d\r\n" % i
        for i, count in enumerate(counts)
    )
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 8), max_size=12), st.integers(1, 10), st.integers(1, 40))
def test_totalHeaderFieldLimit(counts: list[int], perBlock: int, total: int) -> None:
    """
    Walked in order, every header block keeps its fields up to its own
    limit and up to what is left of the message's total; the first block
    the total cuts short records TOTAL_HEADER_FIELD_LIMIT (later ones keep
    nothing), one cut by its own limit HEADER_FIELD_LIMIT, and checkLimits
    names the first limit reached, at that part.  Reading everything again
    counts nothing twice.
    """
    raw = fieldsInParts(counts)
    limits = ParseLimits(maxHeaderFields=perBlock, maxTotalHeaderFields=total)
    message = Message.fromBytes(raw, limits=limits)
    left = total - 1
    expected: list[tuple[tuple[str, ...], Defect | None]] = []
    first: tuple[str, tuple[int, ...]] | None = None
    for i, count in enumerate(counts):
        kept = min(count, perBlock, left)
        defect = None
        if count > kept:
            defect = (
                Defect.HEADER_FIELD_LIMIT if left >= perBlock else Defect.TOTAL_HEADER_FIELD_LIMIT
            )
            if first is None:
                key = "max_header_fields" if left >= perBlock else "max_total_header_fields"
                first = (key, (i,))
        left -= kept
        expected.append((tuple(f"P{i}-{j}" for j in range(kept)), defect))
    for _ in range(2):
        found = [
            (
                part.headers.names(),
                next((d for d in part.defects if d in LIMIT_DEFECTS), None),
            )
            for part in message.root.children
        ]
        assert found == expected
    assert [part.body() for part in message.root.children] == [
        b"body %d" % i for i in range(len(counts))
    ]
    exceeded = refusal(raw, limits)
    assert ((exceeded.limit, exceeded.path) if exceeded else None) == first
    if first is None:
        message.checkLimits()


def test_totalHeaderFieldLimitWhateverTheReadingOrder() -> None:
    """
    Blocks draw on the total in the order they are read: a filter reading
    the last part first gets its fields, an earlier part then gets what is
    left; the message is over the total either way and checkLimits says so
    (at the part the total cut, which is the last one when read in order).
    """
    raw = fieldsInParts([3, 3, 3])
    limits = ParseLimits(maxTotalHeaderFields=7)
    message = Message.fromBytes(raw, limits=limits)
    first, second, last = message.root.children
    assert last.headers.names() == ("P2-0", "P2-1", "P2-2")
    assert first.headers.names() == ("P0-0", "P0-1", "P0-2")
    assert second.headers.names() == ()
    assert Defect.TOTAL_HEADER_FIELD_LIMIT in second.defects
    with pytest.raises(LimitExceeded) as caught:
        message.checkLimits()
    assert (caught.value.limit, caught.value.value, caught.value.path) == (
        "max_total_header_fields",
        7,
        (1,),
    )
    inOrder = refusal(raw, limits)
    assert inOrder is not None and (inOrder.limit, inOrder.path) == (
        "max_total_header_fields",
        (2,),
    )


def test_editedMessageCountsAfresh() -> None:
    """
    An edit re-parses the new octets under a total of their own: the
    fields of the message before the edit are not counted against it.
    """
    raw = fieldsInParts([3, 3])
    limits = ParseLimits(maxTotalHeaderFields=7)
    message = Message.fromBytes(raw, limits=limits)
    message.checkLimits()
    edited = message.withPartRemoved(message.root.children[0])
    assert edited.limits == limits
    edited.checkLimits()
    assert [part.headers.names() for part in edited.root.children] == [("P1-0", "P1-1", "P1-2")]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(1, 40), st.booleans())
def test_parameterLimit(count: int, limit: int, quoted: bool) -> None:
    """
    Only the first C{maxParameters} parameters of a field are read (quoted
    values with semicolons in them count once); PARAMETER_LIMIT and
    max_parameters follow whether there were more.
    """
    raw = parameterField(count, quoted)
    message = Message.fromBytes(raw, limits=ParseLimits(maxParameters=limit))
    kept = min(count, limit)
    expected = {f"p{i}": (f"v;{i}" if quoted else f"v{i}") for i in range(kept)}
    assert dict(message.root.params) == expected
    over = count > limit
    assert (Defect.PARAMETER_LIMIT in message.root.defects) is over
    exceeded = refusal(raw, ParseLimits(maxParameters=limit))
    assert (exceeded.limit if exceeded else None) == ("max_parameters" if over else None)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_continuationLimit(count: int, limit: int) -> None:
    """
    At most C{maxContinuations} RFC 2231 pieces of one parameter are
    joined; CONTINUATION_LIMIT and max_continuations follow whether there
    were more.
    """
    raw = continuations(count)
    limits = ParseLimits(maxContinuations=limit, maxParameters=100)
    message = Message.fromBytes(raw, limits=limits)
    assert message.root.filename == "A" * min(count, limit)
    over = count > limit
    assert (Defect.CONTINUATION_LIMIT in message.root.defects) is over
    exceeded = refusal(raw, limits)
    assert (exceeded.limit if exceeded else None) == ("max_continuations" if over else None)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(1, 40))
def test_encodedWordLimit(count: int, limit: int) -> None:
    """
    At most C{maxEncodedWords} encoded-words of a value are decoded; the
    rest reads as written.  ENCODED_WORD_LIMIT and max_encoded_words
    follow whether there were more.
    """
    raw = encodedWords(count)
    message = Message.fromBytes(raw, limits=ParseLimits(maxEncodedWords=limit))
    decoded = "".join(f"w{i}" for i in range(min(count, limit)))
    rest = " ".join(f"=?utf-8?q?w{i}?=" for i in range(limit, count))
    assert message.headers.get("Subject") == (decoded + " " + rest if rest else decoded)
    over = count > limit
    assert (Defect.ENCODED_WORD_LIMIT in message.root.defects) is over
    exceeded = refusal(raw, ParseLimits(maxEncodedWords=limit))
    assert (exceeded.limit if exceeded else None) == ("max_encoded_words" if over else None)


def test_encodedWordsInFilenames() -> None:
    """
    Encoded-words in a quoted file name are decoded up to the same limit.
    """
    words = " ".join(f"=?utf-8?q?f{i}?=" for i in range(5))
    raw = f'Content-Disposition: attachment; filename="{words}"\r\n\r\n'.encode()
    message = Message.fromBytes(raw, limits=ParseLimits(maxEncodedWords=3))
    assert message.root.filenames[0] == "f0f1f2 =?utf-8?q?f3?= =?utf-8?q?f4?="


@settings(max_examples=100, deadline=None)
@given(mimeMessages(maxDepth=4, maxParts=4))
def test_ordinaryMessagesAreWithinTheDefaults(raw: bytes) -> None:
    """
    Plausible mail of every shape passes the default limits: checkLimits
    raises nothing and reading it finds no limit defect.
    """
    message = Message.fromBytes(raw)
    message.checkLimits()
    for part in message.walk():
        assert not set(part.defects) & set(LIMIT_DEFECTS)


# Hostile sizes: refused in linear time, with a bounded memory peak.


def _peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _readEverything(raw: bytes) -> None:
    """
    What the chain and a thorough filter do with a message: check the
    limits, then read every header, parameter, file name and payload.
    """
    message = Message.fromBytes(raw)
    try:
        message.checkLimits()
    except LimitExceeded:
        pass
    message.headers.items()
    for part in message.walk():
        part.headers.items()
        read = (part.params, part.dispositionParams, part.filenames, part.defects)
        assert all(item is not None for item in read)
        if not part.children:
            part.payload()


HOSTILE = [
    pytest.param(lambda: multipart(100_000), "max_parts", id="100000-parts"),
    pytest.param(lambda: nested(5_000), "max_depth", id="5000-levels"),
    pytest.param(lambda: headerFields(100_000), "max_header_fields", id="100000-fields"),
    pytest.param(
        lambda: fieldsInParts([1_000] * 1_000),
        "max_total_header_fields",
        id="1000-parts-of-1000-fields",
    ),
    pytest.param(lambda: parameterField(80_000), "max_parameters", id="80000-parameters"),
    pytest.param(lambda: parameterField(60_000, quoted=True), "max_parameters", id="60000-quoted"),
    pytest.param(lambda: continuations(50_000), "max_parameters", id="50000-continuations"),
    pytest.param(lambda: encodedWords(100_000), "max_encoded_words", id="100000-words"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make, limit", HOSTILE)
def test_hostileShapesAreRefusedInBoundedMemory(make: Callable[[], bytes], limit: str) -> None:
    """
    Each megabyte-sized explosion is named by checkLimits at the right
    limit, and checking it and reading all of it peaks below ten times its
    size: the parsers stop building at the limits.
    """
    raw = make()
    assert len(raw) >= 1_000_000 or limit == "max_depth"
    exceeded = refusal(raw)
    assert exceeded is not None and exceeded.limit == limit
    assert _peak(lambda: _readEverything(raw)) <= 10 * len(raw)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param((b"QQ==" * 19 + EOL) * 13_000, id="padded-quanta"),
        pytest.param((b"QUJD====" + b" " * 68 + EOL) * 13_000, id="padding-and-blanks"),
        pytest.param(b"=" * 1_000_000, id="only-padding"),
    ],
)
def test_paddedBase64InBoundedMemory(body: bytes) -> None:
    """
    A base64 body of many padded runs decodes like the run-by-run
    reference with a memory peak below ten times its size (splitting it at
    once cost over twenty).
    """
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    message = Message.fromBytes(raw)
    peak = _peak(lambda: message.root.payload())
    assert peak <= 10 * len(raw)
    assert message.root.payload() == _referenceBase64(body)


def _referenceBase64(data: bytes) -> bytes:
    kept = data.translate(None, _mimecodec._NOT_BASE64_OR_PAD)
    return b"".join(_mimecodec._decodeRun(run) for run in re.split(b"=+", kept))


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([b"QQ", b"QUJD", b"=", b"==", b"Q", b"\r\n", b" ", b"!"])).map(
        b"".join
    ),
    st.integers(1, 8),
)
def test_base64SlicesDecodeLikeTheWhole(data: bytes, slice: int) -> None:
    """
    Decoding a slice at a time gives what splitting the whole body gives,
    wherever the slices end.
    """
    original = _mimecodec._SPLIT_SLICE
    _mimecodec._SPLIT_SLICE = slice
    try:
        assert _mimecodec.decodeBase64(data) == _referenceBase64(data)
    finally:
        _mimecodec._SPLIT_SLICE = original
    assert _mimecodec.decodeBase64(base64.b64encode(data)) == data


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b" ", b"\t", b"a"])).map(b"".join), st.integers(1, 8)
)
def test_unfoldingSlicesLikeTheWhole(raw: bytes, slice: int) -> None:
    """
    Unfolding a long value a slice at a time removes exactly the line
    folds one substitution over the whole value removes.
    """
    original = _mimeheader._UNFOLD_SLICE
    _mimeheader._UNFOLD_SLICE = slice
    try:
        assert _mimeheader._unfoldOctets(raw) == _mimeheader._FOLD.sub(b"", raw)
    finally:
        _mimeheader._UNFOLD_SLICE = original
