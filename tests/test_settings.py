"""
Tests for popproxy._settings: the typed reader plugins check their settings
with, and the unknown keys it names.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from popproxy.interfaces import SettingsError, SettingsReader


def test_absentKeysGiveTheDefaultsAsGiven() -> None:
    """
    With an empty table every getter returns its default unchecked, and
    C{finish} has nothing to refuse.
    """
    read = SettingsReader({})
    assert read.string("a", "x") == "x"
    assert read.boolean("b", True) is True
    assert read.integer("c", 3, minimum=5) == 3
    assert read.number("d", 2.5) == 2.5
    assert read.number("e", None) is None
    assert read.choice("f", "one", ("one", "two")) == "one"
    assert read.strings("g", ("exe",)) == ("exe",)
    assert read.table("h", {"k": "v"}) == {"k": "v"}
    assert read.value("i", [1]) == [1]
    read.finish()


def test_givenValuesAreCheckedAndReturned() -> None:
    """
    Values of the right kind come back, numbers as floats and lists as
    tuples.
    """
    read = SettingsReader(
        {
            "a": "text",
            "b": False,
            "c": 7,
            "d": 3,
            "e": 0.5,
            "f": "two",
            "g": ["exe", "com"],
            "h": {"x": 1},
            "i": [],
        }
    )
    assert read.string("a", "") == "text"
    assert read.boolean("b", True) is False
    assert read.integer("c", 0, minimum=7) == 7
    number = read.number("d", 1.0, above=0)
    assert number == 3.0 and isinstance(number, float)
    assert read.number("e", None) == 0.5
    assert read.choice("f", "one", ("one", "two")) == "two"
    assert read.strings("g", ()) == ("exe", "com")
    assert read.table("h", {}) == {"x": 1}
    assert read.strings("i", ("default",)) == ()
    read.finish()


@pytest.mark.parametrize(
    ("getter", "arguments", "value", "complaint"),
    [
        ("string", ("",), 7, "k must be a string, not 7"),
        ("boolean", (True,), "yes", "k must be true or false, not 'yes'"),
        ("boolean", (True,), 1, "k must be true or false, not 1"),
        ("integer", (0,), True, "k must be a whole number, 0 or more, not True"),
        ("integer", (0,), 1.5, "k must be a whole number, 0 or more, not 1.5"),
        ("integer", (0,), "3", "k must be a whole number, 0 or more, not '3'"),
        ("number", (1.0,), True, "k must be a number, not True"),
        ("number", (1.0,), "1", "k must be a number, not '1'"),
        ("number", (1.0,), float("nan"), "k must be a finite number, not nan"),
        ("number", (1.0,), float("inf"), "k must be a finite number, not inf"),
        ("strings", ((),), "exe", "k must be a list of strings, not 'exe'"),
        ("strings", ((),), ["exe", 1], "k must be a list of strings, not ['exe', 1]"),
        ("table", ({},), [1], "k must be a table, not [1]"),
    ],
)
def test_wrongKindsAreNamed(
    getter: str, arguments: tuple[Any, ...], value: Any, complaint: str
) -> None:
    """
    A value of the wrong kind is refused with a L{SettingsError} (a
    ValueError) naming the key, what it must be, and what it was.
    """
    read = SettingsReader({"k": value})
    with pytest.raises(SettingsError, match=re.escape(complaint)):
        getattr(read, getter)("k", *arguments)
    assert issubclass(SettingsError, ValueError)


def test_boundsAndChoices() -> None:
    """
    C{minimum} is inclusive, C{above} is not, and a choice lists what is
    allowed.
    """
    with pytest.raises(SettingsError, match="k must be a whole number, 1 or more, not 0"):
        SettingsReader({"k": 0}).integer("k", 5, minimum=1)
    with pytest.raises(SettingsError, match="k must be a number above 0, not 0"):
        SettingsReader({"k": 0}).number("k", 5.0, above=0)
    with pytest.raises(SettingsError, match="k must be one of 'a', 'b', not 'c'"):
        SettingsReader({"k": "c"}).choice("k", "a", ("a", "b"))


def test_unknownKeyIsNamedWithTheKnownOnes() -> None:
    """
    C{finish} refuses the first (sorted) key no getter asked for and lists
    the keys that were asked for, in order.
    """
    read = SettingsReader({"min": 1, "minimum": 2, "headr": "X"})
    read.string("header", "X-Count")
    read.integer("min", 0)
    with pytest.raises(
        SettingsError, match=re.escape("unknown setting 'headr' (known: header, min)")
    ):
        read.finish()


def test_keysAskedForTwiceAreListedOnce() -> None:
    """
    Asking for a key again (a value checked in two steps) does not repeat
    it among the known keys.
    """
    read = SettingsReader({"x": 1})
    read.value("a")
    read.string("a", "")
    with pytest.raises(SettingsError, match=re.escape("(known: a)")):
        read.finish()


def test_theTableIsNotChanged() -> None:
    """
    The reader works on its own copy: the plugin's table stays as it was.
    """
    settings = {"a": "x"}
    read = SettingsReader(settings)
    read.string("a", "")
    read.finish()
    assert settings == {"a": "x"}
