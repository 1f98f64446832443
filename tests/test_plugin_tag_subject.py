"""
The subject splice (plugins/tag/_subject.py) on its own: the prefix goes right after
"Subject:", every other octet stays, and a long first line is folded after the prefix.
"""

from __future__ import annotations

from plugins.tag._subject import withSubjectPrefixes
from popproxy.message import Message


def test_onlyThePrefixIsInserted() -> None:
    """
    The output is the input with the prefix and one space inserted after the colon.
    """
    raw = b"From: a@b\r\nSubject: hello\r\n\r\nbody\r\n"
    tagged, added = withSubjectPrefixes(Message.fromBytes(raw), ["[SPAM]"])
    assert added == ["[SPAM]"]
    assert tagged.toBytes() == raw.replace(b"Subject: hello", b"Subject: [SPAM] hello")


def test_nothingToAddReturnsTheSameMessage() -> None:
    """
    Prefixes the subject already shows are not added, and the message object is returned.
    """
    message = Message.fromBytes(b"Subject: [spam] hello\r\n\r\n")
    assert withSubjectPrefixes(message, ["[SPAM]"]) == (message, [])


def test_longFirstLineFoldsWithTheMessagesLineEnding() -> None:
    """
    A first line over 78 characters folds after the prefix, with the field's own line end.
    """
    raw = b"Subject: " + b"x" * 70 + b"\n\nbody\n"
    tagged, _ = withSubjectPrefixes(Message.fromBytes(raw), ["[ATTACHMENT REMOVED]"])
    assert tagged.toBytes() == b"Subject: [ATTACHMENT REMOVED]\n " + b"x" * 70 + b"\n\nbody\n"
