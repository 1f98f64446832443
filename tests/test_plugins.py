"""
Tests for popproxy._plugins: a factory gets the reactor the chain runs on
when it asks for one, a factory of the settings alone still loads, and a
plugin may be a package of several modules.
"""

from __future__ import annotations

import sys
import tomllib
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


def writePackage(directory: Path) -> Path:
    """
    A user's plugin of two modules: the filter in C{_filter.py}, and an
    C{__init__.py} that imports it relatively and exports makeFilter.
    """
    package = directory / "keep"
    package.mkdir(parents=True)
    (package / "_filter.py").write_text(FILTER)
    (package / "__init__.py").write_text(
        "from ._filter import Keep\ndef makeFilter(settings):\n    return Keep(settings)\n"
    )
    return package


def test_packagePluginLoadsByNameFromAPluginDirectory(tmp_path: Path) -> None:
    """
    A package C{<name>/} in a plugin directory loads by its bare name; its
    modules import each other relatively and its settings reach the factory.
    """
    writePackage(tmp_path / "plugins")
    found = loadFilter("keep", {"a": 1}, tmp_path, (tmp_path / "plugins",))
    assert found.name == "keep" and found.settings == {"a": 1}
    assert type(found).__module__.endswith("_keep._filter")


def test_packagePluginLoadsByPath(tmp_path: Path) -> None:
    """
    A path holding a C{/} that names a package directory loads that package,
    as a C{.py} path loads a file.
    """
    writePackage(tmp_path / "mine")
    assert loadFilter("mine/keep", {"b": 2}, tmp_path).settings == {"b": 2}
    assert loadFilter("./mine/keep", {}, tmp_path).name == "keep"


def test_directoryWithoutInitIsRefused(tmp_path: Path) -> None:
    """
    A path to a directory that is not a package stops start-up saying so.
    """
    (tmp_path / "loose").mkdir()
    with pytest.raises(PluginError, match="without __init__.py is not a plugin package"):
        loadFilter("./loose", {}, tmp_path)


def test_fileAndPackageOfOneNameAreRefused(tmp_path: Path) -> None:
    """
    A plugin directory holding both C{keep.py} and C{keep/} is ambiguous:
    loading C{keep} names both instead of picking one.
    """
    writePackage(tmp_path)
    writePlugin(tmp_path, TAKES_REACTOR)
    with pytest.raises(PluginError, match=r"both keep.py and keep/"):
        loadFilter("keep", {}, tmp_path, (tmp_path,))


def test_shippedPackageWinsOverALeftoverModule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Among the shipped plugins, a module left beside the package of the same
    name (an older version's file, reinstalled from a stale build/
    directory) does not stop start-up: the package is loaded.
    """
    writePackage(tmp_path)
    writePlugin(tmp_path, TAKES_REACTOR)
    monkeypatch.setattr("popproxy._plugins.shippedPluginDirectory", lambda: tmp_path)
    loaded = loadFilter("keep", {"c": 3}, tmp_path / "elsewhere")
    assert type(loaded).__module__.endswith("_keep._filter")
    assert loaded.settings == {"c": 3}


def test_packageThatFailsLeavesNoModulesBehind(tmp_path: Path) -> None:
    """
    A package whose import fails is reported in one line, and neither it
    nor the submodules it loaded stay in sys.modules, so a fixed package
    loads on the next attempt.
    """
    package = writePackage(tmp_path)
    (package / "__init__.py").write_text("from ._filter import Keep\nimport nonexistent_xyz\n")
    with pytest.raises(PluginError, match="fails to load: ModuleNotFoundError"):
        loadFilter("./keep", {}, tmp_path)
    assert not [name for name in sys.modules if "_keep" in name and str(tmp_path.name) in name]
    (package / "__init__.py").write_text(
        "from ._filter import Keep\ndef makeFilter(settings):\n    return Keep(settings)\n"
    )
    assert loadFilter("./keep", {}, tmp_path).name == "keep"


def test_everyShippedPluginPackageIsInstalled() -> None:
    """
    Every package under plugins/ (each shipped plugin and its subpackages)
    is listed in pyproject.toml's packages as popproxy.plugins.<name>, so
    C{pip install .} ships it, and nothing installs a top-level C{plugins}.
    """
    root = Path(__file__).resolve().parent.parent
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    onDisk = {
        "popproxy.plugins." + ".".join(init.parent.relative_to(root / "plugins").parts)
        for init in (root / "plugins").glob("*/**/__init__.py")
    }
    assert onDisk and onDisk <= set(packages)
    assert not [name for name in packages if name.split(".")[0] == "plugins"]
