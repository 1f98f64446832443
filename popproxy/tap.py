"""
The twistd application: command-line options, and the service they
describe, built by L{popproxy._assembly}.

C{twistd popproxy --config twistd.conf} reads the TOML file; C{--listen}
and C{--upstream} override it, so the proxy also runs with no file at all.
Listening happens in C{privilegedStartService}, so twistd can bind port
110 as root and then drop privileges with C{-u}/C{-g}; the directories the
proxy writes are created for, and checked as, the user of C{-u}/C{-g}
(L{popproxy._runas}) before anything is built.  SIGHUP reads the same file
and flags again (L{popproxy._reload}).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from popproxy._assembly import (
    buildChain,
    checkOnReactor,
    checkQuarantineSchema,
    serviceFromConfig,
)
from popproxy._config import Config, ConfigError, loadConfig
from popproxy._metrics import Metrics
from popproxy._runas import RunAs, prepareFor
from popproxy._version import versionLine

log = Logger()


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

    def opt_version(self) -> None:
        """
        Print popproxy's version (and Twisted's and Python's) and exit.
        """
        print(versionLine("popproxy"))
        sys.exit(0)

    def postOptions(self) -> None:
        if self["config"] is None and not self["upstream"]:
            raise usage.UsageError("give --config FILE or --upstream ENDPOINT")


def buildConfig(options: Options) -> Config:
    """
    The configuration the options describe, not yet checked against a
    reactor.
    """
    config = Config() if options["config"] is None else loadConfig(Path(options["config"]))
    if options["upstream"] and config.demo is not None:
        log.info(
            "[demo] server not started: --upstream {upstream} replaces the demo upstream",
            upstream=options["upstream"],
        )
    return config.withOverrides(tuple(options["listen"]), options["upstream"])


def runAsOf(options: Options) -> RunAs:
    """
    The identity the proxy will run as: twistd's own C{-u}/C{-g} (global
    options, before the plugin's name, so read from the parent options),
    or this process's.
    """
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return RunAs.current()
    uid = twistd.get("uid")
    try:
        return RunAs.fromTwistd(uid, twistd.get("gid"))
    except KeyError:  # twistd itself needs a user entry to switch to
        raise ConfigError(f"<command line>: -u {uid}: no such user") from None


def makeService(options: Options) -> IService:
    """
    Build the proxy service; a configuration error, or a directory the
    run-as user cannot write, stops start-up with one line on stderr.
    """
    from twisted.internet import reactor

    metrics = Metrics()
    try:
        config = buildConfig(options)
        checkOnReactor(config, reactor)
        config = prepareFor(config, runAsOf(options))
        chain = buildChain(config, reactor, metrics=metrics)
        checkQuarantineSchema(config)
    except ConfigError as e:
        sys.stderr.write(f"popproxy: {e}\n")
        raise SystemExit(1) from None
    return serviceFromConfig(
        config, reactor, chain, readConfig=partial(buildConfig, options), metrics=metrics
    )
