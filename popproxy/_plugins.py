"""
Load the filter plugins named in the configuration and check them.

A chain entry names its plugin in one of three ways:

  - a bare name (C{"strip"}): a file C{<name>.py} or a package directory
    C{<name>/} in one of the plugin directories (by default C{plugins/}
    beside the configuration file), or else the plugin of that name shipped
    with popproxy;
  - a path (relative to the configuration file) to a C{.py} file, or, when
    it holds a C{/}, to a package directory (one holding C{__init__.py});
  - an importable C{"module:object"}.

A plugin is one module or a package of several: a package is loaded from
its directory under a private name, so its modules import each other
relatively (C{from ._wire import Client}), and its C{__init__.py} exports
C{makeFilter}.  A file, package or shipped plugin provides
C{makeFilter(settings)} or C{makeFilter(settings, reactor)}.  The object found is either a filter
already (it provides L{IMessageFilter}; it then takes no settings) or a
factory called with the entry's settings table, and with the reactor the
chain runs on when it takes a second positional argument, that returns one.
Whatever comes out is checked with C{verifyObject}, so a typo fails at
start-up, not at the first message.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from popproxy.interfaces import IMessageFilter

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class PluginError(Exception):
    """
    A plugin cannot be used; the message says why, in one line.
    """


def _moduleName(path: Path) -> str:
    return f"popproxy_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', str(path.resolve()))}"


def _forget(moduleName: str) -> None:
    """
    Drop a module that failed to load, and any of its submodules, so a
    later attempt starts afresh.
    """
    for name in [n for n in sys.modules if n == moduleName or n.startswith(moduleName + ".")]:
        del sys.modules[name]


def _loadFile(path: Path) -> ModuleType:
    """
    The plugin module at C{path}: a C{.py} file, or a package directory
    (its C{__init__.py} run with the directory as its C{__path__}).  Loaded
    once per path under a private name.
    """
    isPackage = path.is_dir()
    if isPackage and not (path / "__init__.py").is_file():
        raise PluginError(f"{path}: a directory without __init__.py is not a plugin package")
    if not isPackage and not path.is_file():
        raise PluginError(f"{path}: no such plugin file")
    moduleName = _moduleName(path)
    if moduleName in sys.modules:
        return sys.modules[moduleName]
    if isPackage:
        spec = importlib.util.spec_from_file_location(
            moduleName, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(moduleName, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        _forget(moduleName)
        raise PluginError(f"{path}: fails to load: {type(e).__name__}: {e}") from None
    return module


def _inDirectory(directory: Path, name: str, shipped: bool = False) -> Path | None:
    """
    The plugin called C{name} in C{directory}: C{<name>.py} or the package
    C{<name>/}; L{None} when there is neither.

    @param shipped: C{directory} holds the shipped plugins, where a module
        beside a package of the same name is a leftover of an older
        version (setuptools reinstalls what a stale C{build/} directory
        still holds): the package is the plugin.
    """
    file, package = directory / f"{name}.py", directory / name
    isPackage = (package / "__init__.py").is_file()
    if file.is_file() and isPackage and not shipped:
        raise PluginError(f"{directory}: both {name}.py and {name}/ are plugins named {name!r}")
    if isPackage:
        return package
    return file if file.is_file() else None


def shippedPluginDirectory() -> Path:
    """
    Where the plugins shipped with popproxy are: the installed package
    C{popproxy.plugins}, or C{plugins/} of a source checkout.
    """
    spec = importlib.util.find_spec("popproxy.plugins")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "plugins"


def _named(name: str, pluginDirs: tuple[Path, ...]) -> Path:
    """
    Where the plugin called C{name} is: the first plugin directory that has
    it, else the shipped plugins.
    """
    for directory in pluginDirs:
        found = _inDirectory(directory, name)
        if found is not None:
            return found
    found = _inDirectory(shippedPluginDirectory(), name, shipped=True)
    if found is not None:
        return found
    searched = ", ".join(str(d) for d in pluginDirs) or "no plugin directory"
    raise PluginError(f"no plugin named {name!r} (searched {searched} and the shipped plugins)")


def _findObject(spec: str, base: Path, pluginDirs: tuple[Path, ...]) -> Any:
    if ":" in spec and not spec.endswith(".py"):
        moduleName, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(moduleName)
        except Exception as e:
            raise PluginError(f"cannot import {moduleName}: {type(e).__name__}: {e}") from None
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise PluginError(f"{moduleName} has no {attribute}") from None
    if spec.endswith(".py") or "/" in spec:
        module = _loadFile(base / spec)
    elif _NAME.match(spec):
        module = _loadFile(_named(spec, pluginDirs))
    else:
        raise PluginError(f"{spec!r} is not a plugin name, a .py or package path or module:object")
    factory = getattr(module, "makeFilter", None)
    if factory is None:
        raise PluginError(f"{module.__file__} does not define makeFilter(settings)")
    return factory


def takesReactor(factory: Any) -> bool:
    """
    Whether C{factory} is called C{factory(settings, reactor)}: it takes a
    second positional argument that is required or named C{reactor}.  A
    factory whose signature cannot be read takes the settings alone.
    """
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2:
        return False
    second = positional[1]
    return second.default is inspect.Parameter.empty or second.name == "reactor"


def _build(spec: str, factory: Any, settings: Mapping[str, Any], reactor: Any) -> Any:
    arguments: tuple[Any, ...] = (dict(settings),)
    if takesReactor(factory):
        if reactor is None:
            raise PluginError(f"{spec} takes a reactor and none was given")
        arguments += (reactor,)
    try:
        return factory(*arguments)
    except (ValueError, TypeError, KeyError) as e:
        raise PluginError(f"{spec} rejects its settings: {e}") from None
    except Exception as e:
        raise PluginError(f"{spec} fails to start: {type(e).__name__}: {e}") from None


def loadFilter(
    spec: str,
    settings: Mapping[str, Any],
    base: Path,
    pluginDirs: tuple[Path, ...] = (),
    reactor: Any = None,
) -> Any:
    """
    The filter an entry of the chain describes.

    @param reactor: the reactor the chain runs on, handed to a factory
        that takes one (C{makeFilter(settings, reactor)}).

    @raise PluginError: it cannot be found, loaded or built, rejects its
        settings, or does not provide L{IMessageFilter}.
    """
    found = _findObject(spec, base, pluginDirs)
    if IMessageFilter.providedBy(found):
        if settings:
            raise PluginError(f"{spec} is a ready filter and takes no settings")
        candidate = found
    elif callable(found):
        candidate = _build(spec, found, settings, reactor)
    else:
        raise PluginError(f"{spec} is neither a filter nor a factory of filters")
    try:
        verifyObject(IMessageFilter, candidate)
    except Invalid as e:
        reason = " ".join(str(e).split())
        raise PluginError(f"{spec} does not provide IMessageFilter: {reason}") from None
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{spec}: its filter has no name")
    return candidate
