"""
The tag filter's settings (plugins/tag/_settings.py): defaults, and the tables of headers
and subject rules checked as a whole.
"""

from __future__ import annotations

import pytest

from plugins.tag._settings import DEFAULT_SUBJECT_RULES, TagSettings, parseSettings


def test_emptyTableGivesTheDefaults() -> None:
    """
    No settings: spamd on its usual port, the status header and the four default rules.
    """
    parsed = parseSettings({})
    assert parsed.spamd == TagSettings().spamd
    assert [h.name for h in parsed.headers] == ["X-Popproxy-Status"]
    assert [(r.prefix, r.kind) for r in parsed.subjectRules] == [
        (prefix, "spam" if when == "spam" else "note") for prefix, when in DEFAULT_SUBJECT_RULES
    ]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"headers": {"X-Spam-Flag": "x"}}, "set twice"),
        ({"spamd": "", "headers": {"X-A": "1", "x-a": "2"}}, "set twice"),
        ({"subject_rules": [{"prefix": "=?x", "when": "spam"}]}, "has a control character or"),
        ({"subject_rules": {"prefix": "[S]"}}, "must be a list"),
        ({"user": "a b"}, "plain user name"),
    ],
)
def test_badTablesAreRefused(settings: dict[str, object], complaint: str) -> None:
    """
    spamd's X-Spam- fields and a header named twice, a prefix that could start an
    encoded-word, rules not given as a list and a user name spamd could misread are refused.
    """
    with pytest.raises(ValueError, match=complaint):
        parseSettings(settings)


def test_withoutSpamdItsFieldsMayBeSet() -> None:
    """
    With scoring off the X-Spam- names are free for templates.
    """
    parsed = parseSettings({"spamd": "", "headers": {"X-Spam-Flag": "{status}"}})
    assert [h.name for h in parsed.headers] == ["X-Spam-Flag"]
