"""
The sans-IO RESP2 codec (popproxy/_resp.py): commands encode as arrays of
bulk strings; replies parse the same however the stream is split; garbage
and oversized replies are protocol errors, never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy._resp import RespError, RespParser, RespProtocolError, RespValue, encodeCommand


def encodeReply(value: RespValue) -> bytes:
    """
    What a Redis server sends for C{value} (the test's own encoder, written from the spec).
    """
    if isinstance(value, RespError):
        return b"-" + value.message.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if value is None:
        return b"$-1\r\n"
    return b"*%d\r\n" % len(value) + b"".join(encodeReply(element) for element in value)


lineText = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
    max_size=20,
)
scalars = st.one_of(
    lineText,
    lineText.map(RespError),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=40),
    st.none(),
)
replies = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def feedInChunks(data: bytes, cuts: list[int]) -> list[RespValue]:
    parser = RespParser()
    parsed: list[RespValue] = []
    start = 0
    for cut in sorted(cut % (len(data) + 1) for cut in cuts):
        parsed += parser.feed(data[start:cut])
        start = max(start, cut)
    parsed += parser.feed(data[start:])
    return parsed


@given(st.lists(replies, max_size=5), st.lists(st.integers(min_value=0), max_size=8))
def test_repliesParseTheSameHoweverTheStreamIsSplit(
    values: list[RespValue], cuts: list[int]
) -> None:
    """
    Any sequence of replies, cut anywhere into any number of pieces, parses back to the same
    values in the same order (bulk strings may hold CR, LF, anything).
    """
    assert feedInChunks(b"".join(encodeReply(value) for value in values), cuts) == values


@given(replies, st.integers(min_value=0))
def test_anIncompleteReplyWaitsForTheRest(value: RespValue, cut: int) -> None:
    """
    A reply cut short yields nothing until its last byte arrives, then exactly that reply.
    """
    data = encodeReply(value)
    cut %= len(data)
    parser = RespParser()
    assert parser.feed(data[:cut]) == []
    assert parser.feed(data[cut:]) == [value]


@given(st.binary(max_size=200))
def test_garbageIsAProtocolErrorOrWaits(data: bytes) -> None:
    """
    Arbitrary bytes either parse, wait for more, or raise RespProtocolError: nothing else.
    """
    try:
        RespParser(maxBulk=100, maxLine=50).feed(data)
    except RespProtocolError:
        pass


@pytest.mark.parametrize(
    "data",
    [
        b"?what\r\n",
        b":12a\r\n",
        b"$3\r\nabcd\r\n",
        b"$-2\r\n",
        b"*-5\r\n",
        b":\r\n",
        b"+a\rb\r\n",
    ],
)
def test_malformedRepliesAreProtocolErrors(data: bytes) -> None:
    """
    Unknown types, bad integers, a bulk string longer than announced, negative lengths and
    bare CRs are refused.
    """
    with pytest.raises(RespProtocolError):
        RespParser().feed(data)


def test_limitsBoundTheBuffer() -> None:
    """
    A bulk string over maxBulk, an array over maxElements, nesting over maxDepth and a line
    over maxLine are refused as soon as they are announced or exceeded, without waiting for
    the rest.
    """
    parser = RespParser(maxLine=16, maxBulk=10, maxElements=3, maxDepth=2)
    with pytest.raises(RespProtocolError):
        RespParser(maxBulk=10).feed(b"$11\r\n")
    with pytest.raises(RespProtocolError):
        RespParser(maxElements=3).feed(b"*4\r\n")
    with pytest.raises(RespProtocolError):
        RespParser(maxDepth=2).feed(b"*1\r\n*1\r\n*1\r\n:1\r\n")
    with pytest.raises(RespProtocolError):
        parser.feed(b"+" + b"x" * 40)


def test_commandsAreArraysOfBulkStrings() -> None:
    """
    Text goes as UTF-8, numbers as their repr (so a float deadline reads back exactly).
    """
    assert encodeCommand("SET", "k\u00e9", 1.5, 7, b"\r\n") == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$3\r\n1.5\r\n$1\r\n7\r\n$2\r\n\r\n\r\n"
    )
    with pytest.raises(TypeError):
        encodeCommand("SET", True)
    with pytest.raises(ValueError):
        encodeCommand()


@given(st.binary(max_size=64))
def test_keysFromAnyClientBytesEncode(raw: bytes) -> None:
    """
    A key holding a login name decoded from any bytes a client sent
    (surrogateescape) goes out as exactly those bytes: a non-UTF-8 name
    cannot make the counters fail and so slip past the throttle.
    """
    key = "owner:" + raw.decode("utf-8", "surrogateescape")
    wire = b"owner:" + raw
    assert encodeCommand("GET", key) == b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(wire), wire)
