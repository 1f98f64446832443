"""
The administrators' pages, under C{/admin}: their own sign-in form
(names and password hashes from C{[console] admins}, never a mail login),
the overview (release queue, filter charts, health, recent limit blocks),
every user's items (filtered by user, searched, paged), any item's page
and download, and Approve / Reject of a release (POST with the session's
form token).  C{/admin/live/PANEL} answers the overview's script with one
panel as JSON (C{{"html": …}}, drawn by the same escaped templates), so
the page refreshes itself without a full reload.

Only an administrator's session passes: without a session the pages
redirect to the administrators' sign-in (JSON answers 401), a user's
session gets 403.  Every POST is checked for its form token before
anything else, as on the user's pages.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from twisted.web.server import Request

from popproxy._printable import PrintableLogger
from popproxy._proxyheaderbuild import ClientOrigin
from popproxy.console._adminpanels import PANELS, AdminConsole, panelValues
from popproxy.console._csrf import sameToken
from popproxy.console._pages import (
    MAX_LOGIN,
    MAX_PASSWORD,
    SIGN_IN_ANSWERS,
    Console,
    ConsoleResource,
    cookieName,
    downloadAnswer,
    formToken,
    homeOf,
    pageNumber,
    redirect,
    respond,
    setCookie,
    textArgument,
)
from popproxy.console._sessions import ConsoleSession, newToken
from popproxy.console._signin import SignIn

log = PrintableLogger(namespace="popproxy.console")

FORM_EXPIRED = "The form expired; load the page again."


class AdminPages(ConsoleResource):
    """
    Everything under C{/admin}.
    """

    def __init__(self, console: Console, admin: AdminConsole) -> None:
        super().__init__(console)
        self.admin = admin

    def _path(self, request: Request) -> list[str] | None:
        try:
            path = [segment.decode("ascii") for segment in request.postpath or []]
        except UnicodeDecodeError:
            return None
        return path[:-1] if path and path[-1] == "" and len(path) > 1 else path

    def render_GET(self, request: Request) -> Any:
        path = self._path(request)
        session = self.console.session(request)
        if path == ["signin"]:
            if session is not None:
                return redirect(request, homeOf(session))
            return self._form(request, 200, "", "")
        if path is not None and path[:1] == ["live"]:
            return self._live(request, session, path[1:])
        refused = self._refused(request, session)
        if refused is not None:
            return refused
        assert session is not None
        if path in ([], [""]):
            return respond(request, self._overview(request, session))
        if path == ["items"]:
            return respond(request, self._items(request, session))
        if path is not None and len(path) in (2, 3) and path[0] == "item":
            action = path[2] if len(path) == 3 else ""
            if action in ("", "download"):
                return respond(request, self._item(request, session, path[1], action))
        return self.console.error(request, 404, "There is no such page.", session)

    def render_POST(self, request: Request) -> Any:
        path = self._path(request)
        if path == ["signin"]:
            return self._signInPosted(request)
        session = self.console.session(request)
        if session is None or not sameToken(session.csrf, formToken(request)):
            return self.console.error(request, 403, FORM_EXPIRED)
        if not session.admin:
            return self.console.error(request, 403, "For administrators only.", session)
        if path is not None and len(path) == 3 and path[0] == "item":
            if path[2] in ("approve", "reject"):
                return respond(request, self._decide(request, session, path[1], path[2]))
        return self.console.error(request, 404, "There is no such page.", session)

    def _refused(self, request: Request, session: ConsoleSession | None) -> bytes | None:
        """
        The answer to a browser that is not an administrator's (C{None}:
        it is one).
        """
        if session is None:
            return redirect(request, "/admin/signin")
        if not session.admin:
            return self.console.error(request, 403, "For administrators only.", session)
        return None

    def _form(self, request: Request, code: int, name: str, error: str) -> bytes:
        cookie = newToken()
        setCookie(request, "popproxy_signin", cookie, maxAge=3600)
        return self.console.page(
            request,
            code,
            "admin/signin.html",
            title="Administrator sign-in",
            csrf=self.console.signInTokens.token(cookie),
            login=name,
            error=error,
            enabled=self.console.adminSignIn.enabled,
        )

    def _signInPosted(self, request: Request) -> Any:
        cookie = request.getCookie(cookieName("popproxy_signin", request))
        text = cookie.decode("ascii", "replace") if cookie else None
        if not self.console.signInTokens.check(text, formToken(request)):
            return self.console.error(request, 403, FORM_EXPIRED)
        return respond(request, self._signIn(request))

    async def _signIn(self, request: Request) -> bytes:
        name = textArgument(request, b"login", MAX_LOGIN)
        password = textArgument(request, b"password", MAX_PASSWORD)
        if not name or not password:
            return self._form(request, 400, name or "", "Give your name and password.")
        origin = ClientOrigin.of(request.getClientAddress(), request.getHost())
        address = origin.source.host if origin.source is not None else ""
        line = self.console.current.settings.admins.get(name)
        outcome = await self.console.adminSignIn.check(name, password, address)
        if outcome is SignIn.OK and line != self.console.current.settings.admins.get(name):
            # A reload removed or re-keyed this administrator while their
            # password was being checked: the check no longer counts.
            log.info("console administrator sign-in of {admin} undone by a reload", admin=name)
            outcome = SignIn.FAILED
        if outcome is not SignIn.OK:
            code, message = SIGN_IN_ANSWERS[outcome]
            if outcome is SignIn.FAILED:
                message = "Wrong name or password."
            return self._form(request, code, name, message)
        session = self.console.sessions.open(name, address, admin=True)
        setCookie(request, "popproxy_session", session.id)
        setCookie(request, "popproxy_signin", "", maxAge=0)
        return redirect(request, "/admin")

    async def _overview(self, request: Request, session: ConsoleSession) -> bytes:
        values: dict[str, Any] = {}
        for name in PANELS:
            values.update(await panelValues(name, self.console, self.admin))
        return self.console.page(
            request,
            200,
            "admin/overview.html",
            title="Overview",
            session=session,
            panels=PANELS,
            every=self.admin.refreshSeconds,
            **values,
        )

    def _live(self, request: Request, session: ConsoleSession | None, path: list[str]) -> Any:
        request.setHeader(b"Content-Type", b"application/json")
        if session is None or not session.admin:
            request.setResponseCode(401 if session is None else 403)
            return b'{"error": "sign in as an administrator"}'
        if len(path) != 1 or path[0] not in PANELS:
            request.setResponseCode(404)
            return b'{"error": "no such panel"}'
        return respond(request, self._panel(request, session, path[0]))

    async def _panel(self, request: Request, session: ConsoleSession, name: str) -> bytes:
        values = await panelValues(name, self.console, self.admin)
        html = self.console.templates.render(f"admin/panel-{name}.html", session=session, **values)
        request.setHeader(b"Content-Type", b"application/json")
        answer = {"panel": name, "at": values["now"], "html": html.decode("utf-8")}
        return json.dumps(answer).encode("utf-8")

    async def _items(self, request: Request, session: ConsoleSession) -> bytes:
        console = self.console
        user = textArgument(request, b"user", MAX_LOGIN) or ""
        search = textArgument(request, b"q", 200) or ""
        size = console.pageSize
        page = await console.view.allItems(user, search, (pageNumber(request) - 1) * size, size)
        identifiers = [item.record.id for item in page.items]
        releases = await console.runInThread(lambda: console.releases.statuses(identifiers))
        number = page.offset // size + 1
        query = {key: value for key, value in (("user", user), ("q", search)) if value}
        previous = urlencode({**query, "page": number - 1}) if number > 1 else None
        more = page.offset + size < page.total
        following = urlencode({**query, "page": number + 1}) if more else None
        return console.page(
            request,
            200,
            "admin/items.html",
            title="All quarantined items",
            session=session,
            page=page,
            releases=releases,
            users=await console.view.users(),
            user=user,
            search=search,
            previous=previous,
            next=following,
        )

    async def _item(
        self, request: Request, session: ConsoleSession, identifier: str, action: str
    ) -> bytes:
        console = self.console
        item = await console.view.item(identifier)
        if item is None:
            return console.error(request, 404, "There is no such item.", session)
        if action == "download":
            download = await console.view.download(item)
            log.info(
                "console download: administrator {admin} got {item} of {user} ({filename})",
                admin=session.user,
                item=identifier,
                user=item.record.user,
                filename=item.filename or "",
            )
            return downloadAnswer(request, download, identifier)
        release = await console.runInThread(lambda: console.releases.status(identifier))
        return console.page(
            request,
            200,
            "admin/item.html",
            title=item.filename or "Quarantined item",
            session=session,
            item=item,
            release=release,
            userMay=item.record.plugin in console.access.userDownload,
        )

    async def _decide(
        self, request: Request, session: ConsoleSession, identifier: str, decision: str
    ) -> bytes:
        console = self.console
        item = await console.view.item(identifier)
        if item is None:
            return console.error(request, 404, "There is no such item.", session)
        if decision == "approve":
            decide = console.releases.approve
        else:
            decide = console.releases.reject
        release = await console.runInThread(lambda: decide(identifier, session.user))
        log.info(
            "console release {decision}: {admin} for {item} of {user} ({filename})",
            decision="approved" if release.released else "refused",
            admin=session.user,
            item=identifier,
            user=item.record.user,
            filename=item.filename or "",
        )
        back = textArgument(request, b"back", 20)
        if back == "overview":
            return redirect(request, "/admin#queue")
        return redirect(request, "/admin/item/" + quote(identifier, safe=""))
