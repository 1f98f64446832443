"""
The tag filter's rules (plugins/tag/_rules.py): header templates rendered from the notes,
subject rules parsed from their settings and matched, and header text kept to one capped line.
"""

from __future__ import annotations

import pytest

from plugins.tag._rules import MAX_VALUE, HeaderTemplate, SubjectRule, capped, oneLine

NOTES = [("strip", "removed a.exe"), ("scan", "clean")]


def test_templateRendersStatusNotesAndBraces() -> None:
    """
    {status} is every note with its filter, {note:NAME} the notes of one filter, doubled
    braces are braces; text around them stays.
    """
    assert HeaderTemplate("X-S", "[{status}]").render(NOTES) == (
        "[strip: removed a.exe; scan: clean]"
    )
    assert HeaderTemplate("X-S", "{{{note:scan}}}").render(NOTES) == "{clean}"


def test_templateWithAMissingNoteIsNotSet() -> None:
    """
    A placeholder without a note leaves the whole field unset; no placeholder: always set.
    """
    assert HeaderTemplate("X-S", "{note:tag}").render(NOTES) is None
    assert HeaderTemplate("X-S", "{status}").render([]) is None
    assert HeaderTemplate("X-S", "fixed").render([]) == "fixed"


@pytest.mark.parametrize(
    ("name", "template", "complaint"),
    [
        ("Subject", "x", "not an X- header field name"),
        ("X-S", "{", "a lone brace"),
        ("X-S", "{user}", "unknown placeholder"),
        ("X-S", "a\nb", "control character"),
    ],
)
def test_badTemplatesAreRefused(name: str, template: str, complaint: str) -> None:
    """
    Only X- fields, balanced braces, known placeholders and one line make a template.
    """
    with pytest.raises(ValueError, match=complaint):
        HeaderTemplate(name, template)


def test_subjectRulesMatchSpamOrNotes() -> None:
    """
    "spam" follows spamd's opinion; "note:<filter>:<text>" a note of that filter (any with
    "*") holding the text, without regard to case; anything else is refused.
    """
    assert SubjectRule.fromSetting("[SPAM]", "spam").matches(True, [])
    assert not SubjectRule.fromSetting("[SPAM]", "spam").matches(False, NOTES)
    assert SubjectRule.fromSetting("[X]", "note:strip:REMOVED").matches(False, NOTES)
    assert not SubjectRule.fromSetting("[X]", "note:scan:removed").matches(False, NOTES)
    assert SubjectRule.fromSetting("[X]", "note:*:clean").matches(False, NOTES)
    with pytest.raises(ValueError, match="when must be 'spam'"):
        SubjectRule.fromSetting("[X]", "virus")


def test_headerTextIsOneCappedLine() -> None:
    """
    Control characters and runs of spaces become one space; long values are cut with dots.
    """
    assert oneLine("a\r\n  b\x00c") == "a b c"
    assert capped("x" * (MAX_VALUE + 5)) == "x" * (MAX_VALUE - 3) + "..."
    assert capped("short") == "short"
