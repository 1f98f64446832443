"""
Read and validate the TOML configuration file into frozen values.

Every problem becomes one L{ConfigError} whose text names the file, the key
and what is wrong, so start-up can stop with one clear line instead of a
traceback.  Endpoint strings are checked here by building (not connecting)
the endpoints with the reactor that will run them.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from popproxy._admission import ConnectionLimits
from popproxy._loginthrottle import ThrottleSettings
from popproxy._mimelimits import LIMIT_KEYS, ParseLimits
from popproxy._quarantineaddress import QuarantineAddress, parseQuarantineAddress
from popproxy._storeaddress import RedisAddress, parseStoreURL
from popproxy._tls import (
    CLIENT_ADDRESS_MODES,
    TLS_MODES,
    ServerTLS,
    TlsSettingsError,
    UpstreamTarget,
    UpstreamTls,
    minimumVersion,
    resolveUpstreamTls,
)
from popproxy.console._passwordhash import parseHash

DEFAULT_LISTEN = ("tcp:1110:interface=127.0.0.1",)
LOGIN_REWRITES = ("keep", "strip-domain")


class ConfigError(Exception):
    """
    The configuration cannot be used; the message is meant for the
    administrator, in one line.
    """


@dataclass(frozen=True)
class DomainRoute:
    """
    Logins ending in C{@domain} go to C{upstream}.

    @ivar login: C{"keep"} sends the login name as the client typed it,
        C{"strip-domain"} sends only the part before the C{@}.
    """

    domain: str
    upstream: str
    login: str = "keep"
    tls: UpstreamTls = UpstreamTls()
    clientAddress: str = "none"


@dataclass(frozen=True)
class UserHostRouting:
    """
    The opt-in C{user@host} / C{user#host} login syntax.

    @ivar allowed: the only hosts a client may name, each mapped to the
        client endpoint string used to reach it.  Never an open relay.
    """

    enabled: bool = False
    separators: tuple[str, ...] = ("@", "#")
    allowed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoConfig:
    """
    The bundled demo upstream (a small POP3 server over a sample mailbox).
    """

    listen: str = "tcp:1100:interface=127.0.0.1"
    user: str = "demo"
    password: str = "demo"
    mailbox: Path | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """
    The C{[metrics]} table: where Prometheus scrapes C{/metrics} and load
    balancers or init systems ask C{/healthz}.

    @ivar listen: a server endpoint string (keep it on a private interface:
        the health page names the scanners' addresses).
    """

    listen: str


@dataclass(frozen=True)
class ConsoleConfig:
    """
    The C{[console]} table: the web console where users get their
    quarantined items back (see docs/console.md).

    @ivar listen: a server endpoint string (C{ssl:} serves it over TLS).
    @ivar publicUrl: the base URL users reach it at, for links in notices
        (C{None}: notices carry no link).
    @ivar userDownload: the filters (by their name in the chain) whose
        removals a user may download without an administrator's approval.
    @ivar sessionTimeout: seconds a signed-in session lasts without use.
    @ivar admins: the administrators' accounts: (name, scrypt hash line)
        pairs (none: the console has no administrator pages to sign in to).
    """

    listen: str
    publicUrl: str | None = None
    userDownload: tuple[str, ...] = ("strip",)
    sessionTimeout: float = 1800.0
    admins: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TlsConfig:
    """
    TLS towards clients.

    @ivar certificate: PEM chain file (server certificate first); STLS is
        offered on plain listeners when set.
    @ivar key: PEM private key (C{None}: inside C{certificate}).
    @ivar listen: implicit-TLS listeners (port 995 style).
    @ivar require: C{"auto"}, C{"always"} or C{"never"} (see README).
    """

    certificate: Path | None = None
    key: Path | None = None
    minVersion: str = "1.2"
    require: str = "auto"
    listen: tuple[str, ...] = ()


REQUIRE_TLS = ("auto", "always", "never")
TOP_MODES = ("full", "partial")
ON_ERROR = ("tempfail", "deliver")


@dataclass(frozen=True)
class FilterConfig:
    """
    One entry of the filter chain, as configured.

    @ivar plugin: a plugin name, a path to a .py file or "module:object".
    @ivar name: the name in logs (default: the filter's own name).
    @ivar onError: C{"tempfail"} or C{"deliver"} (with a header).
    @ivar settings: the plugin's own settings table.
    """

    plugin: str
    name: str | None = None
    timeout: float = 30.0
    onError: str = "tempfail"
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainConfig:
    """
    How the filter chain runs.

    @ivar pluginDirs: directories searched for plugins named by a bare name.
    @ivar quarantine: where originals replaced by notices are kept: a
        directory, or a PostgreSQL database (L{DatabaseAddress}).
    @ivar top: C{"full"}: TOP fetches and filters the whole message, then
        cuts it (consistent with RETR); C{"partial"}: TOP's partial message
        is filtered as such.
    @ivar threadThreshold: messages at least this big are parsed in a thread.
    @ivar limits: the parse limits of every filtered message.
    @ivar overLimits: what a message over them gets: C{"deliver"} (untouched,
        with a header) or C{"quarantine"} (replaced by a notice).
    @ivar spoolDirectory: where messages over C{spoolThreshold} are spooled;
        C{None}: the system's temporary directory.
    """

    pluginDirs: tuple[Path, ...] = ()
    quarantine: QuarantineAddress | None = None
    top: str = "full"
    threadThreshold: int = 64 * 1024
    keepaliveAfter: float = 20.0
    keepaliveInterval: float = 5.0
    cacheBytes: int = 1024 * 1024
    spoolThreshold: int = 4 * 1024 * 1024
    spoolDirectory: Path | None = None
    maxSize: int = 100 * 1024 * 1024
    oversize: str = "deliver"
    limits: ParseLimits = ParseLimits()
    overLimits: str = "deliver"


@dataclass(frozen=True)
class RoutingSettings:
    """
    What the router needs from C{[upstream]}, C{[[route]]} and
    C{[user_host]}: the default upstream, the TLS settings upstreams
    inherit, the domain routes and the C{user@host} rules.
    """

    default: str | None = None
    upstreamTls: UpstreamTls = UpstreamTls()
    routes: tuple[DomainRoute, ...] = ()
    userHost: UserHostRouting = field(default_factory=UserHostRouting)
    #: How upstreams learn the client's address (C{[upstream] client_address}).
    clientAddress: str = "none"

    def target(
        self, endpoint: str, tls: UpstreamTls | None = None, clientAddress: str | None = None
    ) -> UpstreamTarget:
        """
        The upstream C{endpoint} with its TLS settings resolved (C{tls}, or
        those of C{[upstream]}) and its C{client_address} (likewise).

        @raise TlsSettingsError: the settings cannot work for it.
        """
        return UpstreamTarget(
            endpoint,
            resolveUpstreamTls(endpoint, tls or self.upstreamTls),
            clientAddress or self.clientAddress,
        )


#: What a message over a parse limit can get.
OVER_LIMITS = ("deliver", "quarantine")


@dataclass(frozen=True)
class Config:
    """
    Everything popproxy needs to start.
    """

    source: str = "<command line>"
    listen: tuple[str, ...] = DEFAULT_LISTEN
    idleTimeout: float = 600.0
    maxFailedLogins: int = 3
    loginFailureDelay: float = 1.0
    workers: int = 1
    stopGrace: float = 30.0
    retireAfter: float = 600.0
    upstream: str | None = None
    upstreamTls: UpstreamTls = UpstreamTls()
    upstreamClientAddress: str = "none"
    connectTimeout: float = 30.0
    responseTimeout: float = 120.0
    routes: tuple[DomainRoute, ...] = ()
    userHost: UserHostRouting = field(default_factory=UserHostRouting)
    demo: DemoConfig | None = None
    tls: TlsConfig = TlsConfig()
    filters: tuple[FilterConfig, ...] = ()
    chain: ChainConfig = ChainConfig()
    #: The metrics and health listener (C{None}: none).
    metrics: MetricsConfig | None = None
    #: The web console (C{None}: none).
    console: ConsoleConfig | None = None
    #: The C{[limits]} on connections (on by default).
    limits: ConnectionLimits = ConnectionLimits()
    #: Where the abuse-protection counters live (C{[limits] store}):
    #: C{None} in the process, or a Redis server several instances share.
    counterStore: RedisAddress | None = None
    #: Brute-force throttling of logins across sessions ([limits.logins]).
    loginThrottle: ThrottleSettings = ThrottleSettings()
    #: The directory relative paths are relative to.
    base: Path = Path(".")
    #: Settings given as command-line flags rather than in the file.
    overridden: frozenset[str] = frozenset()

    @property
    def routing(self) -> RoutingSettings:
        """
        What the router needs (after the command-line flags).
        """
        return RoutingSettings(
            self.upstream, self.upstreamTls, self.routes, self.userHost, self.upstreamClientAddress
        )

    def target(self, endpoint: str, tls: UpstreamTls | None = None) -> UpstreamTarget:
        """
        The upstream C{endpoint} with its TLS settings resolved (C{tls}, or
        those of C{[upstream]}).

        @raise TlsSettingsError: the settings cannot work for it.
        """
        return self.routing.target(endpoint, tls)

    def withOverrides(self, listen: tuple[str, ...] = (), upstream: str | None = None) -> Config:
        """
        Apply the C{--listen} and C{--upstream} command-line flags.
        C{--upstream} also turns the C{[demo]} server off: it exists only to
        be the default upstream that the flag replaces.
        """
        changed = self
        if listen:
            changed = replace(
                changed, listen=tuple(listen), overridden=changed.overridden | {"listen"}
            )
        if upstream:
            changed = replace(
                changed, upstream=upstream, demo=None, overridden=changed.overridden | {"upstream"}
            )
        return changed


class _Table:
    """
    One TOML table being consumed key by key, so unknown keys can be named.
    """

    def __init__(self, source: str, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.source = source
        self.name = name
        self._data = dict(data)

    def _where(self, key: str) -> str:
        return f"{self.source}: [{self.name}] {key}"

    def _take(self, key: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        if key not in self._data:
            return default
        value = self._data.pop(key)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._where(key)}: must be {what}, not {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._where(key)}: must be {what}, not {value!r}")
        return value

    def string(self, key: str, default: Any = None) -> Any:
        return self._take(key, default, (str,), "a string")

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self._take(key, default, (bool,), "true or false"))

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self._take(key, default, (int, float), "a number")
        if not math.isfinite(value):
            # TOML allows nan and inf; a nan timeout makes callLater fail
            # in every session, an infinite one silently disables it.
            raise ConfigError(f"{self._where(key)}: must be a finite number, not {value!r}")
        if value < minimum:
            raise ConfigError(f"{self._where(key)}: must be at least {minimum}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self._take(key, default, (int,), "an integer")
        if value < minimum:
            raise ConfigError(f"{self._where(key)}: must be at least {minimum}, not {value!r}")
        return int(value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._take(key, None, (list, str), "a list of strings")
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not value or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{self._where(key)}: must be a non-empty list of strings")
        return tuple(value)

    def table(self, key: str) -> dict[str, Any]:
        return dict(self._take(key, {}, (dict,), "a table"))

    def finish(self) -> None:
        if self._data:
            key = sorted(self._data)[0]
            raise ConfigError(f"{self._where(key)}: unknown key")


def _upstreamTls(table: _Table, base: Path, inherited: UpstreamTls) -> UpstreamTls:
    """
    Read the TLS keys of an upstream (C{tls}, C{ca_file}, C{verify},
    C{hostname}); unset keys are inherited.
    """
    mode = table.string("tls", inherited.mode)
    if mode is not None and mode not in TLS_MODES:
        raise ConfigError(
            f"{table._where('tls')}: must be one of {', '.join(TLS_MODES)}, not {mode!r}"
        )
    caFile = table.string("ca_file")
    verify = table.boolean("verify", inherited.verify)
    hostname = table.string("hostname", inherited.hostname)
    return UpstreamTls(
        mode=mode,
        caFile=(base / caFile) if caFile else inherited.caFile,
        verify=verify,
        hostname=hostname,
    )


def _clientAddress(table: _Table, inherited: str) -> str:
    """
    Read C{client_address} (how the upstream learns the client's address);
    unset, it is inherited.
    """
    mode = table.string("client_address", inherited)
    if mode not in CLIENT_ADDRESS_MODES:
        raise ConfigError(
            f"{table._where('client_address')}: must be one of "
            f"{', '.join(CLIENT_ADDRESS_MODES)}, not {mode!r}"
        )
    return str(mode)


@dataclass(frozen=True)
class ProxySettings:
    """
    The C{[proxy]} table: where clients connect and how sessions behave.
    """

    listen: tuple[str, ...] = DEFAULT_LISTEN
    idleTimeout: float = 600.0
    maxFailedLogins: int = 3
    loginFailureDelay: float = 1.0
    workers: int = 1
    #: Seconds a stopping proxy lets each session finish its command.
    stopGrace: float = 30.0
    #: Seconds a worker replaced by a reload waits for its connections to
    #: end by themselves before it stops them.
    retireAfter: float = 600.0


@dataclass(frozen=True)
class UpstreamSettings:
    """
    The C{[upstream]} table: the default upstream and how to reach upstreams.
    """

    default: str | None = None
    tls: UpstreamTls = UpstreamTls()
    clientAddress: str = "none"
    connectTimeout: float = 30.0
    responseTimeout: float = 120.0


#: The top-level tables a configuration file may have.
SECTIONS = (
    "proxy",
    "upstream",
    "route",
    "user_host",
    "demo",
    "tls",
    "chain",
    "filter",
    "metrics",
    "limits",
    "console",
)


def readProxy(source: str, data: Any) -> ProxySettings:
    """
    Read the C{[proxy]} table.
    """
    proxy = _Table(source, "proxy", data)
    settings = ProxySettings(
        listen=proxy.strings("listen", DEFAULT_LISTEN),
        idleTimeout=proxy.number("idle_timeout", 600.0, minimum=1),
        maxFailedLogins=proxy.integer("max_failed_logins", 3, minimum=1),
        loginFailureDelay=proxy.number("login_failure_delay", 1.0, minimum=0),
        workers=proxy.integer("workers", 1, minimum=1),
        stopGrace=proxy.number("stop_grace", 30.0, minimum=0),
        retireAfter=proxy.number("retire_after", 600.0, minimum=0),
    )
    proxy.finish()
    return settings


def readUpstream(source: str, data: Any, base: Path) -> UpstreamSettings:
    """
    Read the C{[upstream]} table.
    """
    table = _Table(source, "upstream", data)
    settings = UpstreamSettings(
        default=table.string("default"),
        tls=_upstreamTls(table, base, UpstreamTls()),
        clientAddress=_clientAddress(table, "none"),
        connectTimeout=table.number("connect_timeout", 30.0, minimum=0.1),
        responseTimeout=table.number("response_timeout", 120.0, minimum=0.1),
    )
    table.finish()
    return settings


def _readRoute(
    source: str, number: int, entry: Any, base: Path, tls: UpstreamTls, clientAddress: str
) -> DomainRoute:
    """
    Read one C{[[route]]} entry (domain lower-cased, not yet checked for
    duplicates); unset TLS keys are inherited from C{tls}, an unset
    C{client_address} from C{clientAddress}.
    """
    table = _Table(source, f"route #{number}", entry)
    domain = table.string("domain")
    target = table.string("upstream")
    login = table.string("login", "keep")
    routeTls = _upstreamTls(table, base, tls)
    clientAddress = _clientAddress(table, clientAddress)
    table.finish()
    if not domain:
        raise ConfigError(f"{source}: [route #{number}] domain: missing")
    if not target:
        raise ConfigError(f"{source}: [route #{number}] upstream: missing")
    if login not in LOGIN_REWRITES:
        raise ConfigError(
            f"{source}: [route #{number}] login: must be one of "
            f"{', '.join(LOGIN_REWRITES)}, not {login!r}"
        )
    domain = domain.lower()
    if "@" in domain:
        raise ConfigError(
            f"{source}: [route #{number}] domain: write {domain.lstrip('@')!r}, without @"
        )
    return DomainRoute(domain, target, login, routeTls, clientAddress)


def readRoutes(
    source: str, data: Any, base: Path, tls: UpstreamTls, clientAddress: str = "none"
) -> tuple[DomainRoute, ...]:
    """
    Read the C{[[route]]} array; C{tls} is the C{[upstream]} TLS settings
    and C{clientAddress} its C{client_address}, which every route inherits.
    """
    if not isinstance(data, list):
        raise ConfigError(f"{source}: [[route]] must be an array of tables")
    routes: list[DomainRoute] = []
    seen: set[str] = set()
    for number, entry in enumerate(data, 1):
        route = _readRoute(source, number, entry, base, tls, clientAddress)
        if route.domain in seen:
            raise ConfigError(f"{source}: [route #{number}] domain: {route.domain!r} routed twice")
        seen.add(route.domain)
        routes.append(route)
    return tuple(routes)


def readUserHost(source: str, data: Any) -> UserHostRouting:
    """
    Read the C{[user_host]} table.
    """
    table = _Table(source, "user_host", data)
    enabled = table.boolean("enabled", False)
    separators = table.strings("separators", ("@", "#"))
    allowed = table.table("allowed")
    table.finish()
    for separator in separators:
        if len(separator) != 1:
            raise ConfigError(
                f"{source}: [user_host] separators: {separator!r} is not one character"
            )
    for host, target in allowed.items():
        if not isinstance(target, str) or not target:
            raise ConfigError(
                f"{source}: [user_host] allowed.{host}: must be a client endpoint string"
            )
    if enabled and not allowed:
        raise ConfigError(f"{source}: [user_host] allowed: enabled but no host is allowed")
    return UserHostRouting(
        enabled, separators, {host.lower(): target for host, target in allowed.items()}
    )


def readDemo(source: str, data: Any, base: Path) -> DemoConfig | None:
    """
    Read the C{[demo]} table (C{None}: absent or disabled).
    """
    if data is None:
        return None
    table = _Table(source, "demo", data)
    enabled = table.boolean("enabled", True)
    listen = table.string("listen", DemoConfig.listen)
    user = table.string("user", DemoConfig.user)
    password = table.string("password", DemoConfig.password)
    mailbox = table.string("mailbox")
    table.finish()
    if not enabled:
        return None
    return DemoConfig(listen, user, password, (base / mailbox) if mailbox else None)


def readMetrics(source: str, data: Any) -> MetricsConfig | None:
    """
    Read the C{[metrics]} table (C{None}: absent).
    """
    if data is None:
        return None
    table = _Table(source, "metrics", data)
    listen = table.string("listen")
    table.finish()
    if not listen:
        raise ConfigError(f"{source}: [metrics] listen: missing")
    return MetricsConfig(listen)


def readConsole(source: str, data: Any) -> ConsoleConfig | None:
    """
    Read the C{[console]} table (C{None}: absent).
    """
    if data is None:
        return None
    table = _Table(source, "console", data)
    listen = table.string("listen")
    publicUrl = table.string("public_url")
    userDownload = table._take("user_download", None, (list,), "a list of filter names")
    timeout = table.number("session_timeout", ConsoleConfig.sessionTimeout, minimum=60)
    admins = readAdmins(source, table.table("admins"))
    table.finish()
    if not listen:
        raise ConfigError(f"{source}: [console] listen: missing")
    if publicUrl is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", publicUrl):
        raise ConfigError(
            f"{source}: [console] public_url: must be an http:// or https:// URL, not {publicUrl!r}"
        )
    if userDownload is not None and not all(isinstance(n, str) and n for n in userDownload):
        raise ConfigError(f"{source}: [console] user_download: must be a list of filter names")
    return ConsoleConfig(
        listen,
        publicUrl.rstrip("/") if publicUrl else None,
        ConsoleConfig.userDownload if userDownload is None else tuple(userDownload),
        timeout,
        admins,
    )


def readAdmins(source: str, table: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """
    The C{[console] admins} table: each administrator's name with the
    hash line C{popproxy-console hash-password} made of their password.
    """
    admins = []
    for name, line in table.items():
        where = f"{source}: [console] admins.{name}"
        if not name or not name.isprintable() or len(name) > 256:
            raise ConfigError(f"{source}: [console] admins: {name!r} is not a usable name")
        if not isinstance(line, str):
            raise ConfigError(f"{where}: must be a hash line (popproxy-console hash-password)")
        try:
            parseHash(line)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        admins.append((name, line))
    return tuple(admins)


def _readNetworks(
    source: str, table: _Table, key: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    """
    A list of networks (C{"192.0.2.0/24"}, C{"2001:db8::1"}), possibly empty.
    """
    value = table._take(key, None, (list,), "a list of networks")
    if value is None:
        return default
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise ConfigError(f"{source}: [limits] {key}: {item!r} is not a network") from None
    return tuple(networks)


def readLimits(source: str, data: Any) -> ConnectionLimits:
    """
    Read the C{[limits]} table; its absence means the defaults, not no limits.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [limits] must be a table")
    # [limits.logins] and store have their own readers.
    own = {k: v for k, v in data.items() if k not in ("logins", "store")}
    table = _Table(source, "limits", own)
    defaults = ConnectionLimits()
    maxSessions = table.integer("max_sessions", 0, minimum=0)
    limits = ConnectionLimits(
        maxSessions=maxSessions or None,
        perAddress=table.integer("max_sessions_per_address", defaults.perAddress, minimum=1),
        ipv4Prefix=int(table.integer("ipv4_prefix", defaults.ipv4Prefix, minimum=1)),
        ipv6Prefix=int(table.integer("ipv6_prefix", defaults.ipv6Prefix, minimum=1)),
        connectionRate=table.integer("connection_rate", defaults.connectionRate, minimum=1),
        rateInterval=table.number("rate_interval", defaults.rateInterval, minimum=1),
        loginTimeout=table.number("login_timeout", defaults.loginTimeout, minimum=1),
        commandDeadline=table.number("command_deadline", defaults.commandDeadline, minimum=1),
        upstreamHold=table.number("upstream_hold", defaults.upstreamHold, minimum=0),
        trusted=_readNetworks(source, table, "trusted_networks", defaults.trusted),
        preloginUpstream=table.integer("prelogin_upstream", defaults.preloginUpstream, minimum=0),
        refusalLogInterval=table.number(
            "refusal_log_interval", defaults.refusalLogInterval, minimum=1
        ),
    )
    table.finish()
    if limits.ipv4Prefix > 32 or limits.ipv6Prefix > 128:
        raise ConfigError(f"{source}: [limits] ipv4_prefix is at most 32, ipv6_prefix 128")
    return limits


def readCounterStore(source: str, limits: Any) -> RedisAddress | None:
    """
    Read C{[limits] store}: C{"memory"} (the default: C{None}) or a
    C{redis://} URL.
    """
    value = limits.get("store", "memory") if isinstance(limits, dict) else "memory"
    if not isinstance(value, str):
        raise ConfigError(f"{source}: [limits] store: must be a string")
    try:
        return parseStoreURL(value)
    except ValueError as e:
        raise ConfigError(f"{source}: [limits] store: {e}") from None


def readLoginThrottle(source: str, limits: Any) -> ThrottleSettings:
    """
    Read the C{[limits.logins]} table of the C{[limits]} table C{limits}
    (its other keys are read by their own reader).
    """
    if not isinstance(limits, dict):
        raise ConfigError(f"{source}: [limits] must be a table")
    table = _Table(source, "limits.logins", limits.get("logins", {}))
    defaults = ThrottleSettings()
    settings = ThrottleSettings(
        enabled=table.boolean("enabled", defaults.enabled),
        delay=table.number("delay", defaults.delay),
        maxDelay=table.number("max_delay", defaults.maxDelay),
        window=table.number("window", defaults.window, minimum=1),
        blockAfter=table.integer("block_after", defaults.blockAfter, minimum=1),
        blockFor=table.number("block_for", defaults.blockFor),
        newAccountWeight=table.integer("new_account_weight", defaults.newAccountWeight, minimum=1),
        ipv6Prefix=table.integer("ipv6_prefix", defaults.ipv6Prefix, minimum=1),
        rememberSuccess=table.number("remember_success", defaults.rememberSuccess),
        inFlight=table.integer("in_flight", defaults.inFlight, minimum=1),
    )
    table.finish()
    if settings.ipv6Prefix > 128:
        raise ConfigError(f"{source}: [limits.logins] ipv6_prefix: must be at most 128")
    return settings


def readTls(source: str, data: Any, base: Path) -> TlsConfig:
    """
    Read the C{[tls]} table (TLS towards clients).
    """
    table = _Table(source, "tls", data)
    certificate = table.string("certificate")
    key = table.string("key")
    minVersion = table.string("min_version", "1.2")
    require = table.string("require", "auto")
    listen = table.strings("listen", ())
    table.finish()
    if minVersion not in ("1.2", "1.3"):
        raise ConfigError(f'{source}: [tls] min_version: must be "1.2" or "1.3"')
    if require not in REQUIRE_TLS:
        raise ConfigError(
            f"{source}: [tls] require: must be one of {', '.join(REQUIRE_TLS)}, not {require!r}"
        )
    if (listen or key) and not certificate:
        raise ConfigError(f"{source}: [tls] certificate: missing")
    return TlsConfig(
        certificate=(base / certificate) if certificate else None,
        key=(base / key) if key else None,
        minVersion=minVersion,
        require=require,
        listen=listen,
    )


def _readParseLimits(table: _Table) -> ParseLimits:
    """
    Read the parse-limit keys of the C{[chain]} table (see L{LIMIT_KEYS}).
    """
    defaults = ParseLimits()
    return ParseLimits(
        **{
            attribute: table.integer(
                key, getattr(defaults, attribute), minimum=0 if attribute == "maxDepth" else 1
            )
            for attribute, key in LIMIT_KEYS.items()
        }
    )


def _checkChain(source: str, chain: ChainConfig) -> None:
    """
    Check the C{[chain]} choices that are words, once every key is read.
    """
    if chain.overLimits not in OVER_LIMITS:
        raise ConfigError(f"{source}: [chain] over_limits: must be deliver or quarantine")
    if chain.overLimits == "quarantine" and chain.quarantine is None:
        raise ConfigError(
            f"{source}: [chain] over_limits: quarantine needs [chain] quarantine to be set"
        )
    if chain.oversize not in ("deliver", "tempfail"):
        raise ConfigError(f"{source}: [chain] oversize: must be deliver or tempfail")
    if chain.top not in TOP_MODES:
        raise ConfigError(f"{source}: [chain] top: must be one of {', '.join(TOP_MODES)}")


def readChain(source: str, data: Any, base: Path) -> ChainConfig:
    """
    Read the C{[chain]} table, its parse limits included.
    """
    table = _Table(source, "chain", data)
    pluginDirs = table.strings("plugin_dirs", ("plugins",))
    quarantine = table.string("quarantine")
    spoolDirectory = table.string("spool_directory")
    chain = ChainConfig(
        pluginDirs=tuple(base / directory for directory in pluginDirs),
        quarantine=parseQuarantineAddress(quarantine, base) if quarantine else None,
        top=table.string("top", "full"),
        threadThreshold=table.integer("thread_threshold", 64 * 1024, minimum=0),
        keepaliveAfter=table.number("keepalive_after", 20.0, minimum=0),
        keepaliveInterval=table.number("keepalive_interval", 5.0, minimum=0.05),
        cacheBytes=table.integer("cache_bytes", 1024 * 1024, minimum=0),
        spoolThreshold=table.integer("spool_threshold", 4 * 1024 * 1024, minimum=0),
        spoolDirectory=(base / spoolDirectory) if spoolDirectory else None,
        maxSize=table.integer("max_size", 100 * 1024 * 1024, minimum=0),
        oversize=table.string("oversize", "deliver"),
        limits=_readParseLimits(table),
        # A filter gateway must not be bypassed by padding a message past a
        # limit: with a quarantine to keep the original, that is the default.
        overLimits=table.string("over_limits", "quarantine" if quarantine else "deliver"),
    )
    table.finish()
    _checkChain(source, chain)
    return chain


def _readFilter(source: str, number: int, entry: Any) -> FilterConfig:
    """
    Read one C{[[filter]]} entry.
    """
    table = _Table(source, f"filter #{number}", entry)
    plugin = table.string("plugin")
    name = table.string("name")
    timeout = table.number("timeout", 30.0, minimum=0.001)
    onError = table.string("on_error", "tempfail")
    settings = table.table("settings")
    table.finish()
    if not plugin:
        raise ConfigError(f"{source}: [filter #{number}] plugin: missing")
    if onError not in ON_ERROR:
        raise ConfigError(
            f"{source}: [filter #{number}] on_error: must be one of {', '.join(ON_ERROR)}"
        )
    return FilterConfig(plugin, name, timeout, onError, settings)


def readFilters(source: str, data: Any) -> tuple[FilterConfig, ...]:
    """
    Read the C{[[filter]]} array, in chain order.
    """
    if not isinstance(data, list):
        raise ConfigError(f"{source}: [[filter]] must be an array of tables")
    return tuple(_readFilter(source, number, entry) for number, entry in enumerate(data, 1))


def _loadToml(text: str, source: str) -> dict[str, Any]:
    """
    Parse TOML text, refusing unknown top-level sections.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: [{key}]: unknown section")
    return data


def parseConfig(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """
    Turn TOML text into a L{Config}, checking keys and types (not endpoints).

    Each table has its own reader; they run in the order of L{SECTIONS}, so
    with several mistakes the same one is reported first every time.

    @param base: the directory relative paths in the file are relative to.
    """
    data = _loadToml(text, source)
    base = base or Path.cwd()
    proxy = readProxy(source, data.get("proxy", {}))
    upstream = readUpstream(source, data.get("upstream", {}), base)
    routes = readRoutes(source, data.get("route", []), base, upstream.tls, upstream.clientAddress)
    userHost = readUserHost(source, data.get("user_host", {}))
    demo = readDemo(source, data.get("demo"), base)
    tls = readTls(source, data.get("tls", {}), base)
    chain = readChain(source, data.get("chain", {}), base)
    filters = readFilters(source, data.get("filter", []))
    metrics = readMetrics(source, data.get("metrics"))
    console = readConsole(source, data.get("console"))
    if console is not None and chain.quarantine is None:
        raise ConfigError(f"{source}: [console]: needs a [chain] quarantine to show")
    limits = readLimits(source, data.get("limits", {}))
    loginThrottle = readLoginThrottle(source, data.get("limits", {}))
    return Config(
        limits=limits,
        loginThrottle=loginThrottle,
        counterStore=readCounterStore(source, data.get("limits", {})),
        source=source,
        base=base,
        filters=filters,
        chain=chain,
        tls=tls,
        listen=proxy.listen,
        idleTimeout=proxy.idleTimeout,
        maxFailedLogins=proxy.maxFailedLogins,
        loginFailureDelay=proxy.loginFailureDelay,
        workers=proxy.workers,
        stopGrace=proxy.stopGrace,
        retireAfter=proxy.retireAfter,
        upstream=upstream.default,
        upstreamTls=upstream.tls,
        upstreamClientAddress=upstream.clientAddress,
        connectTimeout=upstream.connectTimeout,
        responseTimeout=upstream.responseTimeout,
        routes=routes,
        userHost=userHost,
        demo=demo,
        metrics=metrics,
        console=console,
    )


def loadConfig(path: Path) -> Config:
    """
    Read and parse the configuration file at C{path}.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parseConfig(text, str(path), path.parent)


def _checkEndpoint(
    source: str, where: str, description: str, builder: Callable[[str], object]
) -> None:
    """
    Build (not connect) the endpoint C{description} with C{builder}.
    """
    try:
        builder(description)
    except Exception as e:  # endpoint parsers raise many kinds of errors
        raise ConfigError(f"{source}: {where}: {_endpointProblem(description, e)}") from None


def _endpointProblem(description: str, error: Exception) -> str:
    """
    What is wrong with the endpoint C{description}, whose parser raised
    C{error}, in words an administrator can act on.
    """
    if description.startswith("systemd:") and isinstance(error, IndexError | KeyError):
        # Twisted's systemd parser looks the socket up in what it inherited:
        # nothing, or nothing it accepted (LISTEN_FDS without LISTEN_FDNAMES).
        return (
            f"{description!r}: systemd passed no such socket (run it from a socket unit; "
            f"systemd-socket-activate needs --fdname)"
        )
    reason = str(error) or type(error).__name__
    return f"bad endpoint {description!r}: {reason}"


def _checkUpstreamTls(source: str, where: str, endpoint: str, tls: UpstreamTls) -> None:
    """
    Check that the TLS settings C{tls} can work for the upstream C{endpoint}.
    """
    try:
        resolved = resolveUpstreamTls(endpoint, tls)
    except TlsSettingsError as e:
        raise ConfigError(f"{source}: {where}: {e}") from None
    if resolved.caFile is not None and not resolved.caFile.is_file():
        raise ConfigError(f"{source}: {where}: ca_file {resolved.caFile} is not a file")


def _checkClientAddress(source: str, where: str, endpoint: str, mode: str) -> None:
    """
    Check that C{client_address} C{mode} can work for the upstream C{endpoint}:
    a PROXY header goes before the TLS handshake, which a C{tls:} endpoint
    string starts by itself.
    """
    if mode.startswith("proxy-") and endpoint.startswith("tls:"):
        raise ConfigError(
            f"{source}: {where}: a PROXY header cannot go before the TLS of a tls: endpoint; "
            f'write {"tcp:" + endpoint[4:]!r} with tls = "implicit"'
        )


def _checkUpstreams(config: Config, checkClient: Callable[[str], object]) -> None:
    """
    Check every upstream endpoint, its TLS settings and its client_address.
    """
    source = config.source
    if config.upstream is not None:
        where = "--upstream" if "upstream" in config.overridden else "[upstream] default"
        _checkEndpoint(source, where, config.upstream, checkClient)
        _checkUpstreamTls(source, "[upstream] tls", config.upstream, config.upstreamTls)
        _checkClientAddress(
            source, "[upstream] client_address", config.upstream, config.upstreamClientAddress
        )
    for number, route in enumerate(config.routes, 1):
        _checkEndpoint(source, f"[route #{number}] upstream", route.upstream, checkClient)
        _checkUpstreamTls(source, f"[route #{number}] tls", route.upstream, route.tls)
        _checkClientAddress(
            source, f"[route #{number}] client_address", route.upstream, route.clientAddress
        )
    for host, description in config.userHost.allowed.items():
        where = f"[user_host] allowed.{host}"
        _checkEndpoint(source, where, description, checkClient)
        _checkUpstreamTls(source, where, description, config.upstreamTls)
        _checkClientAddress(source, where, description, config.upstreamClientAddress)


def _checkServerTls(config: Config, checkServer: Callable[[str], object]) -> None:
    """
    Check the implicit-TLS listeners and that the certificate and key load.
    """
    for description in config.tls.listen:
        _checkEndpoint(config.source, "[tls] listen", description, checkServer)
    if config.tls.certificate is not None:
        try:
            ServerTLS(config.tls.certificate, config.tls.key, minimumVersion(config.tls.minVersion))
        except (OSError, TlsSettingsError) as e:
            reason = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) else str(e)
            raise ConfigError(f"{config.source}: [tls] certificate: {reason}") from None


def _checkDemo(config: Config, checkServer: Callable[[str], object]) -> None:
    """
    Check the demo upstream's listener and mailbox directory.
    """
    if config.demo is None:
        return
    _checkEndpoint(config.source, "[demo] listen", config.demo.listen, checkServer)
    if config.demo.mailbox is not None and not config.demo.mailbox.is_dir():
        raise ConfigError(
            f"{config.source}: [demo] mailbox: {config.demo.mailbox} is not a directory"
        )


def checkConfig(
    config: Config,
    checkServer: Callable[[str], object],
    checkClient: Callable[[str], object],
) -> None:
    """
    Check what only a reactor can check: that every endpoint string parses,
    and that there is somewhere to send users.

    @param checkServer: builds a server endpoint from a string (raises on a
        bad one), e.g. C{lambda s: serverFromString(reactor, s)}.
    @param checkClient: the same for client endpoint strings.
    """
    where = "--listen" if "listen" in config.overridden else "[proxy] listen"
    for description in config.listen:
        _checkEndpoint(config.source, where, description, checkServer)
    _checkUpstreams(config, checkClient)
    _checkServerTls(config, checkServer)
    _checkDemo(config, checkServer)
    if config.metrics is not None:
        _checkEndpoint(config.source, "[metrics] listen", config.metrics.listen, checkServer)
    if config.console is not None:
        _checkEndpoint(config.source, "[console] listen", config.console.listen, checkServer)
    if config.upstream is None and not config.routes and not config.userHost.enabled:
        raise ConfigError(
            f"{config.source}: [upstream] default: missing (and no [[route]] or [user_host]); "
            "set it or pass --upstream"
        )
