"""
The tag filter's settings: their defaults, and the checks that turn a
C{[[filter]]} settings table into L{TagSettings}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popproxy.interfaces import SettingsReader

from ._rules import CONTROL, HeaderTemplate, SubjectRule

DEFAULT_SPAMD = "tcp:127.0.0.1:783"
DEFAULT_USER = "popproxy"
DEFAULT_TIMEOUT = 20.0
#: spamc's own default limit (500 KiB): SpamAssassin gets slow on big
#: messages, and spam is small.
DEFAULT_MAX_SIZE = 512_000
ON_FAILURE = ("deliver", "tempfail")
DEFAULT_HEADERS: Mapping[str, str] = {"X-Popproxy-Status": "{status}"}
# The wording of the shipped filters' notes: scan says "virus <name>" when it
# replaced a whole message and "removed <name>" when it replaced infected
# parts; strip says "removed <file> (<reason>)".
DEFAULT_SUBJECT_RULES: tuple[tuple[str, str], ...] = (
    ("[VIRUS]", "note:scan:virus"),
    ("[VIRUS]", "note:scan:removed"),
    ("[ATTACHMENT REMOVED]", "note:strip:removed"),
    ("[SPAM]", "spam"),
)

SPAM_FLAG = "X-Spam-Flag"
SPAM_SCORE = "X-Spam-Score"
SPAM_STATUS = "X-Spam-Status"
SPAM_HEADERS = (SPAM_FLAG, SPAM_SCORE, SPAM_STATUS)

_DEFAULT_RULE_TABLES = [{"prefix": p, "when": w} for p, w in DEFAULT_SUBJECT_RULES]

_USER = re.compile(r"[A-Za-z0-9._@+=-]{1,64}")


@dataclass(frozen=True)
class TagSettings:
    """
    The checked settings of one tag filter (see docs/plugins/tag.md).

    @ivar spamd: a Twisted client endpoint string; empty: no spam scoring.
    @ivar threshold: the score from which a message is spam; C{None}:
        spamd's own C{required_score}.
    """

    spamd: str = DEFAULT_SPAMD
    user: str = DEFAULT_USER
    timeout: float = DEFAULT_TIMEOUT
    maxSize: int = DEFAULT_MAX_SIZE
    threshold: float | None = None
    onFailure: str = "deliver"
    headers: tuple[HeaderTemplate, ...] = ()
    subjectRules: tuple[SubjectRule, ...] = ()


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"subject_rules: prefix must be a non-empty string, not {value!r}")
    prefix = value.strip()
    if CONTROL.search(prefix) or "=?" in prefix:
        raise ValueError(f"subject_rules: prefix {prefix!r} has a control character or '=?'")
    return prefix


def parseSettings(settings: Mapping[str, Any]) -> TagSettings:
    """
    Check the C{settings} table of a C{[[filter]]} entry.

    @raise ValueError: an unknown key or a bad value (stops start-up).
    """
    read = SettingsReader(settings)
    spamd = read.string("spamd", DEFAULT_SPAMD).strip()
    user = read.string("user", DEFAULT_USER)
    if not _USER.fullmatch(user):
        raise ValueError(f"user must be a plain user name for spamd, not {user!r}")
    checked = TagSettings(
        spamd=spamd,
        user=user,
        timeout=read.number("timeout", DEFAULT_TIMEOUT, above=0),
        maxSize=read.integer("max_size", DEFAULT_MAX_SIZE, minimum=1),
        threshold=read.number("threshold", None),
        onFailure=read.choice("on_failure", "deliver", ON_FAILURE),
        headers=_headers(read.table("headers", DEFAULT_HEADERS), spamd),
        subjectRules=_subjectRules(read.value("subject_rules", _DEFAULT_RULE_TABLES)),
    )
    read.finish()
    return checked


def _headers(table: Mapping[str, Any], spamd: str) -> tuple[HeaderTemplate, ...]:
    headers = []
    seen: set[str] = set()
    for name, template in table.items():
        if not isinstance(name, str) or not isinstance(template, str):
            raise ValueError(f"headers: {name!r} = {template!r} is not name = text")
        if name.lower() in seen or (spamd and name.lower() in (h.lower() for h in SPAM_HEADERS)):
            raise ValueError(f"headers: {name} is set twice (the X-Spam- fields are spamd's)")
        seen.add(name.lower())
        headers.append(HeaderTemplate(name, template))
    return tuple(headers)


def _subjectRules(ruleList: object) -> tuple[SubjectRule, ...]:
    if not isinstance(ruleList, list):
        raise ValueError("subject_rules must be a list of {prefix = ..., when = ...} tables")
    rules = []
    for rule in ruleList:
        if not isinstance(rule, Mapping) or set(rule) != {"prefix", "when"}:
            raise ValueError(f"subject_rules: {rule!r} is not a {{prefix, when}} table")
        when = rule["when"]
        if not isinstance(when, str):
            raise ValueError(f"subject_rules: when must be a string, not {when!r}")
        rules.append(SubjectRule.fromSetting(_prefix(rule["prefix"]), when.strip()))
    return tuple(rules)
