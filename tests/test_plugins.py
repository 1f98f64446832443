"""
Tests for popproxy._plugins: a factory gets the reactor the chain runs on
when it asks for one, and a factory of the settings alone still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from popproxy._plugins import PluginError, loadFilter, takesReactor
from popproxy._testkit import InlineReactor
from popproxy.testing import loadPlugin

TAKES_REACTOR = "def makeFilter(settings, reactor):\n    return Keep(settings, reactor)\n"

FILTER = (
    "from zope.interface import implementer\n"
    "from popproxy.interfaces import IMessageFilter, Deliver\n"
    "@implementer(IMessageFilter)\n"
    "class Keep:\n"
    "    name = 'keep'\n"
    "    def __init__(self, settings, reactor=None):\n"
    "        self.settings, self.reactor = settings, reactor\n"
    "    def filterMessage(self, message, context): return Deliver()\n"
)


def writePlugin(directory: Path, factory: str) -> Path:
    path = directory / "keep.py"
    path.write_text(FILTER + factory)
    return path


def test_factoryTakingTheReactorGetsTheChainsReactor(tmp_path: Path) -> None:
    """
    C{makeFilter(settings, reactor)} is called with the settings and the
    reactor given to the loader.
    """
    writePlugin(tmp_path, TAKES_REACTOR)
    clock = Clock()
    found = loadFilter("keep.py", {"level": 2}, tmp_path, (), clock)
    assert found.settings == {"level": 2}
    assert found.reactor is clock


def test_factoryOfTheSettingsAloneStillLoads(tmp_path: Path) -> None:
    """
    An old C{makeFilter(settings)} loads whether or not a reactor is given,
    and is never handed one.
    """
    writePlugin(tmp_path, "def makeFilter(settings):\n    return Keep(settings)\n")
    assert loadFilter("keep.py", {"a": 1}, tmp_path, (), Clock()).reactor is None
    assert loadFilter("keep.py", {"a": 1}, tmp_path).settings == {"a": 1}


def test_factoryTakingTheReactorWithoutOneIsRefused(tmp_path: Path) -> None:
    """
    A factory that needs a reactor, loaded where none was given, is refused
    with a reason instead of being handed C{None}.
    """
    writePlugin(tmp_path, TAKES_REACTOR)
    with pytest.raises(PluginError, match="keep.py takes a reactor and none was given"):
        loadFilter("keep.py", {}, tmp_path)


def test_testKitHandsAnInlineReactorByDefault(tmp_path: Path) -> None:
    """
    C{popproxy.testing.loadPlugin} gives a reactor-taking factory a fresh
    L{InlineReactor} unless the test passes its own.
    """
    path = writePlugin(
        tmp_path, "def makeFilter(settings, reactor):\n    return Keep(settings, reactor)\n"
    )
    assert isinstance(loadPlugin(path).reactor, InlineReactor)
    clock = Clock()
    assert loadPlugin(path, reactor=clock).reactor is clock


def test_shippedPluginsTakeTheReactorFromTheirFactory() -> None:
    """
    The shipped scan and tag plugins use the reactor they are given: their
    timeouts run on its clock.
    """
    clock = Clock()
    scanFilter = loadPlugin("scan", {"address": "tcp:127.0.0.1:3310"}, reactor=clock)
    assert scanFilter._clock is clock
    tagFilter = loadPlugin("tag", {"spamd": "tcp:127.0.0.1:783"}, reactor=clock)
    assert tagFilter._spamd._clock is clock


def _one(settings: Any) -> None: ...
def _two(settings: Any, reactor: Any) -> None: ...
def _named(settings: Any, reactor: Any = None) -> None: ...
def _optional(settings: Any, extra: int = 0) -> None: ...
def _starred(settings: Any, *rest: Any) -> None: ...
def _keyword(settings: Any, *, reactor: Any) -> None: ...


class _Built:
    def __init__(self, settings: Any, reactor: Any) -> None: ...


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (_one, False),
        (_two, True),
        (_named, True),
        (_optional, False),
        (_starred, False),
        (_keyword, False),
        (_Built, True),
        (dict, False),
    ],
)
def test_takesReactorReadsTheSignature(factory: Any, expected: bool) -> None:
    """
    A factory takes the reactor when its second positional parameter is
    required or named C{reactor}; optional extras, C{*args}, keyword-only
    parameters and unreadable signatures mean the settings alone.
    """
    assert takesReactor(factory) is expected
