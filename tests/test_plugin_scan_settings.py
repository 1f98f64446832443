"""
The scan filter's settings (plugins/scan/_settings.py): defaults, names mapped to fields,
and templates checked for the placeholders each may use.
"""

from __future__ import annotations

import pytest

from plugins.scan._settings import DEFAULT_PART_NOTICE, ScanSettings, parseSettings


def test_emptyTableGivesTheDefaults() -> None:
    """
    No settings at all is the documented defaults.
    """
    assert parseSettings({}) == ScanSettings()
    assert ScanSettings().notice == DEFAULT_PART_NOTICE


def test_settingNamesMapToFields() -> None:
    """
    The snake_case names of the table reach their fields.
    """
    parsed = parseSettings(
        {"max_stream": 10, "on_failure": "deliver", "stamp_clean": False, "mode": "both"}
    )
    assert (parsed.maxStream, parsed.onFailure, parsed.stampClean, parsed.mode) == (
        10,
        "deliver",
        False,
        "both",
    )


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"subject": "{filename}"}, "subject may use {virus}, {subject}, not {filename}"),
        ({"notice": "{virus"}, "notice is not a usable template"),
        ({"header": "X Bad"}, "header must be a header field name"),
        ({"address": "clamd.sock"}, "address must be a client endpoint string"),
    ],
)
def test_unusableValuesAreRefused(settings: dict[str, str], complaint: str) -> None:
    """
    A template with a placeholder it may not use, a broken template, a header name with a
    space and an address that is not an endpoint string are each a ValueError naming them.
    """
    with pytest.raises(ValueError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        parseSettings(settings)
