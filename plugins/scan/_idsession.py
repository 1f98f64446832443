"""
clamd's IDSESSION protocol without I/O: the commands that open and end a
session, the numbering of its requests, and each reply attributed to the
request it answers.
"""

from __future__ import annotations

from ._wire import (
    INSTREAM_COMMAND,
    ClamdError,
    ClamdUnavailable,
    OverlongReply,
    ReplyParser,
    printable,
)

# A session, sans I/O.
#
# "zIDSESSION\0" opens it; then any number of commands, here "zINSTREAM\0"
# each followed by its frames (see _wire); "zEND\0" ends it and clamd closes
# the connection.  clamd numbers the requests from 1 in the order they
# arrive and prefixes each reply with its number: "3: stream: OK\0".  It
# answers each INSTREAM once (OK, FOUND or ERROR); after an ERROR (the size
# limit, a command it refuses) it closes the connection.  This client keeps
# one request outstanding at a time: clamd scans one stream at a time per
# session anyway, and measured pipelining gained nothing (docs/plugins/scan.md).
# clamd also closes a session left idle for its IdleTimeout (30 s by default),
# silently: the client learns it only when its next request meets a closed
# connection.

#: Opens a session; replies are NUL-terminated and numbered.
IDSESSION_COMMAND = b"zIDSESSION\0"

#: Ends a session; clamd answers the requests still running, then closes.
END_COMMAND = b"zEND\0"


class StaleSession(ClamdUnavailable):
    """
    The connection of a session that had answered before was found closed
    when the next request was sent, before any octet of its answer: clamd
    may have ended the session as idle, so the request may be sent again in
    a new one.
    """


class UnexpectedReply(ClamdError):
    """
    clamd sent what no reply in a session can be.

    @ivar answer: the outstanding request's answer, when it came in the
        same octets before: what it found still counts.
    """

    def __init__(self, reason: str, answer: bytes | None = None) -> None:
        super().__init__(reason)
        self.answer = answer


def splitRequestNumber(raw: bytes) -> tuple[int, bytes]:
    """
    The request number a session reply starts with, and the reply after it.

    @raise ClamdError: the reply carries no number (clamd refusing the
        session itself, or not clamd at all).
    """
    number, separator, reply = raw.partition(b": ")
    if not separator or not number.isdigit() or len(number) > 12:
        text = printable(raw.decode("utf-8", "replace"))
        raise ClamdError(f"clamd: {text[:200]}")
    return int(number), reply


class SessionExchange:
    """
    The requests of one session and their answers: numbers each INSTREAM,
    one outstanding at a time, and picks its answer out of what clamd sends.
    """

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self._sent = 0
        self._heard = False
        self.outstanding: int | None = None

    def request(self) -> bytes:
        """
        Number the next INSTREAM and return its command (its frames follow).

        @raise RuntimeError: the previous request is still unanswered.
        """
        if self.outstanding is not None:
            raise RuntimeError(f"request {self.outstanding} is still unanswered")
        self._sent += 1
        self.outstanding = self._sent
        self._heard = False
        return INSTREAM_COMMAND

    @property
    def resendable(self) -> bool:
        """
        Whether the outstanding request, its connection lost now, may be
        sent again in a new session: the session had answered requests
        before (clamd closes an idle one silently, which shows only when
        the next request is sent) and not one octet came since this one
        was sent.  Any other loss is clamd's failure.
        """
        return self.outstanding is not None and self.outstanding > 1 and not self._heard

    def feed(self, data: bytes) -> bytes | None:
        """
        Take more octets from clamd; return the reply to the outstanding
        request (without its number) once it has arrived, and the request
        is then answered.  A further reply to a request already answered
        is ignored: it belongs to no stream still waiting.

        @raise UnexpectedReply: a reply without a number, with the number
            of a request never sent, or longer than a reply can be; it
            carries the outstanding request's answer if that came first.
        """
        if data and self.outstanding is not None:
            self._heard = True
        overlong: OverlongReply | None = None
        try:
            replies = self._parser.feed(data)
        except OverlongReply as e:
            # The replies terminated before the overlong one still count.
            replies, overlong = e.complete, e
        answer: bytes | None = None
        try:
            for raw in replies:
                number, reply = splitRequestNumber(raw)
                if not 1 <= number <= self._sent:
                    raise ClamdError(f"clamd answered request {number}, only {self._sent} sent")
                if number == self.outstanding and answer is None:
                    answer = reply
                    self.outstanding = None
        except ClamdError as e:
            raise UnexpectedReply(str(e), answer) from None
        if overlong is not None:
            raise UnexpectedReply(str(overlong), answer)
        return answer
