"""
The strip plugin's settings and factory (plugins/strip/_settings.py,
_factory.py): the policy each setting gives, the errors a wrong one
stops start-up with, and the documentation listing every setting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from plugins.strip._factory import makeFilter
from plugins.strip._settings import (
    DEFAULT_CONTENT_TYPES,
    DEFAULT_EXTENSIONS,
    DEFAULT_NOTICE,
    SETTINGS,
    StripPolicy,
    parsePolicy,
)
from popproxy._plugins import PluginError, loadFilter

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins" / "strip.md"


def loadStrip(**settings: Any) -> Any:
    """
    The strip filter, loaded as C{plugin = "strip"} loads it.
    """
    return loadFilter("strip", settings, Path("."), ())


def test_noSettingsGiveTheDefaultPolicy() -> None:
    """
    An empty settings table is the default policy: the documented
    extensions and content types, the default notice.
    """
    policy = parsePolicy({})
    assert policy == StripPolicy()
    assert policy.extensions == frozenset(DEFAULT_EXTENSIONS)
    assert policy.contentTypes == frozenset(DEFAULT_CONTENT_TYPES)
    assert policy.notice == DEFAULT_NOTICE


def test_settingsAreNormalized() -> None:
    """
    Extensions lose their dot and case, content types their case and
    blanks; every other setting lands in its field.
    """
    policy = parsePolicy(
        {
            "extensions": [".EXE", " Tar.GZ "],
            "content_types": [" Application/X-Thing "],
            "max_size": 10,
            "signed": "replace",
            "notice": "gone: {filename}",
        }
    )
    assert policy.extensions == frozenset({"exe", "tar.gz"})
    assert policy.contentTypes == frozenset({"application/x-thing"})
    assert (policy.maxSize, policy.signed, policy.notice) == (10, "replace", "gone: {filename}")


def test_factoryBuildsTheFilterOverThePolicy() -> None:
    """
    makeFilter gives the filter named C{strip} holding the policy its
    settings ask for.
    """
    strip = makeFilter({"max_nesting": 2})
    assert strip.name == "strip"
    assert strip.policy == StripPolicy(maxNesting=2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"extension": ["exe"]}, "unknown setting 'extension'"),
        ({"extensions": "exe"}, "extensions must be a list of strings"),
        ({"extensions": ["ex e"]}, "is not a file extension"),
        ({"content_types": ["exe"]}, "is not a type/subtype"),
        ({"detect": "yes"}, "detect must be true or false"),
        ({"max_nesting": 0}, "max_nesting must be a whole number, 1 or more"),
        ({"max_inflated": True}, "max_inflated must be a whole number"),
        ({"max_size": -1}, "max_size must be a whole number, 0 or more"),
        ({"encrypted": "block"}, "encrypted must be one of 'allow', 'strip'"),
        ({"signed": "drop"}, "signed must be one of 'strip', 'replace'"),
        ({"unreadable": 1}, "unreadable must be one of"),
        ({"notice": "{file}"}, "unknown field {file}"),
        ({"notice": "{filename"}, "not a valid template"),
        ({"notice": " "}, "notice must be a non-empty text"),
    ],
)
def test_badSettings(settings: dict[str, Any], message: str) -> None:
    """
    A wrong setting is a ValueError from makeFilter naming it, which stops
    start-up with one line naming the plugin.
    """
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("(", r"\(")):
        makeFilter(settings)
    with pytest.raises(PluginError, match="strip rejects its settings"):
        loadStrip(**settings)


def test_documentation() -> None:
    """
    The plugin's documentation lists every setting with its default, and
    the configuration example in it loads.
    """
    text = DOC.read_text()
    for setting in SETTINGS:
        assert f"`{setting}`" in text, setting
    for extension in DEFAULT_EXTENSIONS:
        assert extension in text, extension
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tomllib.loads(example)
    [entry] = [entry for entry in config["filter"] if entry["plugin"] == "strip"]
    assert loadStrip(**entry["settings"]).name == "strip"
