"""
Tests for popproxy._lifecycle: the process's serving or stopping state.
"""

from __future__ import annotations

from popproxy._lifecycle import Lifecycle


def test_observersToldOnceWhenStoppingBegins() -> None:
    """
    Every observer registered before the stop is called once, in order,
    however often the stop is marked; the state says stopping after.
    """
    lifecycle = Lifecycle()
    calls: list[str] = []
    lifecycle.onStopping(lambda: calls.append("a"))
    lifecycle.onStopping(lambda: calls.append("b"))
    # Compared as tuples: "assert not lifecycle.stopping" would narrow the
    # attribute for mypy, which would then skip the check after the stop.
    assert (lifecycle.stopping, calls) == (False, [])
    lifecycle.beginStopping()
    lifecycle.beginStopping()
    assert (lifecycle.stopping, calls) == (True, ["a", "b"])


def test_lateObserverCalledAtOnce() -> None:
    """
    An observer registered after the stop began is called right away.
    """
    lifecycle = Lifecycle()
    lifecycle.beginStopping()
    calls: list[str] = []
    lifecycle.onStopping(lambda: calls.append("late"))
    assert calls == ["late"]
