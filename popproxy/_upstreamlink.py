"""
Requests to the upstream that answer with Deferreds.

L{UpstreamLink} turns "send this command line and route its response to a
handler" into request methods shaped like Twisted's own POP3 client's
short and long commands: L{UpstreamLink.shortCommand} fires with the status
line, L{UpstreamLink.longCommand} with the status line and the body, and
L{UpstreamLink.spool} with a spool that received a (possibly big) body.
Multi-step exchanges then read straight, one C{await} per step, instead of
a chain of callbacks.  It holds no connection and no session: it is given
the one callable that sends a command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from popproxy._capabilities import UpstreamCapabilities
from popproxy._framing import StatusLine

if TYPE_CHECKING:
    from popproxy._retrievalflow import Spool


class Collector:
    """
    Collects one whole upstream response; L{finished} fires with its status
    line and its body (without the terminating line; empty unless the
    answer was positive).
    """

    #: Nothing of a collected response reaches the client as it arrives.
    inBody = False

    def __init__(self) -> None:
        self.finished: Deferred[tuple[StatusLine, bytes]] = Deferred()
        self._status: StatusLine | None = None
        self._parts: list[bytes] = []

    def statusReceived(self, status: StatusLine) -> None:
        self._status = status

    def bodyReceived(self, data: bytes) -> None:
        self._parts.append(data)

    def responseFinished(self) -> None:
        assert self._status is not None
        body = b"".join(self._parts)
        self._parts = []
        # The last piece ends with the terminating ".\r\n" line.
        self.finished.callback((self._status, body[:-3] if self._status.ok and body else b""))


def _statusOf(response: tuple[StatusLine, bytes]) -> StatusLine:
    return response[0]


#: Sends one command line upstream (multi-line or not) and routes its
#: response to a handler; the session's relay step.
Send = Callable[[bytes, bool, "Collector | Spool"], None]


class UpstreamLink:
    """
    Request methods over the session's one send step.
    """

    def __init__(self, send: Send) -> None:
        self._send = send

    def shortCommand(self, line: bytes) -> Deferred[StatusLine]:
        """
        Send C{line}; fire with the status line of its one-line answer.
        """
        collector = Collector()
        self._send(line, False, collector)
        return collector.finished.addCallback(_statusOf)

    def longCommand(self, line: bytes) -> Deferred[tuple[StatusLine, bytes]]:
        """
        Send C{line}; fire with the status line and the (still stuffed)
        body of its multi-line answer.
        """
        collector = Collector()
        self._send(line, True, collector)
        return collector.finished

    async def capabilities(self) -> UpstreamCapabilities:
        """
        Ask the upstream's capabilities (C{CAPA}); none if it refuses.
        """
        status, body = await self.longCommand(b"CAPA")
        return UpstreamCapabilities.fromResponse(status, body)

    def spool(self, line: bytes, into: Spool) -> Deferred[Spool]:
        """
        Send C{line} and receive its multi-line answer C{into}; fire with
        it once complete.
        """
        self._send(line, True, into)
        return into.finished
