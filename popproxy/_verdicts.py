"""
What a filter sees (L{FilterContext}) and what it answers (the verdicts):
frozen values crossing the plugin API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from twisted.logger import Logger

from popproxy.message import Message

#: The logger of a context made without one: what C{Logger()} called from
#: here gives, made once (a context is made for every RETR and TOP, and a
#: logger that finds its namespace costs as much as the rest of it).
_DEFAULT_LOG = Logger(namespace=__name__)


def noItemUrl(identifier: str) -> str:
    """
    The link to a quarantined item where no console serves links: none.
    """
    return ""


@dataclass(frozen=True)
class FilterContext:
    """
    What is known about the retrieval a filter is asked about.  Never holds
    a password.

    @ivar command: C{"RETR"} or C{"TOP"}.
    @ivar index: the message number in the client's session.
    @ivar uidl: the upstream's unique id of the message, if it has UIDL.
    @ivar user: the login name the client used.
    @ivar client: the client's address, C{"host:port"}.
    @ivar upstream: the upstream server, as configured.
    @ivar partial: the message is incomplete (a TOP relayed as such, with
        C{[chain] top = "partial"}): a missing body part does not mean it
        was removed.  A TOP in C{"full"} mode filters the whole message and
        is not partial, so it gets exactly what RETR gets.
    @ivar lines: the body line count a TOP asked for, else C{None}.
    @ivar session: the session id, as in the logs.
    @ivar log: a logger for the filter; its events name the filter.  Safe
        to use from the filter thread a synchronous C{filterMessage} runs
        in: its events are handed to the reactor thread.
    @ivar notes: what earlier filters in the chain said they did, by
        filter name (see L{Verdict.note}).
    @ivar quarantine: the L{IQuarantine} where a filter must store what it
        removes (a part it strips) before returning its verdict, or C{None}
        when none is configured (then a filter that would remove something
        should answer L{TempFail}, so nothing is ever lost).  In the
        filter thread of a synchronous C{filterMessage}, its C{store} and
        C{storeParts} run on the reactor thread and return the ids
        themselves (not a Deferred), raising if the store fails.
    @ivar itemUrl: the link to a quarantined item, given its id, on the web
        console where its recipient can get it back (see docs/console.md);
        C{""} when no console gives links (no C{[console] public_url}).
        For notices' C{{url}}.
    """

    command: str
    index: int
    user: str
    client: str
    upstream: str
    session: str
    uidl: str | None = None
    partial: bool = False
    lines: int | None = None
    log: Logger = field(default=_DEFAULT_LOG, compare=False, repr=False)
    notes: tuple[tuple[str, str], ...] = ()
    quarantine: Any = field(default=None, compare=False, repr=False)
    #: Runs a callable off the reactor thread and returns a Deferred with
    #: its result: use it for CPU-heavy work so other sessions go on.  In
    #: the daemon the work is interrupted at the filter's timeout.  Called
    #: from a synchronous C{filterMessage} (already in a filter thread), the
    #: work runs at once, in that thread, under the filter's time limit.
    runInThread: Any = field(default=None, compare=False, repr=False)
    itemUrl: Callable[[str], str] = field(default=noItemUrl, compare=False, repr=False)


#: The names of L{FilterContext}'s fields.
_CONTEXT_FIELDS = frozenset(f.name for f in fields(FilterContext))


def contextWith(context: FilterContext, **changes: Any) -> FilterContext:
    """
    C{dataclasses.replace(context, **changes)} at a fifth of its cost: the
    chain makes one or two per filter per message.  The fields are copied
    as they are, which is all C{__init__} does: L{FilterContext} has no
    C{__post_init__}, no C{InitVar} and no C{__slots__}.

    @raise TypeError: a name in C{changes} is not a field.
    """
    if not changes.keys() <= _CONTEXT_FIELDS:
        unknown = ", ".join(sorted(changes.keys() - _CONTEXT_FIELDS))
        raise TypeError(f"FilterContext has no field {unknown}")
    copy = object.__new__(FilterContext)
    state = copy.__dict__
    state.update(context.__dict__)
    state.update(changes)
    return copy


@dataclass(frozen=True)
class RemovedPart:
    """
    One part a filter removes from a message, to be kept in the quarantine
    (see L{popproxy.interfaces.IPartQuarantine}).

    @ivar original: the part's octets as they were in the message, header
        lines included.
    @ivar path: where it was (L{popproxy.message.Part.path}).
    @ivar reason: why it was removed, in a few words.
    """

    original: bytes = field(repr=False)
    path: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Verdict:
    """
    Base of all verdicts.

    @ivar note: a short text saying what the filter did (e.g. "removed
        invoice.exe"); later filters see it in L{FilterContext.notes} and it
        is logged.
    """

    note: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Deliver(Verdict):
    """
    Deliver the message as it is (unchanged by this filter).
    """


@dataclass(frozen=True)
class Rewrite(Verdict):
    """
    Deliver C{message} instead (usually the received message with edits:
    untouched parts stay byte-identical).
    """

    message: Message


@dataclass(frozen=True)
class Replace(Verdict):
    """
    Deliver C{notice} instead of the message and keep the original in the
    quarantine.

    @ivar reason: why, stored with the quarantined original.
    """

    notice: Message
    reason: str


@dataclass(frozen=True)
class TempFail(Verdict):
    """
    Do not deliver now: the client gets C{-ERR [SYS/TEMP] reason}, the
    message stays on the server and the client retries later.
    """

    reason: str
