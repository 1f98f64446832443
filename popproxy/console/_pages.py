"""
The console's pages, as twisted.web resources: sign-in and sign-out, a
user's list of items, an item's page, its download and its release
request, and the static style sheet.

Every response carries a strict Content-Security-Policy (nothing but the
console's own files; no inline script or style), C{nosniff}, no framing
and no caching.  Every POST must carry its form token (L{_csrf}) or is
refused with 403 before anything else is looked at.  Every item request
checks that the item is the signed-in user's (L{_access}); any other id,
whether it exists or not, is 404.  Downloads are always attachments of
type C{application/octet-stream}: an attachment's content (its transfer
encoding undone), or a whole message as kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy._releases import IReleaseRequests, Release
from popproxy.console._access import ItemAccess, Offer
from popproxy.console._adminsignin import AdminSignInCheck
from popproxy.console._csrf import FIELD, SignInTokens, sameToken
from popproxy.console._current import CurrentSettings
from popproxy.console._sessions import ConsoleSession, SessionStore, newToken
from popproxy.console._signin import SignIn, SignInCheck
from popproxy.console._templates import HERE, Templates
from popproxy.console._view import Download, IQuarantineView, Item

log = PrintableLogger(namespace="popproxy.console")

#: Headers on every response.
SECURITY_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-store",
}

#: The static files, by name, with their type.
STATIC = {
    b"console.css": b"text/css; charset=utf-8",
    b"favicon.svg": b"image/svg+xml",
    b"console.js": b"text/javascript; charset=utf-8",
}

#: The longest login and password a sign-in form may send.
MAX_LOGIN = 256
MAX_PASSWORD = 1024

SIGN_IN_ANSWERS = {
    SignIn.FAILED: (401, "Wrong login or password."),
    SignIn.BLOCKED: (429, "Too many failed sign-ins from your address; try again later."),
    SignIn.UNAVAILABLE: (503, "The mail server cannot be reached now; try again later."),
}


def cookieName(base: str, request: Request) -> bytes:
    """
    The cookie's name: with the C{__Host-} prefix over TLS (browsers then
    refuse it unless Secure, host-only and for the whole site).
    """
    return (f"__Host-{base}" if request.isSecure() else base).encode("ascii")


def setCookie(request: Request, base: str, value: str, maxAge: int | None = None) -> None:
    """
    Set a cookie scripts cannot read, that no other site's request
    carries, and that only TLS carries when the console is served over it.
    """
    request.addCookie(
        cookieName(base, request),
        value.encode("ascii"),
        path=b"/",
        max_age=None if maxAge is None else str(maxAge).encode("ascii"),
        secure=request.isSecure(),
        httpOnly=True,
        sameSite="strict",
    )


def attachmentName(name: str | None, identifier: str) -> bytes:
    """
    The Content-Disposition of a download of C{name}: always an
    attachment, with an ASCII name (quotes, backslashes, separators and
    controls replaced) and the UTF-8 name beside it (RFC 6266).
    """
    name = (name or "").replace("/", "_").replace("\\", "_")
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    if not name:
        name = f"item-{identifier}.bin"
    name = name[:200]
    ascii = re.sub(r"[^A-Za-z0-9 !#$&+,.;=@^_`{}~()\[\]-]", "_", name)
    utf8 = quote(name, safe="")
    return f"attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}".encode("ascii")


def downloadAnswer(request: Request, download: Download, identifier: str) -> bytes:
    """
    Answer C{request} with C{download}'s octets as a file to save: never
    shown inline, never sniffed or run as a page (the one place the
    user's and the administrators' downloads get their headers).
    """
    request.setHeader(b"Content-Type", b"application/octet-stream")
    request.setHeader(b"Content-Disposition", attachmentName(download.filename, identifier))
    request.setHeader(b"Content-Security-Policy", b"default-src 'none'; sandbox")
    return download.content


def textArgument(request: Request, name: bytes, limit: int) -> str | None:
    """
    The first value of form field C{name} as text; C{None} if missing,
    not UTF-8, or longer than C{limit} characters.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name)
    if not values:
        return None
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= limit else None


def pageNumber(request: Request) -> int:
    """
    The page a list is asked for (C{?page=N}, N from 1); anything else,
    such as digits outside ASCII (C{"²".isdigit()} is true but C{int()}
    refuses it), is page 1.
    """
    text = textArgument(request, b"page", 9) or "1"
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else 1


def formToken(request: Request) -> bytes | None:
    """
    The form token a POST carried (C{None}: none).
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(FIELD)
    return values[0] if values else None


@dataclass(frozen=True)
class Console:
    """
    What the pages work with.

    @ivar current: the settings in force (a reload replaces them); the
        pages read the sign-in checks and the access policy through them,
        at each request.
    @ivar runInThread: where blocking calls (the release store) run.
    """

    sessions: SessionStore
    signInTokens: SignInTokens
    current: CurrentSettings
    view: IQuarantineView
    releases: IReleaseRequests
    templates: Templates
    runInThread: Callable[[Callable[[], Any]], Deferred[Any]]
    pageSize: int = 25

    @property
    def signIn(self) -> SignInCheck:
        """
        The mail logins' check in force.
        """
        return self.current.settings.signIn

    @property
    def adminSignIn(self) -> AdminSignInCheck:
        """
        The administrators' check in force.
        """
        return self.current.settings.adminSignIn

    @property
    def access(self) -> ItemAccess:
        """
        Who may download what, in force.
        """
        return self.current.settings.access

    def session(self, request: Request) -> ConsoleSession | None:
        cookie = request.getCookie(cookieName("popproxy_session", request))
        return self.sessions.find(cookie.decode("ascii", "replace") if cookie else None)

    def page(self, request: Request, code: int, name: str, **values: Any) -> bytes:
        request.setResponseCode(code, b"Too Many Requests" if code == 429 else None)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        values.setdefault("session", None)
        return self.templates.render(name, **values)

    def error(
        self, request: Request, code: int, message: str, session: ConsoleSession | None = None
    ) -> bytes:
        titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed"}
        title = titles.get(code, "Error")
        return self.page(request, code, "error.html", title=title, message=message, session=session)


def homeOf(session: ConsoleSession | None) -> str:
    """
    Where a browser goes to start: the sign-in form without a session, an
    administrator's overview, a user's items.
    """
    if session is None:
        return "/signin"
    return "/admin" if session.admin else "/"


def redirect(request: Request, path: str) -> bytes:
    request.setResponseCode(303)
    request.setHeader(b"Location", path.encode("ascii"))
    return b""


class _Answer:
    """
    Writes what a page's work came to, unless the browser has gone.
    """

    def __init__(self, request: Request) -> None:
        self._request = request

    def written(self, body: bytes) -> None:
        if not self._request._disconnected:
            self._request.write(body)
            self._request.finish()

    def failed(self, failure: Failure) -> None:
        request = self._request
        log.failure(
            "console: {method} {path} failed", failure, method=request.method, path=request.path
        )
        if not request._disconnected:
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"The console failed to answer; the error is in the proxy's log.\n")
            request.finish()


def respond(request: Request, work: Coroutine[Any, Any, bytes]) -> Any:
    """
    Answer C{request} with what C{work} comes to, once it has; an error is
    logged and answered with 500.
    """
    answer = _Answer(request)
    ensureDeferred(work).addCallbacks(answer.written, answer.failed)
    return NOT_DONE_YET


class ConsoleResource(Resource):
    """
    A page of the console.
    """

    isLeaf = True

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console


class SignInPage(ConsoleResource):
    """
    C{/signin}: the form (GET) and the check of a mail login (POST).
    """

    def render_GET(self, request: Request) -> bytes:
        session = self.console.session(request)
        if session is not None:
            return redirect(request, homeOf(session))
        return self._form(request, 200, "", "")

    def _form(self, request: Request, code: int, login: str, error: str) -> bytes:
        cookie = newToken()
        setCookie(request, "popproxy_signin", cookie, maxAge=3600)
        csrf = self.console.signInTokens.token(cookie)
        return self.console.page(
            request, code, "signin.html", title="Sign in", csrf=csrf, login=login, error=error
        )

    def render_POST(self, request: Request) -> Any:
        cookie = request.getCookie(cookieName("popproxy_signin", request))
        given = formToken(request)
        text = cookie.decode("ascii", "replace") if cookie else None
        if not self.console.signInTokens.check(text, given):
            return self.console.error(request, 403, "The form expired; load the page again.")
        return respond(request, self._signIn(request))

    async def _signIn(self, request: Request) -> bytes:
        login = textArgument(request, b"login", MAX_LOGIN)
        password = textArgument(request, b"password", MAX_PASSWORD)
        if not login or not password:
            return self._form(request, 400, login or "", "Give your mail login and password.")
        origin = ClientOrigin.of(request.getClientAddress(), request.getHost())
        outcome = await self.console.signIn.check(login, password, origin)
        if outcome is not SignIn.OK:
            code, message = SIGN_IN_ANSWERS[outcome]
            return self._form(request, code, login, message)
        address = origin.source.host if origin.source is not None else ""
        session = self.console.sessions.open(login, address)
        setCookie(request, "popproxy_session", session.id)
        setCookie(request, "popproxy_signin", "", maxAge=0)
        return redirect(request, "/")


class SignOutPage(ConsoleResource):
    """
    C{/signout} (POST): the session ends.
    """

    def render_POST(self, request: Request) -> bytes:
        session = self.console.session(request)
        if session is None:
            return redirect(request, "/signin")
        if not sameToken(session.csrf, formToken(request)):
            return self.console.error(request, 403, "The form expired; load the page again.")
        self.console.sessions.close(session.id)
        setCookie(request, "popproxy_session", "", maxAge=0)
        return redirect(request, "/admin/signin" if session.admin else "/signin")


class ItemsPage(ConsoleResource):
    """
    C{/}: the signed-in user's items, newest first, searched (C{q}) and
    paged (C{page}).
    """

    def render_GET(self, request: Request) -> Any:
        session = self.console.session(request)
        if session is None or session.admin:
            return redirect(request, homeOf(session))
        return respond(request, self._list(request, session))

    async def _list(self, request: Request, session: ConsoleSession) -> bytes:
        console = self.console
        search = textArgument(request, b"q", 200) or ""
        size = console.pageSize
        offset = (pageNumber(request) - 1) * size
        page = await console.view.userItems(session.user, search, offset, size)
        offers = await console.runInThread(lambda: offersOf(console, page.items))
        number = page.offset // size + 1
        previous = _pageQuery(search, number - 1) if number > 1 else None
        following = _pageQuery(search, number + 1) if page.offset + size < page.total else None
        return console.page(
            request,
            200,
            "items.html",
            title="Your quarantined items",
            session=session,
            page=page,
            offers=offers,
            search=search,
            previous=previous,
            next=following,
        )


def _pageQuery(search: str, number: int) -> str:
    values = {"q": search} if search else {}
    values["page"] = str(number)
    return urlencode(values)


def offersOf(console: Console, items: tuple[Item, ...]) -> dict[str, str]:
    """
    What the user may do with each item (blocking: reads the release store
    once for them all).
    """
    releases = console.releases.statuses([item.record.id for item in items])
    return {
        item.record.id: offerOf(console.access, item, releases.get(item.record.id)).value
        for item in items
    }


def offerOf(access: ItemAccess, item: Item, release: Release | None) -> Offer:
    """
    What C{item}'s user may do with it, in its release state C{release}.
    """
    if release is None:
        return access.offer(item.record, False, False)
    return access.offer(item.record, release.released, True, release.rejected)


class ItemPages(ConsoleResource):
    """
    C{/item/ID} (its page), C{/item/ID/download} and C{/item/ID/release}
    (POST); only the signed-in user's items, any other id is 404.
    """

    def render_GET(self, request: Request) -> Any:
        session = self.console.session(request)
        if session is None or session.admin:
            return redirect(request, homeOf(session))
        target = self._target(request)
        if target is None or target[1] not in ("", "download"):
            return self.console.error(request, 404, "There is no such item.", session)
        return respond(request, self._show(request, session, *target))

    def render_POST(self, request: Request) -> Any:
        session = self.console.session(request)
        if session is None or session.admin:
            return self.console.error(request, 403, "Sign in first.", session)
        if not sameToken(session.csrf, formToken(request)):
            return self.console.error(request, 403, "The form expired; load the page again.")
        target = self._target(request)
        if target is None or target[1] != "release":
            return self.console.error(request, 404, "There is no such item.", session)
        return respond(request, self._release(request, session, target[0]))

    @staticmethod
    def _target(request: Request) -> tuple[str, str] | None:
        """
        The item id and the action (C{""}: its page) the path names.
        """
        path = request.postpath or []
        if not 1 <= len(path) <= 2 or not path[0]:
            return None
        try:
            parts = [segment.decode("ascii") for segment in path]
        except UnicodeDecodeError:
            return None
        return parts[0], parts[1] if len(parts) == 2 else ""

    async def _owned(self, session: ConsoleSession, identifier: str) -> Item | None:
        """
        The item C{identifier} if it is the signed-in user's.
        """
        item = await self.console.view.item(identifier)
        if item is None or not self.console.access.visible(item.record, session.user):
            return None
        return item

    async def _offer(self, item: Item) -> Offer:
        release = await self.console.runInThread(
            lambda: self.console.releases.status(item.record.id)
        )
        return offerOf(self.console.access, item, release)

    async def _show(
        self, request: Request, session: ConsoleSession, identifier: str, action: str
    ) -> bytes:
        console = self.console
        item = await self._owned(session, identifier)
        if item is None:
            return console.error(request, 404, "There is no such item.", session)
        offer = await self._offer(item)
        if action == "":
            title = item.filename or "Quarantined item"
            return console.page(
                request,
                200,
                "item.html",
                title=title,
                session=session,
                item=item,
                offer=offer.value,
                notice="",
            )
        if offer is not Offer.DOWNLOAD:
            return console.error(
                request, 403, "This item needs an administrator's release first.", session
            )
        download = await console.view.download(item)
        log.info(
            "console download: {user} got {item} ({filename})",
            user=session.user,
            item=identifier,
            filename=item.filename or "",
        )
        return downloadAnswer(request, download, identifier)

    async def _release(self, request: Request, session: ConsoleSession, identifier: str) -> bytes:
        console = self.console
        item = await self._owned(session, identifier)
        if item is None:
            return console.error(request, 404, "There is no such item.", session)
        if await self._offer(item) is Offer.REQUEST_RELEASE:
            await console.runInThread(lambda: console.releases.request(identifier, session.user))
            log.info(
                "console release requested: {user} asks for {item}",
                user=session.user,
                item=identifier,
            )
        return redirect(request, "/item/" + quote(identifier, safe=""))


class StaticFiles(ConsoleResource):
    """
    C{/static/NAME}: the style sheet (read once).
    """

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._files = {name: (HERE / "static" / name.decode()).read_bytes() for name in STATIC}

    def render_GET(self, request: Request) -> bytes:
        path = request.postpath or []
        if len(path) != 1 or path[0] not in self._files:
            return self.console.error(request, 404, "There is no such file.")
        request.setHeader(b"Content-Type", STATIC[path[0]])
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return self._files[path[0]]


class ConsoleRoot(Resource):
    """
    The console's paths.
    """

    def __init__(self, console: Console, more: Mapping[bytes, Resource] | None = None) -> None:
        super().__init__()
        self.console = console
        self._pages: dict[bytes, Resource] = {
            b"": ItemsPage(console),
            b"signin": SignInPage(console),
            b"signout": SignOutPage(console),
            b"item": ItemPages(console),
            b"static": StaticFiles(console),
            **(more or {}),
        }
        self._missing = _Missing(console)

    def getChild(self, path: bytes, request: Any) -> Resource:
        page = self._pages.get(path)
        if page is None or (path == b"" and request.postpath):
            return self._missing
        return page


class _Missing(ConsoleResource):
    def render(self, request: Request) -> bytes:
        return self.console.error(request, 404, "There is no such page.")


class ConsoleSite(Site):
    """
    The console's site: every response gets L{SECURITY_HEADERS}, and
    requests are not logged one line each (sign-ins, downloads and
    release requests are, by the pages).
    """

    noisy = False

    def __init__(self, console: Console, more: Mapping[bytes, Resource] | None = None) -> None:
        """
        @param more: further pages by their first path segment (the
            administrators' pages, under C{admin}).
        """
        super().__init__(ConsoleRoot(console, more))

    def getResourceFor(self, request: Request) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        pass
