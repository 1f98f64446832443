"""
Test support for the console: a scripted upstream for the sign-in check,
a console over a directory quarantine, and a client that speaks HTTP/1.0
to the console's real twisted.web site over an in-memory transport (the
site's own parsing, cookies and headers; no sockets, no reactor), keeping
cookies as a browser does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import directlyProvides

from popproxy._chain import runHere
from popproxy._config import RoutingSettings
from popproxy._framing import StatusLine
from popproxy._health import Health
from popproxy._loginthrottle import LoginThrottle
from popproxy._opensessions import OpenSessions
from popproxy._quarantine import DirectoryQuarantine
from popproxy._releases import DirectoryReleases
from popproxy._routing import Router
from popproxy._upstream import UpstreamError
from popproxy.console._access import ItemAccess
from popproxy.console._adminpanels import AdminConsole, ConsoleActivity
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._csrf import SignInTokens
from popproxy.console._current import ConsoleSettings, CurrentSettings
from popproxy.console._pages import Console, ConsoleSite
from popproxy.console._passwordhash import hashPassword
from popproxy.console._service import consoleSite
from popproxy.console._sessions import SessionStore
from popproxy.console._signin import SignInCheck
from popproxy.console._templates import Templates
from popproxy.console._view import DirectoryView
from popproxy.interfaces import FilterContext, RemovedPart


class ScriptedConnection:
    """
    An upstream connection answering a POP3 login from C{accounts}
    (login: password); C{capa} is its CAPA body, or None for C{-ERR}.
    """

    def __init__(self, accounts: dict[str, str], capa: bytes | None, sent: list[bytes]) -> None:
        self._accounts = accounts
        self._capa = capa
        self._user: str | None = None
        self.sent = sent
        self.onLost: Callable[[Any], None] | None = None
        self.closed = False

    def sendCommand(self, line: bytes, multiLine: bool, handler: Any) -> None:
        self.sent.append(line)
        verb, _, argument = line.partition(b" ")
        if verb == b"CAPA":
            if self._capa is None:
                return self._answer(handler, b"-ERR no")
            handler.statusReceived(StatusLine(b"+OK"))
            handler.bodyReceived(self._capa + b".\r\n")
            return handler.responseFinished()
        if verb == b"USER":
            self._user = argument.decode()
            return self._answer(handler, b"+OK")
        if verb == b"PASS":
            right = self._user in self._accounts and self._accounts[self._user] == argument.decode()
            return self._answer(handler, b"+OK logged in" if right else b"-ERR [AUTH] wrong")
        return self._answer(handler, b"-ERR unknown")

    @staticmethod
    def _answer(handler: Any, line: bytes) -> None:
        handler.statusReceived(StatusLine(line))
        handler.responseFinished()

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedUpstream:
    """
    Where the sign-in check connects: scripted connections (or a failure).
    """

    accounts: dict[str, str]
    capa: bytes | None = None
    unreachable: bool = False
    sent: list[bytes] = field(default_factory=list)
    connections: list[ScriptedConnection] = field(default_factory=list)
    origins: list[Any] = field(default_factory=list)

    def connect(self, target: Any, origin: Any) -> Deferred[Any]:
        self.origins.append(origin)
        if self.unreachable:
            return fail(UpstreamError("the mail server refused the connection"))
        connection = ScriptedConnection(self.accounts, self.capa, self.sent)
        self.connections.append(connection)
        return succeed(connection)


ROUTER = Router(RoutingSettings("tcp:127.0.0.1:110"))


#: Administrators of the tests' consoles: name -> password.
ADMINS = {"root": "root-password"}


def adminHashes(admins: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """
    Hash lines of C{admins}' passwords (cheap parameters: tests check
    behaviour, not cost).
    """
    return tuple((name, hashPassword(pw, n=16, r=1, p=1).line()) for name, pw in admins.items())


def makeSettings(
    upstream: ScriptedUpstream,
    clock: Clock,
    throttle: LoginThrottle | None = None,
    userDownload: tuple[str, ...] = ("strip",),
    admins: tuple[tuple[str, str], ...] | None = None,
    sessionTimeout: float = 1800.0,
) -> ConsoleSettings:
    """
    Console settings checking mail logins against C{upstream} and
    administrators against C{admins} (hash lines; L{ADMINS}' by default),
    everything synchronous.
    """
    hashes = adminHashes(ADMINS) if admins is None else admins
    return ConsoleSettings(
        signIn=SignInCheck(ROUTER, upstream.connect, clock, throttle, 0.0),
        adminSignIn=AdminSignInCheck(hashes, clock, throttle, runHere, 0.0),
        access=ItemAccess(userDownload),
        sessionTimeout=sessionTimeout,
        admins=dict(hashes),
    )


def makeConsole(
    directory: Path,
    upstream: ScriptedUpstream,
    clock: Clock | None = None,
    throttle: LoginThrottle | None = None,
    userDownload: tuple[str, ...] = ("strip",),
    pageSize: int = 25,
    admins: tuple[tuple[str, str], ...] | None = None,
) -> Console:
    """
    A console over the quarantine in C{directory}, everything synchronous.
    """
    clock = clock or Clock()
    quarantine = DirectoryQuarantine(directory)
    sessions = SessionStore(clock, 1800.0)
    settings = makeSettings(upstream, clock, throttle, userDownload, admins)
    return Console(
        sessions=sessions,
        signInTokens=SignInTokens(b"k" * 32),
        current=CurrentSettings(settings, sessions),
        view=DirectoryView(quarantine, runHere),
        releases=DirectoryReleases(directory, clock=clock.seconds),
        templates=Templates(),
        runInThread=runHere,
        pageSize=pageSize,
    )


def makeAdmin(
    clock: Clock,
    health: Health | None = None,
    activity: ConsoleActivity | None = None,
    sessions: OpenSessions | None = None,
) -> AdminConsole:
    """
    The administrators' side of a test console (their accounts are in the
    console's settings, L{makeSettings}).
    """
    return AdminConsole(clock, health, activity, sessions)


def quarantined(
    directory: Path,
    user: str,
    filename: str,
    content: bytes,
    plugin: str = "strip",
    subject: str = "Invoice",
    uidl: str = "u1",
    reason: str = "blocked extension .exe",
) -> str:
    """
    Keep one attachment of a message to C{user} in the quarantine at
    C{directory}; its id.
    """
    part = (
        f'Content-Type: application/octet-stream; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'
    ).encode() + content
    message = (
        f"From: Sender <sender@example.com>\r\nSubject: {subject}\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
    ).encode() + part
    context = FilterContext("RETR", 1, user, "127.0.0.1:1", "tcp:u:110", "s1", uidl=uidl)
    results: list[Any] = []
    DirectoryQuarantine(directory).storeParts(
        message, [RemovedPart(part, (0,), reason)], context, plugin
    ).addBoth(results.append)
    return str(results[0][0])


@dataclass
class Response:
    code: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def formToken(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found is not None, self.text
        return found.group(1)


class ConsoleClient:
    """
    A browser-like client of a console site: keeps cookies (with their
    attributes, to check), speaks HTTP/1.0 over an in-memory transport.
    """

    def __init__(
        self,
        console: Console,
        secure: bool = False,
        peer: str = "192.0.2.7",
        admin: AdminConsole | None = None,
    ) -> None:
        self.site: ConsoleSite = consoleSite(console, admin)
        self.secure = secure
        self.peer = peer
        self.cookies: dict[str, str] = {}
        self.setCookies: list[str] = []

    def get(self, path: str) -> Response:
        return self.send(b"GET", path)

    def post(self, path: str, fields: dict[str, str]) -> Response:
        body = urlencode(fields).encode()
        return self.send(
            b"POST", path, body, {b"Content-Type": b"application/x-www-form-urlencoded"}
        )

    def send(
        self, method: bytes, path: str, body: bytes = b"", headers: dict[bytes, bytes] | None = None
    ) -> Response:
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8110),
            peerAddress=IPv4Address("TCP", self.peer, 50000),
        )
        if self.secure:
            directlyProvides(transport, ISSLTransport)
            transport.setTcpNoDelay = lambda enabled: None  # type: ignore[attr-defined]
        channel = self.site.buildProtocol(transport.getPeer())
        assert channel is not None
        channel.callLater = Clock().callLater
        channel.makeConnection(transport)
        lines = [method + b" " + path.encode() + b" HTTP/1.0", b"Host: console.example"]
        if self.cookies:
            lines.append(
                b"Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()
            )
        for name, value in (headers or {}).items():
            lines.append(name + b": " + value)
        lines.append(b"Content-Length: " + str(len(body)).encode())
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return self._parsed(transport.value())

    def _parsed(self, raw: bytes) -> Response:
        head, _, body = raw.partition(b"\r\n\r\n")
        status, *fields = head.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in fields:
            name, _, value = line.partition(": ")
            headers.setdefault(name.lower(), []).append(value)
        for cookie in headers.get("set-cookie", []):
            self.setCookies.append(cookie)
            pair = cookie.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if "max-age=0" in cookie.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Response(int(status.split()[1]), headers, body)

    def signIn(self, login: str, password: str, form: str = "/signin") -> Response:
        page = self.get(form)
        return self.post(form, {"csrf": page.formToken(), "login": login, "password": password})

    def adminSignIn(self, name: str = "root", password: str = "root-password") -> Response:
        return self.signIn(name, password, "/admin/signin")
