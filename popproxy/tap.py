"""
The twistd application: command-line options and the service they build.

C{twistd popproxy --config twistd.conf} reads the TOML file; C{--listen}
and C{--upstream} override it, so the proxy also runs with no file at all.
Listening happens in C{privilegedStartService}, so twistd can bind port
110 as root and then drop privileges with C{-u}/C{-g}.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.python import usage

from popproxy._config import Config, ConfigError, checkConfig, loadConfig
from popproxy._proxyheader import ProxyHeaderFactory
from popproxy._routing import Router
from popproxy._session import SessionFactory, SessionSettings
from popproxy._upstream import UpstreamConnector


class Options(usage.Options):
    """
    Options for C{twistd popproxy}.
    """

    synopsis = "[--config FILE] [--listen ENDPOINT ...] [--upstream ENDPOINT]"
    longdesc = (
        "Run popproxy, a POP3 proxy and filter gateway. Settings come from the "
        "TOML file given with --config (see the shipped twistd.conf); --listen "
        "and --upstream override the file. Without --config the proxy needs "
        "--upstream. ENDPOINT values are Twisted endpoint strings, for example "
        "tcp:1110:interface=127.0.0.1 (listen) or tcp:pop.example.com:110 "
        "(upstream)."
    )
    optParameters = [
        ["config", "c", None, "The TOML configuration file (e.g. twistd.conf)."],
        [
            "upstream",
            None,
            None,
            "Default upstream POP3 server, a client endpoint string; overrides [upstream] default.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on this server endpoint string (repeatable; replaces [proxy] listen).
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if self["config"] is None and not self["upstream"]:
            raise usage.UsageError("give --config FILE or --upstream ENDPOINT")


def buildConfig(options: Options) -> Config:
    """
    The configuration the options describe, not yet checked against a
    reactor.
    """
    config = Config() if options["config"] is None else loadConfig(Path(options["config"]))
    return config.withOverrides(tuple(options["listen"]), options["upstream"])


def makeService(options: Options) -> IService:
    """
    Build the proxy service; a configuration error stops start-up with one
    line on stderr.
    """
    from twisted.internet import reactor

    try:
        config = buildConfig(options)
        checkConfig(
            config,
            lambda description: serverFromString(reactor, description),
            lambda description: clientFromString(reactor, description),
        )
    except ConfigError as e:
        sys.stderr.write(f"popproxy: {e}\n")
        raise SystemExit(1) from None
    return serviceFromConfig(config, reactor)


def serviceFromConfig(config: Config, reactor: object) -> MultiService:
    """
    The services that run a checked configuration on C{reactor}.
    """
    top = MultiService()
    connector = UpstreamConnector(reactor, config.connectTimeout, config.responseTimeout)  # type: ignore[arg-type]
    settings = SessionSettings(
        router=Router(config),
        connect=connector.connect,
        clock=reactor,  # type: ignore[arg-type]
        idleTimeout=config.idleTimeout,
        maxFailedLogins=config.maxFailedLogins,
    )
    factory = SessionFactory(settings)
    for description in config.listen:
        prefix, _, rest = description.partition(":")
        if prefix.lower() == "haproxy":
            # Twisted's own haproxy: wrapper lets the session greet before
            # the PROXY header has arrived; ours holds it back until then.
            listener = StreamServerEndpointService(
                serverFromString(reactor, rest),
                ProxyHeaderFactory(factory, reactor),  # type: ignore[arg-type]
            )
        else:
            listener = StreamServerEndpointService(serverFromString(reactor, description), factory)
        listener._raiseSynchronously = True
        listener.setServiceParent(top)
    if config.demo is not None:
        from popproxy.demo import defaultMailboxPath, demoServerFactory

        mailbox = config.demo.mailbox or defaultMailboxPath()
        demo = StreamServerEndpointService(
            serverFromString(reactor, config.demo.listen),
            demoServerFactory(mailbox, config.demo.user, config.demo.password),
        )
        demo._raiseSynchronously = True
        demo.setServiceParent(top)
    return top
