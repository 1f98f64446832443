"""
The administrators' sign-in check: a name and password are right when the
name is in C{[console] admins} and the password matches its scrypt hash.
Checked here only: an administrator's password never goes upstream, and a
mail password is never tried against the hashes (the two forms are apart).

Every attempt goes through the proxy's L{LoginThrottle} as a POP3 login
and a user's sign-in do (the same counters, waits and blocks, and the same
C{login failure:} line for fail2ban).  The hash is computed where
C{runInThread} puts it (scrypt takes tens of milliseconds), and for a name
that is not an administrator's too, against a hash of nothing, so the
answer's time does not tell which names exist.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Collection, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from popproxy._loginthrottle import LoginThrottle
from popproxy._printable import PrintableLogger
from popproxy.console._passwordhash import PasswordHash, hashPassword, parseHash
from popproxy.console._signin import SignIn

log = PrintableLogger(namespace="popproxy.console")


class AdminSignInCheck:
    """
    Checks administrators' names and passwords.

    @param admins: (name, hash line) pairs, as the configuration has them.
    @param failureDelay: seconds a failed attempt waits when there is no
        throttle.
    """

    def __init__(
        self,
        admins: Iterable[tuple[str, str]],
        clock: IReactorTime,
        throttle: LoginThrottle | None,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
        failureDelay: float = 1.0,
    ) -> None:
        self._hashes = {name: parseHash(line) for name, line in admins}
        self._clock = clock
        self._throttle = throttle
        self._runInThread = runInThread
        self._failureDelay = failureDelay
        first = next(iter(self._hashes.values()), None)
        self._decoy: PasswordHash | None = None
        if first is not None:
            self._decoy = hashPassword(secrets.token_urlsafe(16), first.n, first.r, first.p)

    def restrictedTo(self, names: Collection[str]) -> AdminSignInCheck:
        """
        The same check for only the administrators in C{names} (the others
        can no longer sign in).
        """
        kept = copy.copy(self)
        kept._hashes = {name: h for name, h in self._hashes.items() if name in names}
        return kept

    @property
    def enabled(self) -> bool:
        """
        Whether any administrator can sign in.
        """
        return bool(self._hashes)

    def matches(self, name: str, password: str) -> bool:
        """
        Whether C{password} is administrator C{name}'s (blocking: hashes).
        """
        known = self._hashes.get(name)
        target = known or self._decoy
        return target is not None and target.matches(password) and known is not None

    def check(self, name: str, password: str, address: str) -> Deferred[SignIn]:
        """
        Whether C{name} and C{password}, from a browser at C{address}, are
        an administrator's.
        """
        return Deferred.fromCoroutine(self._check(name, password, address))

    async def _check(self, name: str, password: str, address: str) -> SignIn:
        throttle = self._throttle
        if throttle is not None:
            if await throttle.blocked(address):
                return SignIn.BLOCKED
            admission = await throttle.admit(address, name)
            if admission.refused:
                return SignIn.BLOCKED
            if admission.wait > 0:
                await deferLater(self._clock, admission.wait)
        right = await self._runInThread(lambda: self.matches(name, password))
        if right:
            log.info(
                "console administrator sign-in: {admin} from {client}", admin=name, client=address
            )
            if throttle is not None:
                await throttle.succeeded(address, name)
            return SignIn.OK
        log.info(
            "console administrator sign-in failed for {admin} from {client}",
            admin=name,
            client=address,
        )
        if throttle is not None:
            await throttle.failed(address, name)
        elif self._failureDelay > 0:
            await deferLater(self._clock, self._failureDelay)
        return SignIn.FAILED
