"""
Tests for L{popproxy._verdicts}: the filter context's fast copy.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.logger import Logger

from popproxy._verdicts import FilterContext, contextWith

CONTEXT = FilterContext(
    "TOP", 2, "bob", "c:1", "up", "s9", uidl="u-2", partial=True, lines=5, notes=(("a", "b"),)
)


def test_contextWithIsReplace() -> None:
    """
    L{contextWith} gives what C{dataclasses.replace} gives: every field
    copied, the changed ones set, the original left as it was.
    """
    log, runner = Logger(), object()
    changed = contextWith(CONTEXT, log=log, notes=(), quarantine="q", runInThread=runner)
    expected = replace(CONTEXT, log=log, notes=(), quarantine="q", runInThread=runner)
    assert changed == expected
    assert vars(changed) == vars(expected)
    assert type(changed) is FilterContext
    assert CONTEXT.notes == (("a", "b"),) and CONTEXT.quarantine is None
    assert contextWith(CONTEXT) == CONTEXT and contextWith(CONTEXT) is not CONTEXT


def test_contextWithStaysFrozen() -> None:
    """
    The copy is as frozen as the original.
    """
    with pytest.raises(AttributeError):
        contextWith(CONTEXT, lines=1).lines = 2  # type: ignore[misc]


def test_contextWithRefusesUnknownFields() -> None:
    """
    A name that is not a field is refused, as C{replace} refuses it.
    """
    with pytest.raises(TypeError, match="no field colour"):
        contextWith(CONTEXT, colour="red")


def test_contextWithoutLogHasTheModulesLogger() -> None:
    """
    A context made without a log gets the logger C{Logger()} gives there
    (namespace C{popproxy._verdicts}, the global publisher), made once.
    """
    made = FilterContext("RETR", 1, "alice", "c:1", "up", "s1")
    assert made.log.namespace == "popproxy._verdicts"
    assert made.log.observer is Logger().observer
    assert made.log is FilterContext("RETR", 2, "bob", "c:2", "up", "s2").log
