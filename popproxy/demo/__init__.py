"""The bundled demo POP3 upstream: a sample mailbox and a server factory for it."""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernameHashedPassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail.pop3 import POP3, APOPCredentials, IMailbox
from twisted.python.failure import Failure
from zope.interface import implementer

from popproxy.demo._mailbox import EmlDirectoryMailbox

__all__ = ["defaultMailboxPath", "demoServerFactory"]

log = Logger()


def defaultMailboxPath() -> Path:
    """
    Return the directory of sample messages shipped inside this package.
    """
    resource = importlib.resources.files(__name__).joinpath("mailbox")
    if not isinstance(resource, Path):
        # A zipped install gives a Traversable that is not a directory on disk.
        raise RuntimeError("popproxy.demo must be installed as files to serve its sample mailbox")
    return resource


def demoServerFactory(
    mailbox: Path, user: str, password: str, *, clock: IReactorTime | None = None
) -> ServerFactory:
    """
    Return a factory for POP3 servers that let C{user} log in with
    C{password} (USER/PASS or APOP) and read the C{*.eml} files in
    C{mailbox}, which they never modify.

    C{clock} drives the idle timeout; without one, Twisted's global reactor
    is used when a connection is made.
    """
    if not mailbox.is_dir():
        raise NotADirectoryError(f"demo mailbox {mailbox} is not a directory")
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(user.encode("utf-8"), password.encode("utf-8"))
    portal = Portal(IRealm(_DemoRealm(mailbox)), [ICredentialsChecker(checker)])
    return _DemoServerFactory(portal, clock)


@implementer(IRealm)
class _DemoRealm:
    """
    Gives each login its own view of the demo directory, so one session's
    deletions never show in another.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def requestAvatar(
        self, avatarId: bytes | tuple[()], mind: object, *interfaces: Any
    ) -> tuple[Any, EmlDirectoryMailbox, Callable[[], None]]:
        if IMailbox not in interfaces:
            raise NotImplementedError("the demo realm only serves POP3 mailboxes")
        return IMailbox, EmlDirectoryMailbox(self._directory), lambda: None


@implementer(IUsernameHashedPassword)
class _APOPCredentials(APOPCredentials):
    """
    APOP credentials that can succeed: Twisted's compare the C{str} hex digest
    they compute with the C{bytes} digest the client sent, so APOP always
    fails there.
    """

    def checkPassword(self, password: bytes) -> bool:
        expected = hashlib.md5(self.magic + password).hexdigest().encode("ascii")
        return hmac.compare_digest(expected, self.digest)


class _WireEncoder:
    """
    Turns a message with LF line endings, fed in chunks of any size, into the
    CRLF lines RFC 1939 sends, with a dot added in front of every line that
    starts with a dot.

    Twisted's C{POP3.transformChunk} does the same per chunk without memory,
    so a line starting a chunk (the first line, or one after a chunk that
    ended with LF) escapes stuffing: a lone "." there ends the message early.
    """

    def __init__(self) -> None:
        self._atLineStart = True

    def feed(self, chunk: bytes) -> bytes:
        data = chunk.replace(b"\n", b"\r\n")
        if self._atLineStart and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        if data:
            self._atLineStart = data.endswith(b"\n")
        return data


class _DemoPOP3Server(POP3):
    """
    Twisted's POP3 server, corrected where it departs from RFC 1939/2449:
    honest CAPA, a 10-minute idle timeout, deleted messages left out of
    STAT/LIST/UIDL, dot-stuffing across chunk boundaries, working APOP, and
    bad or unknown commands answered with -ERR even when pipelined.
    """

    # RFC 1939 section 3: the autologout timer must be at least 10 minutes.
    timeOut = 600

    # POP3 declares these as plain None at class level, which mypy reads as
    # their only type. mbox is an IMailbox provider, portal a Portal, factory
    # a _DemoServerFactory, blocked a list of (command, args) or None.
    mbox: Any = None
    portal: Any = None
    factory: Any = None
    blocked: Any = None

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self._encoder = _WireEncoder()

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        # Calls on a zope Interface type confuse mypy without mypy-zope.
        clock: Any = super() if self._clock is None else self._clock
        result: IDelayedCall = clock.callLater(period, func)
        return result

    def listCapabilities(self) -> list[bytes]:
        # PIPELINING is true: commands that arrive while a response is being
        # produced wait in self.blocked and run in order (see processCommand).
        return [
            b"TOP",
            b"UIDL",
            b"USER",
            b"RESP-CODES",
            b"PIPELINING",
            b"IMPLEMENTATION popproxy-demo",
        ]

    def authenticateUserAPOP(self, user: bytes, digest: bytes) -> Deferred[Any]:
        if self.portal is None:
            raise UnauthorizedLogin()
        assert self.magic is not None
        credentials = IUsernameHashedPassword(_APOPCredentials(self.magic, user, digest))
        result: Deferred[Any] = self.portal.login(credentials, None, IMailbox)
        return result

    def processCommand(self, command: bytes, *args: bytes) -> object:
        # Twisted raises for unknown or malformed commands and answers in
        # state_COMMAND; but commands replayed from self.blocked after a
        # pipelined long operation are run from a Deferred callback, where the
        # exception drops the rest of the pipeline and the client hangs. So
        # every problem is answered here, and nothing propagates.
        if getattr(self.transport, "disconnecting", False):
            # Twisted replays held commands even after a pipelined QUIT.
            return None
        if self.blocked is not None:
            self.blocked.append((command, args))
            return None
        verb = command.upper()
        handler = getattr(self, "do_" + verb.decode("ascii"), None) if verb.isalpha() else None
        if handler is None:
            self.failResponse(b"unknown command")
            return None
        if self.mbox is None and verb not in self.AUTH_CMDS:
            self.failResponse(b"log in first")
            return None
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            self.failResponse(b"wrong number of arguments")
            return None
        try:
            return handler(*args)
        except Exception:
            log.failure("demo POP3 server failed on {verb}", verb=verb.decode("ascii"))
            self.failResponse(b"internal server error")
            return None

    def _messageIndex(self, argument: bytes) -> int | None:
        """
        Return the 0-based index a message-number argument names, or L{None}
        if it is not a positive decimal number.
        """
        if not argument.isdigit() or int(argument) < 1:
            return None
        return int(argument) - 1

    def _reportFailure(self, failure: Failure) -> None:
        if failure.check(ValueError, IndexError):
            self.failResponse(b"no such message")
        else:
            log.failure("demo POP3 server failed", failure)
            self.failResponse(b"internal server error")

    def _answer(self, d: Deferred[Any], respond: Callable[[Any], None]) -> Deferred[None]:
        # _longOperation (Twisted's) holds later pipelined commands in
        # self.blocked until the mailbox's answer has been written.
        d.addCallback(respond)
        d.addErrback(self._reportFailure)
        result: Deferred[None] = self._longOperation(d)
        return result

    def do_STAT(self) -> Deferred[None]:
        def respond(sizes: list[int]) -> None:
            present = [size for size in sizes if size]
            self.successResponse(b"%d %d" % (len(present), sum(present)))

        return self._answer(maybeDeferred(self.mbox.listMessages), respond)

    def do_LIST(self, i: bytes | None = None) -> Deferred[None] | None:
        if i is None:

            def respondAll(sizes: list[int]) -> None:
                present = [(n, size) for n, size in enumerate(sizes, 1) if size]
                total = sum(size for _, size in present)
                self.successResponse(b"%d messages (%d octets)" % (len(present), total))
                for entry in present:
                    self.sendLine(b"%d %d" % entry)
                self.sendLine(b".")

            return self._answer(maybeDeferred(self.mbox.listMessages), respondAll)

        index = self._messageIndex(i)
        if index is None:
            self.failResponse(b"no such message")
            return None

        def respondOne(size: int) -> None:
            if size:
                self.successResponse(b"%d %d" % (index + 1, size))
            else:
                self.failResponse(b"no such message")

        return self._answer(maybeDeferred(self.mbox.listMessages, index), respondOne)

    def do_UIDL(self, i: bytes | None = None) -> Deferred[None] | None:
        if i is None:

            def respondAll(sizes: list[int]) -> None:
                self.successResponse(b"unique-id listing follows")
                for n, size in enumerate(sizes):
                    if size:
                        self.sendLine(b"%d %b" % (n + 1, self.mbox.getUidl(n)))
                self.sendLine(b".")

            return self._answer(maybeDeferred(self.mbox.listMessages), respondAll)

        index = self._messageIndex(i)
        if index is None:
            self.failResponse(b"no such message")
            return None

        def respondOne(size: int) -> None:
            if size:
                self.successResponse(b"%d %b" % (index + 1, self.mbox.getUidl(index)))
            else:
                self.failResponse(b"no such message")

        return self._answer(maybeDeferred(self.mbox.listMessages, index), respondOne)

    def do_DELE(self, i: bytes) -> None:
        index = self._messageIndex(i)
        try:
            if index is None:
                raise ValueError("not a message number")
            self.mbox.deleteMessage(index)
        except (ValueError, IndexError):
            self.failResponse(b"no such message")
        else:
            self.successResponse(b"message %d deleted" % (index + 1,))

    def do_RPOP(self, user: bytes) -> None:
        self.failResponse(b"RPOP is not supported")

    def do_RETR(self, i: bytes) -> Deferred[None] | None:
        # Commands are held back until the transfer ends, so one encoder per
        # transfer is safe.
        self._encoder = _WireEncoder()
        result: Deferred[None] | None = super().do_RETR(i)
        return result

    def do_TOP(self, i: bytes, size: bytes) -> Deferred[None] | None:
        self._encoder = _WireEncoder()
        result: Deferred[None] | None = super().do_TOP(i, size)
        return result

    def transformChunk(self, chunk: bytes) -> bytes:
        return self._encoder.feed(chunk)


class _DemoServerFactory(ServerFactory):
    """
    Builds L{_DemoPOP3Server}s that log in through one portal.
    """

    noisy = False

    def __init__(self, portal: Portal, clock: IReactorTime | None) -> None:
        self.portal = portal
        self._clock = clock

    def buildProtocol(self, addr: IAddress | None) -> Any:
        protocol = _DemoPOP3Server(self._clock)
        protocol.factory = self
        protocol.portal = self.portal
        return protocol
