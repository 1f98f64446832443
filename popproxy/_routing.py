"""
Decide which upstream server a login name goes to, and what name to send it.
"""

from __future__ import annotations

from dataclasses import dataclass

from popproxy._config import RoutingSettings
from popproxy._tls import UpstreamTarget


class NoRoute(Exception):
    """
    No upstream serves this login name.
    """


@dataclass(frozen=True, slots=True)
class Route:
    """
    Where one login goes.

    @ivar upstream: the upstream server.
    @ivar login: the login name to send upstream.
    """

    upstream: UpstreamTarget
    login: str


class Router:
    """
    Routes login names using the configured rules, in this order: a
    C{[[route]]} whose domain matches the part after the last C{@}; the
    C{user@host} syntax for an allowed host; the default upstream.
    """

    def __init__(self, routing: RoutingSettings) -> None:
        self._default = None if routing.default is None else routing.target(routing.default)
        self._domains = {
            route.domain: (route, routing.target(route.upstream, route.tls, route.clientAddress))
            for route in routing.routes
        }
        self._userHost = routing.userHost
        self._hosts = {
            host: routing.target(endpoint) for host, endpoint in routing.userHost.allowed.items()
        }

    @property
    def static(self) -> bool:
        """
        Every login goes to the same upstream, so it is known before login.
        """
        return self._default is not None and not self._domains and not self._userHost.enabled

    @property
    def default(self) -> UpstreamTarget | None:
        return self._default

    def targets(self) -> list[UpstreamTarget]:
        """
        Every upstream this router may send a login to.
        """
        found = [] if self._default is None else [self._default]
        found += [target for _, target in self._domains.values()]
        found += list(self._hosts.values())
        return found

    def route(self, login: str) -> Route:
        """
        @raise NoRoute: nothing serves C{login}.
        """
        if self._domains and "@" in login:
            local, _, domain = login.rpartition("@")
            found = self._domains.get(domain.lower())
            if found is not None:
                route, target = found
                name = local if route.login == "strip-domain" else login
                if not name:
                    raise NoRoute(login)
                return Route(target, name)
        if self._userHost.enabled:
            for separator in self._userHost.separators:
                if separator in login:
                    local, _, host = login.rpartition(separator)
                    allowed = self._hosts.get(host.lower())
                    if allowed is not None and local:
                        return Route(allowed, local)
        if self._default is None:
            raise NoRoute(login)
        return Route(self._default, login)
