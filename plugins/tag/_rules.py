"""
What the tag filter writes, as rules over the notes of earlier filters:
subject rules (which prefix when), header templates (C{{status}},
C{{note:NAME}}) and the one-line, capped text a header value may hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# RFC 5322 ftext; the plugin only ever owns X- fields.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
#: Longest header value this plugin writes (before folding).
MAX_VALUE = 900


def oneLine(text: str) -> str:
    """
    C{text} with control characters (line breaks included) and runs of
    spaces turned into one space: a note must not inject header lines.
    """
    return " ".join(CONTROL.sub(" ", text).split())


def capped(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


@dataclass(frozen=True)
class SubjectRule:
    """
    Put C{prefix} in front of the Subject when the rule matches.

    @ivar kind: C{"spam"} (spamd scored the message as spam) or C{"note"}
        (an earlier filter left a note).
    @ivar filter: for C{"note"}: the chain name of the filter whose notes
        count, or C{"*"} for any filter.
    @ivar text: for C{"note"}: the note must contain this (compared without
        regard to case); empty: any note.
    """

    prefix: str
    kind: str
    filter: str = ""
    text: str = ""

    @classmethod
    def fromSetting(cls, prefix: str, when: str) -> SubjectRule:
        """
        Parse C{when}: C{"spam"}, C{"note:<filter>"} or
        C{"note:<filter>:<text>"}.

        @raise ValueError: anything else.
        """
        if when == "spam":
            return cls(prefix, "spam")
        kind, _, rest = when.partition(":")
        filterName, _, text = rest.partition(":")
        if kind != "note" or not filterName.strip():
            raise ValueError(
                f"subject rule {prefix!r}: when must be 'spam', 'note:<filter>' or "
                f"'note:<filter>:<text>', not {when!r}"
            )
        return cls(prefix, "note", filterName.strip(), text.strip())

    def matches(self, isSpam: bool, notes: Sequence[tuple[str, str]]) -> bool:
        """
        Whether the rule applies, given spamd's opinion and the notes.
        """
        if self.kind == "spam":
            return isSpam
        wanted = self.text.casefold()
        return any(
            (self.filter == "*" or name == self.filter) and wanted in note.casefold()
            for name, note in notes
        )


@dataclass(frozen=True)
class HeaderTemplate:
    """
    A header field to set, its value made from the notes of earlier
    filters: C{{status}} is every note (C{"strip: removed x.exe; scan:
    clean"}), C{{note:NAME}} the notes of the filter called NAME; C{{{}}
    and C{}}} stand for braces.  The field is set only when every
    placeholder has a value; a template without placeholders is always set.
    """

    name: str
    template: str

    def __post_init__(self) -> None:
        if not _FIELD_NAME.fullmatch(self.name) or not self.name.lower().startswith("x-"):
            raise ValueError(f"headers: {self.name!r} is not an X- header field name")
        if CONTROL.search(self.template):
            raise ValueError(f"headers: the value of {self.name} has a control character")
        for match in _PLACEHOLDER.finditer(self.template):
            token = match.group(0)
            if token in ("{{", "}}"):
                continue
            placeholder = match.group(1)
            if placeholder is None:
                raise ValueError(
                    f"headers: a lone brace in the value of {self.name} (write {{{{ or }}}})"
                )
            if placeholder != "status" and not (
                placeholder.startswith("note:") and placeholder[5:].strip()
            ):
                raise ValueError(
                    f"headers: unknown placeholder {token} in the value of {self.name} "
                    "(known: {status}, {note:<filter>})"
                )

    def render(self, notes: Sequence[tuple[str, str]]) -> str | None:
        """
        The value for these notes, or C{None} if a placeholder has none.
        """
        pieces: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(self.template):
            pieces.append(self.template[position : match.start()])
            position = match.end()
            value = _substitute(match, notes)
            if not value:
                return None
            pieces.append(value)
        pieces.append(self.template[position:])
        return capped("".join(pieces).strip())


def _substitute(match: re.Match[str], notes: Sequence[tuple[str, str]]) -> str:
    """
    What one token of a template stands for: a brace, or the notes a
    placeholder names (empty when there are none).
    """
    token = match.group(0)
    if token in ("{{", "}}"):
        return token[0]
    placeholder = match.group(1)
    if placeholder == "status":
        return "; ".join(f"{name}: {oneLine(note)}" for name, note in notes)
    wanted = placeholder[5:].strip()
    return "; ".join(oneLine(note) for name, note in notes if name == wanted)
