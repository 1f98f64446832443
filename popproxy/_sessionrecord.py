"""
Who one session is and what it has done: L{SessionRecord} holds a session's
identity (its id, the client's address, the user once logged in, the
upstream it talks to, when it opened) and its accounting (commands, bytes
in and out, why it ended); it writes the session's "opened" and "closed"
log lines and metrics, gives the identity part of each retrieval's
L{FilterContext}, and reads out as a frozen L{SessionSnapshot}, what a list
of the sessions open now shows (L{popproxy._sessionregistry}).

It is given callables for what others own (the upstream's address, the
bytes written to the client), never the session.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from popproxy._metrics import NO_METRICS, Metrics
from popproxy._printable import PrintableLogger
from popproxy._verdicts import FilterContext

__all__ = ["SessionRecord", "SessionSnapshot", "describePeer"]

_sessionIds = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """
    One session as it stands at one moment.

    @ivar session: its id, as in the logs.
    @ivar listener: the listener it came in on, as the metrics label it.
    @ivar client: the client's address, C{host:port} (C{[v6]:port}).
    @ivar user: the login name, once logged in.
    @ivar upstream: the upstream server it is connected to, if any.
    @ivar since: when it opened, in the clock's seconds (POSIX time).
    @ivar commands: the commands the client sent so far.
    @ivar bytesIn: the bytes received from the client so far.
    @ivar bytesOut: the bytes sent to the client so far.
    """

    session: str
    listener: str
    client: str
    user: str | None
    upstream: str | None
    since: float
    commands: int
    bytesIn: int
    bytesOut: int


class SessionRecord:
    """
    One session's identity and accounting.

    @ivar ending: why the session ended (or will end), for the closed line.
    """

    #: User names and addresses come from the client: every text field of
    #: its events is escaped.
    log = PrintableLogger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        upstream: Callable[[], object | None],
        bytesOut: Callable[[], int],
        listener: str = "",
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """
        @param upstream: the address of the upstream the session talks to
            (C{None}: not connected).
        @param bytesOut: how many bytes were sent to the client so far.
        @param listener: the listener's label, for the metrics.
        """
        self._clock = clock
        self._upstream = upstream
        self._bytesOut = bytesOut
        self._listener = listener
        self._metrics = metrics
        self.sessionId = f"{next(_sessionIds):x}"
        self.client = "?"
        self.user: str | None = None
        self.since = clock.seconds()
        self.commands = 0
        self.bytesIn = 0
        self.ending = "client closed the connection"

    @property
    def upstream(self) -> str | None:
        address = self._upstream()
        return str(address) if address else None

    def opened(self) -> None:
        """
        The session was admitted: log it and count it.
        """
        self.since = self._clock.seconds()
        self.log.info(
            "session {session} opened by {client}", session=self.sessionId, client=self.client
        )
        self._metrics.sessionOpened(self._listener)

    def closed(self, pendingLogin: str | None = None) -> None:
        """
        The session has ended: log what it did, and count it.

        @param pendingLogin: the name of a login under way (a C{USER}
            waiting for its C{PASS}), shown when nobody logged in.
        """
        self.log.info(
            "session {session} closed: {ending}; client={client} user={user} "
            "upstream={upstream} commands={commands} bytesIn={bytesIn} bytesOut={bytesOut}",
            session=self.sessionId,
            ending=self.ending,
            client=self.client,
            user=self.user or pendingLogin or "-",
            upstream=self.upstream or "-",
            commands=self.commands,
            bytesIn=self.bytesIn,
            bytesOut=self._bytesOut(),
        )
        self._metrics.sessionClosed(self._listener, self.ending, self.bytesIn, self._bytesOut())

    def filterContext(self, command: str, index: int, lines: int | None) -> FilterContext:
        """
        What the chain is told about one retrieval of this session.
        """
        return FilterContext(
            command=command,
            index=index,
            lines=lines,
            user=self.user or "",
            client=self.client,
            upstream=self.upstream or "",
            session=self.sessionId,
        )

    def snapshot(self) -> SessionSnapshot:
        """
        The session as it stands now.
        """
        return SessionSnapshot(
            session=self.sessionId,
            listener=self._listener,
            client=self.client,
            user=self.user,
            upstream=self.upstream,
            since=self.since,
            commands=self.commands,
            bytesIn=self.bytesIn,
            bytesOut=self._bytesOut(),
        )


def describePeer(peer: object) -> str:
    """
    A client address as the logs show it: C{host:port}, C{[v6]:port}.
    """
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
