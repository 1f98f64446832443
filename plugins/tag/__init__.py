"""
The tag filter: marks each message with what the chain did to it and with
SpamAssassin's opinion, and changes nothing else.

  - header fields from templates over the notes of the earlier filters
    (C{X-Popproxy-Status: strip: removed invoice.exe; scan: clean});
  - subject prefixes by rule (C{[SPAM]}, C{[ATTACHMENT REMOVED]},
    C{[VIRUS]}), spliced in front of the Subject as it was sent: an RFC
    2047-encoded or folded subject is never decoded or re-encoded;
  - a spam score from spamd (SpamAssassin's SPAMC/1.5 protocol, asked
    without blocking, with a timeout and a size limit): C{X-Spam-Flag},
    C{X-Spam-Score}, C{X-Spam-Status}.  A message spamd did not score is
    never called ham: it gets C{X-Spam-Status: unchecked (<why>)}.

One module per role: C{_rules} (subject rules, header templates),
C{_settings}, C{_subject} (the prefix splice), C{_spamd} (the SPAMC/1.5
request and the answer parser, no I/O), C{_client} (the Twisted client of
spamd), C{_filter} (L{TagFilter}) and C{_factory} (C{makeFilter}); this
module only re-exports.  Every setting is described in docs/plugins/tag.md.
Written on the public plugin API only (C{popproxy.interfaces},
C{popproxy.message}) plus Twisted.
"""

from ._client import SpamChecker, SpamdClient
from ._factory import makeFilter
from ._filter import TagFilter
from ._rules import HeaderTemplate, SubjectRule
from ._settings import TagSettings, parseSettings
from ._spamd import SpamdAnswer, SpamdAnswerParser, SpamdError, spamdRequest
from ._subject import withSubjectPrefixes

__all__ = [
    "HeaderTemplate",
    "SpamChecker",
    "SpamdAnswer",
    "SpamdAnswerParser",
    "SpamdClient",
    "SpamdError",
    "SubjectRule",
    "TagFilter",
    "TagSettings",
    "makeFilter",
    "parseSettings",
    "spamdRequest",
    "withSubjectPrefixes",
]
