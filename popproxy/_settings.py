"""
Read the C{settings} table of a C{[[filter]]} entry with typed getters, so
a plugin's factory checks its settings in a few lines and an unknown key
(a typo) is named instead of silently ignored.

    def makeFilter(settings, reactor):
        read = SettingsReader(settings)
        header = read.string("header", "X-Count")
        minimum = read.integer("min", 0, minimum=0)
        read.finish()  # "unknown setting 'minimum' (known: header, min)"

Every complaint is a L{SettingsError}, a C{ValueError}: the loader turns it
into "<plugin> rejects its settings: <why>" and start-up stops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, overload

__all__ = ["SettingsError", "SettingsReader"]


class SettingsError(ValueError):
    """
    A setting is unknown or its value cannot be used; the message names it.
    """


class SettingsReader:
    """
    One settings table, read key by key.  Each getter returns the value of
    its key, checked, or the default (as given) when the key is absent, and
    remembers the key as known; L{finish} then refuses any key no getter
    asked for.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = dict(settings)
        self._known: list[str] = []

    def value(self, key: str, default: Any = None) -> Any:
        """
        The raw value of C{key}, for a plugin checking it in its own way.
        """
        if key not in self._known:
            self._known.append(key)
        return self._settings.get(key, default)

    def _absent(self, key: str) -> bool:
        self.value(key)
        return key not in self._settings

    def string(self, key: str, default: str) -> str:
        if self._absent(key):
            return default
        value = self._settings[key]
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be a string, not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if self._absent(key):
            return default
        value = self._settings[key]
        if not isinstance(value, bool):
            raise SettingsError(f"{key} must be true or false, not {value!r}")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        """
        A whole number, C{minimum} or more (C{true} and C{false} are not
        numbers).
        """
        if self._absent(key):
            return default
        value = self._settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SettingsError(f"{key} must be a whole number, {minimum} or more, not {value!r}")
        return value

    @overload
    def number(self, key: str, default: float, *, above: float | None = None) -> float: ...

    @overload
    def number(self, key: str, default: None, *, above: float | None = None) -> float | None: ...

    def number(
        self, key: str, default: float | None, *, above: float | None = None
    ) -> float | None:
        """
        A finite number (whole or not), more than C{above} if given; the
        default C{None} stands for "not set".
        """
        if self._absent(key):
            return default
        value = self._settings[key]
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{key} must be a number, not {value!r}")
        if not math.isfinite(value):
            # TOML allows nan and inf; neither makes a usable timeout.
            raise SettingsError(f"{key} must be a finite number, not {value!r}")
        if above is not None and not value > above:
            raise SettingsError(f"{key} must be a number above {above:g}, not {value!r}")
        return float(value)

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        if self._absent(key):
            return default
        value = self._settings[key]
        if value not in allowed:
            listed = ", ".join(map(repr, allowed))
            raise SettingsError(f"{key} must be one of {listed}, not {value!r}")
        return str(value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """
        A list of strings, possibly empty (a lone string is refused: it is
        too often a list someone forgot to bracket).
        """
        if self._absent(key):
            return default
        value = self._settings[key]
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise SettingsError(f"{key} must be a list of strings, not {value!r}")
        return tuple(value)

    def table(self, key: str, default: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._absent(key):
            return default
        value = self._settings[key]
        if not isinstance(value, Mapping):
            raise SettingsError(f"{key} must be a table, not {value!r}")
        return value

    def finish(self) -> None:
        """
        @raise SettingsError: a key no getter asked for, named with the
            known ones.
        """
        unknown = sorted(set(self._settings) - set(self._known))
        if unknown:
            known = ", ".join(self._known)
            raise SettingsError(f"unknown setting {unknown[0]!r} (known: {known})")
