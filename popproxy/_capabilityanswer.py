"""
A session's answer to CAPA: L{CapabilityAnswer} asks the upstream that
speaks for the session what it can do (before login, the one upstream every
login goes to, if there is one), or takes its last answer from the
process's L{CapabilityCache} when C{[limits]} keep the session from holding
an upstream connection, and makes the proxy's own list from it
(L{proxyCapabilities}).  An upstream that cannot be reached still gets the
client an answer: the proxy's own list.  It is given the upstream slot's
connect and usability checks, the link's CAPA request and the cache, never
the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from popproxy import __version__
from popproxy._capabilities import CapabilityCache, UpstreamCapabilities, proxyCapabilities
from popproxy._sasl import MECHANISMS
from popproxy._tls import UpstreamTarget

__all__ = ["IMPLEMENTATION", "CapabilityAnswer"]

#: The value of the IMPLEMENTATION capability.
IMPLEMENTATION = f"popproxy-{__version__}".encode("ascii")


class CapabilityAnswer:
    """
    CAPA for one session.
    """

    def __init__(
        self,
        *,
        connect: Callable[[UpstreamTarget], Awaitable[object]],
        isUsable: Callable[[UpstreamTarget], bool],
        ask: Callable[[], Awaitable[UpstreamCapabilities]],
        cache: CapabilityCache,
        sharedUpstream: UpstreamTarget | None = None,
        cacheFirst: bool = False,
    ) -> None:
        """
        @param connect: connects (or keeps) the session's upstream connection
            to an address; it fails if the upstream cannot be reached.
        @param isUsable: whether the session's connection to an address is
            up now.
        @param ask: asks the connected upstream for its capabilities.
        @param cache: the process's last answers before login, by address.
        @param sharedUpstream: the upstream every login goes to, if there is
            one: before login, CAPA speaks for it.
        @param cacheFirst: before login, answer from the cache rather than
            connect anew (under C{[limits]}, which release idle upstream
            connections before login).
        """
        self._connect = connect
        self._isUsable = isUsable
        self._ask = ask
        self._cache = cache
        self._sharedUpstream = sharedUpstream
        self._cacheFirst = cacheFirst

    async def answer(
        self,
        current: UpstreamTarget | None,
        *,
        beforeLogin: bool,
        loginsAllowed: bool,
        offerSTLS: bool,
    ) -> bytes:
        """
        The whole CAPA answer, status line to terminating line.

        @param current: the address of the session's upstream connection,
            if it has one.
        @param beforeLogin: the session is in the AUTHORIZATION state.
        @param loginsAllowed: whether USER and SASL are announced.
        @param offerSTLS: whether STLS is announced.
        """
        address = current
        if beforeLogin and self._sharedUpstream is not None:
            address = self._sharedUpstream
        upstream = await self._upstreamCapabilities(address, beforeLogin)
        return proxyCapabilities(
            upstream,
            mechanisms=MECHANISMS,
            loginsAllowed=loginsAllowed,
            offerSTLS=offerSTLS,
            implementation=IMPLEMENTATION,
        )

    async def _upstreamCapabilities(
        self, address: UpstreamTarget | None, beforeLogin: bool
    ) -> UpstreamCapabilities | None:
        """
        What the upstream at C{address} says it can do; C{None} when there
        is no upstream yet or it cannot be reached.
        """
        if address is None:
            return None
        if beforeLogin and self._cacheFirst and not self._isUsable(address):
            cached = self._cache.lookUp(address)
            if cached is not None:
                return cached
        try:
            await self._connect(address)
        except Exception:
            return None
        capabilities = await self._ask()
        if beforeLogin:
            self._cache.remember(address, capabilities)
        return capabilities
