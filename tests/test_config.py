"""
Tests for popproxy._config and popproxy._routing: reading the TOML
configuration, the one-line errors administrators see, the checks that need
a reactor, the command-line overrides, and where each login is routed.

No sockets: endpoint strings are built on a MemoryReactor, never connected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.python.usage import UsageError

from popproxy._admission import ConnectionLimits
from popproxy._config import (
    DEFAULT_LISTEN,
    SECTIONS,
    ChainConfig,
    Config,
    ConfigError,
    DemoConfig,
    DomainRoute,
    FilterConfig,
    MetricsConfig,
    ProxySettings,
    RoutingSettings,
    TlsConfig,
    UpstreamSettings,
    UserHostRouting,
    checkConfig,
    loadConfig,
    parseConfig,
    readChain,
    readDemo,
    readFilters,
    readProxy,
    readRoutes,
    readTls,
    readUpstream,
    readUserHost,
)
from popproxy._routing import NoRoute, Router
from popproxy._tls import UpstreamTls
from popproxy.message import ParseLimits
from popproxy.tap import Options, buildConfig

SHIPPED = Path(__file__).parent.parent / "twistd.conf"
SOURCE = "/etc/popproxy/popproxy.conf"


def checkWithReactor(config: Config) -> None:
    """
    Run L{checkConfig} the way C{popproxy.tap} does, on a reactor that
    never touches the network.
    """
    reactor = MemoryReactor()
    checkConfig(
        config,
        lambda description: serverFromString(reactor, description),
        lambda description: clientFromString(reactor, description),
    )


def assertOneLine(error: ConfigError, *fragments: str) -> None:
    """
    C{error} is one line that starts with the file name and contains every
    fragment.
    """
    text = str(error)
    assert "\n" not in text and "\r" not in text, text
    assert text.startswith(SOURCE + ": "), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def uncommentExamples(text: str) -> str:
    """
    The shipped file with its commented-out C{[[route]]} and C{[user_host]}
    examples turned on, as an administrator would by deleting the C{# }.
    """
    lines = text.splitlines()
    result = []
    inExample = False
    for line in lines:
        if line in ("# [[route]]", "# [user_host]"):
            inExample = True
        elif not line.startswith("#"):
            inExample = False
        result.append(line[2:] if inExample else line)
    return "\n".join(result) + "\n"


# --- defaults and the shipped file -------------------------------------------------------


def test_routeDomainWithAt(tmp_path: Path) -> None:
    """
    A route domain written with a leading @ is refused with a hint instead
    of silently never matching.
    """
    with pytest.raises(ConfigError, match=r"\[route #1\] domain: write 'corp.example', without @"):
        parseConfig('[[route]]\ndomain = "@corp.example"\nupstream = "tcp:h:110"\n', "f.conf")


def test_emptyFileGivesDefaults() -> None:
    """
    An empty file is valid and gives the documented defaults: listen on
    127.0.0.1:1110, RFC 1939's ten-minute autologout, three failed logins,
    no upstream, no routes, user@host off, no demo.
    """
    config = parseConfig("", SOURCE)
    assert config == Config(
        source=SOURCE, base=Path.cwd(), chain=ChainConfig(pluginDirs=(Path.cwd() / "plugins",))
    )
    assert config.listen == DEFAULT_LISTEN == ("tcp:1110:interface=127.0.0.1",)
    assert config.idleTimeout == 600.0
    assert config.stopGrace == 30.0
    assert config.retireAfter == 600.0
    assert config.maxFailedLogins == 3
    assert config.upstream is None
    assert (config.connectTimeout, config.responseTimeout) == (30.0, 120.0)
    assert config.routes == ()
    assert config.userHost == UserHostRouting()
    assert not config.userHost.enabled
    assert config.userHost.separators == ("@", "#")
    assert config.demo is None


def test_shippedFileEveryKey(tmp_path: Path) -> None:
    """
    Every key the shipped twistd.conf sets is read into the configuration
    with the value written there, and the result passes the reactor checks.
    """
    config = loadConfig(SHIPPED)
    assert config.source == str(SHIPPED)
    assert config.listen == ("tcp:1110:interface=127.0.0.1",)
    assert config.idleTimeout == 600.0
    assert config.stopGrace == 30.0
    assert config.retireAfter == 600.0
    assert config.maxFailedLogins == 3
    assert config.upstream == "tcp:127.0.0.1:1100"
    assert config.connectTimeout == 30.0
    assert config.responseTimeout == 120.0
    assert config.routes == ()
    assert config.userHost == UserHostRouting()
    assert config.demo == DemoConfig("tcp:1100:interface=127.0.0.1", "demo", "demo", None)
    checkWithReactor(config)


def test_shippedExamplesAreValid(tmp_path: Path) -> None:
    """
    The commented-out [[route]] and [user_host] examples in the shipped file
    are valid once uncommented, and mean what their comments say.
    """
    text = uncommentExamples(SHIPPED.read_text("utf-8"))
    assert "\n[[route]]\n" in text and "\n[user_host]\n" in text
    path = tmp_path / "twistd.conf"
    path.write_text(text, "utf-8")
    config = loadConfig(path)
    assert config.routes == (
        DomainRoute("corp.example", "tcp:pop.corp.example:110", "strip-domain"),
    )
    assert config.userHost == UserHostRouting(
        True, ("@", "#"), {"pop.example.net": "tcp:pop.example.net:110"}
    )
    checkWithReactor(config)
    router = Router(config.routing)
    assert routed(router, "ann@corp.example") == ("tcp:pop.corp.example:110", "ann")
    assert routed(router, "bob#pop.example.net") == ("tcp:pop.example.net:110", "bob")
    assert routed(router, "demo") == ("tcp:127.0.0.1:1100", "demo")


def test_fullConfiguration(tmp_path: Path) -> None:
    """
    Every section and key is read: several listeners, timeouts as integers
    or floats, routes with both login rewrites (domains lower-cased),
    user@host with its own separators (hosts lower-cased), and a demo
    mailbox relative to the configuration file's directory.
    """
    (tmp_path / "box").mkdir()
    path = tmp_path / "popproxy.conf"
    path.write_text(
        """
[proxy]
listen = ["tcp:110", "haproxy:tcp:1995"]
idle_timeout = 900.5
max_failed_logins = 1

[upstream]
default = "tls:pop.example.com:995"
connect_timeout = 5
response_timeout = 0.5

[[route]]
domain = "Corp.Example"
upstream = "tcp:pop.corp.example:110"
login = "strip-domain"

[[route]]
domain = "other.example"
upstream = "tcp:pop.other.example:110"

[user_host]
enabled = true
separators = ["%"]
allowed = { "POP.Example.NET" = "tls:pop.example.net:995" }

[demo]
listen = "tcp:1100"
user = "sample"
password = "secret"
mailbox = "box"
""",
        "utf-8",
    )
    config = loadConfig(path)
    assert config == Config(
        source=str(path),
        listen=("tcp:110", "haproxy:tcp:1995"),
        idleTimeout=900.5,
        maxFailedLogins=1,
        upstream="tls:pop.example.com:995",
        connectTimeout=5.0,
        responseTimeout=0.5,
        routes=(
            DomainRoute("corp.example", "tcp:pop.corp.example:110", "strip-domain"),
            DomainRoute("other.example", "tcp:pop.other.example:110", "keep"),
        ),
        userHost=UserHostRouting(True, ("%",), {"pop.example.net": "tls:pop.example.net:995"}),
        demo=DemoConfig("tcp:1100", "sample", "secret", tmp_path / "box"),
        base=tmp_path,
        chain=ChainConfig(pluginDirs=(tmp_path / "plugins",)),
    )
    checkWithReactor(config)


def test_singleListenString() -> None:
    """
    C{listen} may be one string instead of a list of one.
    """
    config = parseConfig('[proxy]\nlisten = "tcp:110"\n', SOURCE)
    assert config.listen == ("tcp:110",)


def test_demoDisabled() -> None:
    """
    C{[demo] enabled = false} turns the demo off, while its other keys are
    still checked.
    """
    assert parseConfig("[demo]\nenabled = false\nuser = 'x'\n", SOURCE).demo is None
    with pytest.raises(ConfigError) as raised:
        parseConfig("[demo]\nenabled = false\nport = 1100\n", SOURCE)
    assertOneLine(raised.value, "[demo] port", "unknown key")


def test_demoDefaults() -> None:
    """
    An empty [demo] section turns on the demo with its defaults and the
    mailbox shipped in the package.
    """
    assert parseConfig("[demo]\n", SOURCE).demo == DemoConfig()


# --- one line per error -----------------------------------------------------------------

PARSE_ERRORS = [
    pytest.param(
        "[proxy]\nidle_timeout = 600\nlisten = = 1\n", ("not valid TOML", "line 3"), id="syntax"
    ),
    pytest.param(
        "[proxy]\nidle_timeout = 1\nidle_timeout = 2\n", ("not valid TOML",), id="dup-key"
    ),
    pytest.param("[proxi]\n", ("[proxi]", "unknown section"), id="unknown-section"),
    pytest.param('listen = "tcp:110"\n', ("[listen]", "unknown section"), id="top-level-key"),
    pytest.param("proxy = 1\n", ("[proxy]", "must be a table"), id="section-not-table"),
    pytest.param(
        '[proxy]\nlisten_on = "tcp:110"\n', ("[proxy] listen_on", "unknown key"), id="unknown-key"
    ),
    pytest.param(
        '[upstream]\ndefault = "tcp:h:110"\ntimeout = 5\n',
        ("[upstream] timeout", "unknown key"),
        id="unknown-upstream-key",
    ),
    pytest.param(
        '[[route]]\ndomain = "a.example"\nupstream = "tcp:h:110"\nrewrite = "keep"\n',
        ("[route #1] rewrite", "unknown key"),
        id="unknown-route-key",
    ),
    pytest.param(
        "[user_host]\nhosts = []\n", ("[user_host] hosts", "unknown key"), id="unknown-uh-key"
    ),
    pytest.param("[demo]\nport = 1100\n", ("[demo] port", "unknown key"), id="unknown-demo-key"),
    pytest.param(
        '[proxy]\nidle_timeout = "600"\n',
        ("[proxy] idle_timeout", "must be a number", "'600'"),
        id="string-for-number",
    ),
    pytest.param(
        "[proxy]\nmax_failed_logins = 2.5\n",
        ("[proxy] max_failed_logins", "must be an integer"),
        id="float-for-integer",
    ),
    pytest.param(
        "[proxy]\nlisten = 1110\n", ("[proxy] listen", "list of strings"), id="number-for-list"
    ),
    pytest.param("[proxy]\nlisten = []\n", ("[proxy] listen", "non-empty"), id="empty-list"),
    pytest.param(
        '[proxy]\nlisten = ["tcp:110", 995]\n', ("[proxy] listen", "strings"), id="mixed-list"
    ),
    pytest.param(
        "[upstream]\ndefault = 110\n", ("[upstream] default", "must be a string"), id="int-str"
    ),
    pytest.param(
        "[user_host]\nenabled = 1\n",
        ("[user_host] enabled", "must be true or false", "not 1"),
        id="number-for-bool",
    ),
    pytest.param(
        "[proxy]\nidle_timeout = true\n",
        ("[proxy] idle_timeout", "must be a number", "not True"),
        id="bool-for-number",
    ),
    pytest.param(
        "[proxy]\nmax_failed_logins = false\n",
        ("[proxy] max_failed_logins", "must be an integer", "not False"),
        id="bool-for-integer",
    ),
    pytest.param(
        "[upstream]\nconnect_timeout = -1\n",
        ("[upstream] connect_timeout", "at least 0.1", "-1"),
        id="negative-timeout",
    ),
    pytest.param(
        "[upstream]\nresponse_timeout = 0\n",
        ("[upstream] response_timeout", "at least 0.1"),
        id="zero-timeout",
    ),
    pytest.param(
        "[proxy]\nidle_timeout = 0.5\n", ("[proxy] idle_timeout", "at least 1"), id="short-idle"
    ),
    pytest.param(
        "[proxy]\nstop_grace = -1\n",
        ("[proxy] stop_grace", "at least 0", "-1"),
        id="negative-grace",
    ),
    pytest.param(
        "[proxy]\nretire_after = -1\n",
        ("[proxy] retire_after", "at least 0", "-1"),
        id="negative-retire-after",
    ),
    pytest.param(
        '[proxy]\nretire_after = "10m"\n',
        ("[proxy] retire_after", "must be a number", "'10m'"),
        id="text-for-retire-after",
    ),
    pytest.param(
        "[proxy]\nretire_after = inf\n",
        ("[proxy] retire_after", "finite", "inf"),
        id="infinite-retire-after",
    ),
    pytest.param(
        "[proxy]\nmax_failed_logins = 0\n",
        ("[proxy] max_failed_logins", "at least 1"),
        id="zero-logins",
    ),
    pytest.param(
        "[proxy]\nidle_timeout = nan\n",
        ("[proxy] idle_timeout", "finite", "nan"),
        id="nan-timeout",
    ),
    pytest.param(
        "[upstream]\nresponse_timeout = inf\n",
        ("[upstream] response_timeout", "finite", "inf"),
        id="inf-timeout",
    ),
    pytest.param(
        "[route]\ndomain = 'a.example'\n", ("[[route]]", "array of tables"), id="route-as-table"
    ),
    pytest.param("route = [1]\n", ("[route #1]", "must be a table"), id="route-entry-not-table"),
    pytest.param(
        '[[route]]\nupstream = "tcp:h:110"\n', ("[route #1] domain", "missing"), id="no-domain"
    ),
    pytest.param(
        '[[route]]\ndomain = "a.example"\n', ("[route #1] upstream", "missing"), id="no-upstream"
    ),
    pytest.param(
        '[[route]]\ndomain = "a.example"\nupstream = "tcp:h:110"\nlogin = "strip"\n',
        ("[route #1] login", "keep, strip-domain", "'strip'"),
        id="bad-login-rewrite",
    ),
    pytest.param(
        '[[route]]\ndomain = "a.example"\nupstream = "tcp:h:110"\n'
        '[[route]]\ndomain = "b.example"\nupstream = "tcp:h:110"\n'
        '[[route]]\ndomain = "A.Example"\nupstream = "tcp:other:110"\n',
        ("[route #3] domain", "'a.example'", "routed twice"),
        id="duplicate-domain",
    ),
    pytest.param(
        "[user_host]\nenabled = true\n",
        ("[user_host] allowed", "no host is allowed"),
        id="user-host-without-hosts",
    ),
    pytest.param(
        "[user_host]\nenabled = true\nallowed = {}\n",
        ("[user_host] allowed", "no host is allowed"),
        id="user-host-empty-hosts",
    ),
    pytest.param(
        '[user_host]\nallowed = { "h.example" = 110 }\n',
        ("[user_host] allowed.h.example", "client endpoint string"),
        id="allowed-not-string",
    ),
    pytest.param(
        '[user_host]\nallowed = "h.example"\n',
        ("[user_host] allowed", "must be a table"),
        id="allowed-not-table",
    ),
    pytest.param(
        '[user_host]\nseparators = ["::"]\n',
        ("[user_host] separators", "'::'", "one character"),
        id="long-separator",
    ),
    pytest.param(
        "[user_host]\nseparators = []\n", ("[user_host] separators", "non-empty"), id="no-seps"
    ),
    pytest.param("[demo]\nmailbox = 1\n", ("[demo] mailbox", "must be a string"), id="demo-box"),
    pytest.param("[metrics]\n", ("[metrics] listen", "missing"), id="metrics-no-listen"),
    pytest.param(
        '[metrics]\nlisten = "tcp:9110"\nport = 1\n',
        ("[metrics] port", "unknown key"),
        id="metrics-unknown-key",
    ),
]


@pytest.mark.parametrize("text, fragments", PARSE_ERRORS)
def test_parseErrorIsOneLine(text: str, fragments: tuple[str, ...]) -> None:
    """
    Each kind of mistake in the file gives one ConfigError line that starts
    with the file name and names the section or key and the problem.
    """
    with pytest.raises(ConfigError) as raised:
        parseConfig(text, SOURCE)
    assertOneLine(raised.value, *fragments)


def test_loadMissingFile(tmp_path: Path) -> None:
    """
    A file that cannot be read gives one line naming it and the reason.
    """
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigError) as raised:
        loadConfig(path)
    assert str(raised.value) == f"{path}: cannot read: No such file or directory"


def test_loadDirectory(tmp_path: Path) -> None:
    """
    A directory given as the configuration file is refused in one line.
    """
    with pytest.raises(ConfigError) as raised:
        loadConfig(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path}: cannot read: ")
    assert "\n" not in str(raised.value)


def test_loadNotUtf8(tmp_path: Path) -> None:
    """
    A file that is not UTF-8 (here Latin-1) is refused in one line.
    """
    path = tmp_path / "latin1.conf"
    path.write_bytes('[demo]\npassword = "g\xe9n\xe9ral"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as raised:
        loadConfig(path)
    assert str(raised.value) == f"{path}: not UTF-8 text"


def test_loadNamesTheFileInParseErrors(tmp_path: Path) -> None:
    """
    Errors found while parsing a loaded file name that file's path.
    """
    path = tmp_path / "popproxy.conf"
    path.write_text("[proxy]\nidle_timeout = -5\n", "utf-8")
    with pytest.raises(ConfigError) as raised:
        loadConfig(path)
    assert str(raised.value) == f"{path}: [proxy] idle_timeout: must be at least 1, not -5"


# --- checks that need a reactor ---------------------------------------------------------

CHECK_ERRORS = [
    pytest.param(
        '[proxy]\nlisten = ["tcp:110", "bogus:110"]\n[upstream]\ndefault = "tcp:h:110"\n',
        ("[proxy] listen", "bad endpoint 'bogus:110'", "Unknown endpoint type"),
        id="listen-type",
    ),
    pytest.param(
        '[proxy]\nlisten = "tcp:pop3"\n[upstream]\ndefault = "tcp:h:110"\n',
        ("[proxy] listen", "bad endpoint 'tcp:pop3'", "invalid literal"),
        id="listen-port",
    ),
    pytest.param(
        '[proxy]\nlisten = "tcp:110:colour=blue"\n[upstream]\ndefault = "tcp:h:110"\n',
        ("[proxy] listen", "bad endpoint 'tcp:110:colour=blue'", "colour"),
        id="listen-argument",
    ),
    pytest.param(
        '[upstream]\ndefault = "tcp:pop.example.com"\n',
        ("[upstream] default", "bad endpoint 'tcp:pop.example.com'", "port"),
        id="upstream-no-port",
    ),
    pytest.param(
        '[upstream]\ndefault = "pop.example.com:110"\n',
        ("[upstream] default", "bad endpoint 'pop.example.com:110'"),
        id="upstream-no-type",
    ),
    pytest.param(
        '[[route]]\ndomain = "a.example"\nupstream = "tcp:h:110"\n'
        '[[route]]\ndomain = "b.example"\nupstream = "tpc:h:110"\n',
        ("[route #2] upstream", "bad endpoint 'tpc:h:110'"),
        id="route-upstream",
    ),
    pytest.param(
        '[user_host]\nenabled = true\nallowed = { "h.example" = "tcp:h.example:x" }\n',
        ("[user_host] allowed.h.example", "bad endpoint 'tcp:h.example:x'"),
        id="allowed-endpoint",
    ),
    pytest.param(
        '[upstream]\ndefault = "tcp:h:110"\n[demo]\nlisten = "tcp:demo"\n',
        ("[demo] listen", "bad endpoint 'tcp:demo'"),
        id="demo-listen",
    ),
    pytest.param(
        '[upstream]\ndefault = "tcp:h:110"\n[metrics]\nlisten = "tcp:metrics"\n',
        ("[metrics] listen", "bad endpoint 'tcp:metrics'"),
        id="metrics-listen",
    ),
    pytest.param(
        "[proxy]\nidle_timeout = 600\n",
        ("[upstream] default", "missing", "--upstream"),
        id="no-upstream",
    ),
    pytest.param(
        "[user_host]\nallowed = { 'h.example' = 'tcp:h.example:110' }\n",
        ("[upstream] default", "missing"),
        id="no-upstream-user-host-off",
    ),
]


@pytest.mark.parametrize("text, fragments", CHECK_ERRORS)
def test_checkErrorIsOneLine(text: str, fragments: tuple[str, ...]) -> None:
    """
    A file that parses but names a bad endpoint, or nowhere to send users,
    fails the reactor checks with one line naming the key, the endpoint and
    why.
    """
    config = parseConfig(text, SOURCE)
    with pytest.raises(ConfigError) as raised:
        checkWithReactor(config)
    assertOneLine(raised.value, *fragments)


def test_checkDoesNotListenOrConnect() -> None:
    """
    Checking builds endpoints but neither listens nor connects.
    """
    reactor = MemoryReactor()
    config = parseConfig(
        '[proxy]\nlisten = ["tcp:110", "tcp:995"]\n[upstream]\ndefault = "tcp:h:110"\n[demo]\n',
        SOURCE,
    )
    checkConfig(
        config,
        lambda description: serverFromString(reactor, description),
        lambda description: clientFromString(reactor, description),
    )
    assert reactor.tcpServers == [] and reactor.tcpClients == []


def test_checkTriesEveryEndpoint() -> None:
    """
    Every endpoint string in the configuration goes through the matching
    builder: listeners and the demo as servers, upstreams as clients.
    """
    servers: list[str] = []
    clients: list[str] = []
    config = parseConfig(
        """
[proxy]
listen = ["tcp:110", "tcp:111"]
[upstream]
default = "tcp:d:110"
[[route]]
domain = "a.example"
upstream = "tcp:a:110"
[user_host]
enabled = true
allowed = { "h.example" = "tcp:h:110" }
[demo]
listen = "tcp:1100"
""",
        SOURCE,
    )
    checkConfig(config, servers.append, clients.append)
    assert servers == ["tcp:110", "tcp:111", "tcp:1100"]
    assert clients == ["tcp:d:110", "tcp:a:110", "tcp:h:110"]


def test_checkEmptyExceptionMessage() -> None:
    """
    An endpoint parser that raises an exception without text still gives a
    line that says what went wrong: the exception's name.
    """

    def refuse(description: str) -> None:
        raise KeyError()

    config = parseConfig('[upstream]\ndefault = "tcp:h:110"\n', SOURCE)
    with pytest.raises(ConfigError) as raised:
        checkConfig(config, lambda description: None, refuse)
    assertOneLine(raised.value, "[upstream] default", "'tcp:h:110'", "KeyError")


@pytest.mark.parametrize(
    "text",
    [
        '[[route]]\ndomain = "a.example"\nupstream = "tcp:a:110"\n',
        '[user_host]\nenabled = true\nallowed = { "h.example" = "tcp:h:110" }\n',
    ],
    ids=["routes", "user-host"],
)
def test_noDefaultUpstreamWithOtherRoutes(text: str) -> None:
    """
    Without a default upstream the configuration is still complete when
    [[route]] or an enabled [user_host] gives somewhere to send users.
    """
    checkWithReactor(parseConfig(text, SOURCE))


def test_demoMailboxNotADirectory(tmp_path: Path) -> None:
    """
    A demo mailbox that is a file, or does not exist, is refused in one line
    naming the resolved path (relative to the configuration file).
    """
    (tmp_path / "file.eml").write_bytes(b"Subject: x\r\n\r\n")
    for name in ("file.eml", "missing"):
        config = parseConfig(
            f'[upstream]\ndefault = "tcp:h:110"\n[demo]\nmailbox = "{name}"\n',
            SOURCE,
            tmp_path,
        )
        with pytest.raises(ConfigError) as raised:
            checkWithReactor(config)
        assertOneLine(raised.value, "[demo] mailbox", f"{tmp_path / name} is not a directory")


def test_demoMailboxAbsolutePath(tmp_path: Path) -> None:
    """
    An absolute demo mailbox path is used as written, not joined to the
    configuration directory.
    """
    config = parseConfig(f'[demo]\nmailbox = "{tmp_path}"\n', SOURCE, Path("/elsewhere"))
    assert config.demo is not None and config.demo.mailbox == tmp_path


# --- command-line overrides -------------------------------------------------------------


def test_overrideListenReplacesList() -> None:
    """
    C{--listen} values replace the file's whole listen list (they are not
    added to it); the original configuration is unchanged.
    """
    config = parseConfig('[proxy]\nlisten = ["tcp:110", "tcp:111"]\n', SOURCE)
    changed = config.withOverrides(listen=("tcp:2110", "tcp:2111"))
    assert changed.listen == ("tcp:2110", "tcp:2111")
    assert config.listen == ("tcp:110", "tcp:111")
    assert changed.upstream is None


def test_overrideUpstreamReplacesDefault() -> None:
    """
    C{--upstream} replaces the default upstream and leaves routes alone.
    """
    config = parseConfig(
        '[upstream]\ndefault = "tcp:a:110"\n'
        '[[route]]\ndomain = "x.example"\nupstream = "tcp:x:110"\n',
        SOURCE,
    )
    changed = config.withOverrides(upstream="tcp:b:110")
    assert changed.upstream == "tcp:b:110"
    assert changed.routes == config.routes
    assert changed.listen == DEFAULT_LISTEN
    assert config.upstream == "tcp:a:110"


def test_overrideUpstreamTurnsDemoOff() -> None:
    """
    C{--upstream} replaces the default upstream the [demo] server exists
    for, so the demo is not started; C{--listen} alone leaves it on.
    """
    config = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:1100"\n[demo]\nlisten = "tcp:1100"\n', SOURCE
    )
    assert config.demo is not None
    assert config.withOverrides(upstream="tcp:pop.example.com:110").demo is None
    assert config.withOverrides(listen=("tcp:2110",)).demo == config.demo


def test_noOverridesKeepsConfig() -> None:
    """
    Without C{--listen} or C{--upstream} the file's configuration is used
    as it is.
    """
    config = parseConfig('[upstream]\ndefault = "tcp:a:110"\n', SOURCE)
    assert config.withOverrides() == config
    assert config.withOverrides((), None) == config


def test_overrideSuppliesMissingUpstream() -> None:
    """
    A file without an upstream passes the checks once C{--upstream} gives
    one, and starts without any file at all.
    """
    config = parseConfig("[proxy]\nidle_timeout = 700\n", SOURCE)
    with pytest.raises(ConfigError):
        checkWithReactor(config)
    checkWithReactor(config.withOverrides(upstream="tcp:127.0.0.1:110"))
    checkWithReactor(Config().withOverrides(upstream="tcp:127.0.0.1:110"))


def test_commandLineFlags() -> None:
    """
    `twistd popproxy` options become overrides of the file: repeated
    C{--listen}/C{-l} replace its listen list, C{--upstream} its default
    (and turns off the demo server it replaces), and the rest of the file
    (here the shipped chain) is kept.
    """
    options = Options()
    options.parseOptions(
        [
            "--config",
            str(SHIPPED),
            "--listen",
            "tcp:2110",
            "-l",
            "tcp:2111",
            "--upstream",
            "tcp:u:110",
        ]
    )
    config = buildConfig(options)
    assert config.listen == ("tcp:2110", "tcp:2111")
    assert config.upstream == "tcp:u:110"
    assert config.demo is None and loadConfig(SHIPPED).demo is not None
    assert config.filters == loadConfig(SHIPPED).filters != ()
    assert config.source == str(SHIPPED)


def test_commandLineWithoutFile() -> None:
    """
    Without C{--config}, C{--upstream} alone is enough (listening on the
    default address); with neither, the options are refused.
    """
    options = Options()
    options.parseOptions(["--upstream", "tcp:u:110"])
    config = buildConfig(options)
    assert config == Config(upstream="tcp:u:110", overridden=frozenset({"upstream"}))
    checkWithReactor(config)
    with pytest.raises(UsageError):
        Options().parseOptions([])


# --- routing ----------------------------------------------------------------------------

DEFAULT = "tcp:pop.default.test:110"
CORP = DomainRoute("corp.example", "tcp:pop.corp.test:110", "strip-domain")
KEPT = DomainRoute("kept.example", "tcp:pop.kept.test:110", "keep")
NET = "tcp:pop.example.net:110"


def routed(router: Router, login: str) -> tuple[str, str]:
    """
    Where C{login} goes: the upstream's endpoint string and the login name
    sent there.
    """
    route = router.route(login)
    return route.upstream.endpoint, route.login


def routingConfig(
    *,
    default: str | None = DEFAULT,
    routes: tuple[DomainRoute, ...] = (),
    allowed: dict[str, str] | None = None,
    separators: tuple[str, ...] = ("@", "#"),
) -> RoutingSettings:
    return RoutingSettings(
        default=default,
        routes=routes,
        userHost=UserHostRouting(allowed is not None, separators, allowed or {}),
    )


def test_defaultOnly() -> None:
    """
    With only a default upstream every login goes there unchanged, @ and #
    included, and the router is static (known before login).
    """
    router = Router(routingConfig())
    assert router.static
    assert router.default is not None and router.default.endpoint == DEFAULT
    for login in ("alice", "alice@example.com", "bob#pop.example.net", "@", "#"):
        assert routed(router, login) == (DEFAULT, login)


def test_domainRouteStripsDomain() -> None:
    """
    A login whose domain has a strip-domain route goes to that route's
    upstream as the part before the last @; the domain matches without
    regard to case.
    """
    router = Router(routingConfig(routes=(CORP, KEPT)))
    assert not router.static
    assert routed(router, "ann@corp.example") == (CORP.upstream, "ann")
    assert routed(router, "Ann@CORP.Example") == (CORP.upstream, "Ann")
    assert routed(router, "a@b@corp.example") == (CORP.upstream, "a@b")


def test_domainRouteKeepsLogin() -> None:
    """
    A C{keep} route sends the login exactly as the client typed it.
    """
    router = Router(routingConfig(routes=(CORP, KEPT)))
    assert routed(router, "Ann@Kept.Example") == (KEPT.upstream, "Ann@Kept.Example")


def test_domainRouteEmptyLocalPart() -> None:
    """
    A strip-domain route never sends an empty login upstream: C{@domain}
    alone has no route, rather than going to the default.
    """
    router = Router(routingConfig(routes=(CORP,)))
    with pytest.raises(NoRoute):
        router.route("@corp.example")


def test_otherDomainsGoToDefault() -> None:
    """
    Logins in domains without a route, or that only contain the domain
    elsewhere, go to the default upstream unchanged.
    """
    router = Router(routingConfig(routes=(CORP,)))
    for login in ("ann@example.com", "corp.example", "ann@corp.example.org", "ann#corp.example"):
        assert routed(router, login) == (DEFAULT, login)


def test_domainRouteBeforeUserHost() -> None:
    """
    A domain route wins over user@host naming the same host.
    """
    direct = "tcp:corp.example:110"
    router = Router(routingConfig(routes=(CORP,), allowed={"corp.example": direct}))
    assert routed(router, "ann@corp.example") == (CORP.upstream, "ann")
    assert routed(router, "ann#corp.example") == (direct, "ann")


def test_userHostAllowedHosts() -> None:
    """
    With user@host enabled, C{user@host} and C{user#host} for an allowed
    host (any case) go to that host's endpoint as C{user}.
    """
    router = Router(routingConfig(allowed={"pop.example.net": NET}))
    assert not router.static
    assert routed(router, "bob@pop.example.net") == (NET, "bob")
    assert routed(router, "bob#POP.Example.Net") == (NET, "bob")
    assert routed(router, "bob@home#pop.example.net") == (NET, "bob@home")


def test_userHostOtherHostsGoToDefault() -> None:
    """
    A host that is not allowed is never contacted: the whole login goes to
    the default upstream, as does an allowed host with nothing before it.
    """
    router = Router(routingConfig(allowed={"pop.example.net": NET}))
    for login in ("bob@evil.example", "bob#127.0.0.1", "#pop.example.net", "bob@pop.example.net."):
        assert routed(router, login) == (DEFAULT, login)


def test_userHostOnlyConfiguredSeparators() -> None:
    """
    Only the configured separators name a host.
    """
    router = Router(routingConfig(allowed={"pop.example.net": NET}, separators=("%",)))
    assert routed(router, "bob%pop.example.net") == (NET, "bob")
    assert routed(router, "bob@pop.example.net") == (DEFAULT, "bob@pop.example.net")
    assert routed(router, "bob#pop.example.net") == (DEFAULT, "bob#pop.example.net")


def test_userHostDisabledIgnoresAllowed() -> None:
    """
    Allowed hosts listed while user@host is disabled are never used.
    """
    config = Config(
        upstream=DEFAULT,
        userHost=UserHostRouting(False, ("@", "#"), {"pop.example.net": NET}),
    )
    router = Router(config.routing)
    assert router.static
    assert routed(router, "bob@pop.example.net") == (DEFAULT, "bob@pop.example.net")


def test_noRouteWithoutDefault() -> None:
    """
    Without a default upstream, a login no rule matches has no route.
    """
    router = Router(routingConfig(default=None, routes=(CORP,), allowed={"pop.example.net": NET}))
    assert not router.static
    assert router.default is None
    assert routed(router, "ann@corp.example") == (CORP.upstream, "ann")
    assert routed(router, "bob@pop.example.net") == (NET, "bob")
    for login in ("ann", "ann@example.com", "bob@evil.example", "#pop.example.net"):
        with pytest.raises(NoRoute):
            router.route(login)


def test_routerFromParsedFile() -> None:
    """
    Routing uses the parsed file's lower-cased domains and hosts, so a file
    written in mixed case still matches logins in any case.
    """
    config = parseConfig(
        """
[upstream]
default = "tcp:pop.default.test:110"
[[route]]
domain = "Corp.EXAMPLE"
upstream = "tcp:pop.corp.test:110"
login = "strip-domain"
[user_host]
enabled = true
allowed = { "Pop.Example.NET" = "tls:pop.example.net:995" }
""",
        SOURCE,
    )
    router = Router(config.routing)
    assert routed(router, "ann@corp.example") == ("tcp:pop.corp.test:110", "ann")
    assert routed(router, "bob#pop.EXAMPLE.net") == ("tls:pop.example.net:995", "bob")
    assert routed(router, "carol") == ("tcp:pop.default.test:110", "carol")


_names = st.text(alphabet="abcXY.", min_size=1, max_size=6)
_hosts = st.sampled_from(["a.example", "b.example", "c.example", "evil.example", "tcp:x:110"])
_loginParts = st.one_of(
    _names,
    _hosts,
    _hosts.map(str.upper),
    st.sampled_from(["@", "#", "%", "", " "]),
)


@given(
    default=st.one_of(st.none(), st.just(DEFAULT)),
    routeDomains=st.lists(_hosts, max_size=3, unique=True),
    rewrites=st.lists(st.sampled_from(["keep", "strip-domain"]), min_size=3, max_size=3),
    enabled=st.booleans(),
    allowedHosts=st.lists(_hosts, max_size=3, unique=True),
    separators=st.sampled_from([("@", "#"), ("@",), ("#",), ("%",)]),
    login=st.lists(_loginParts, max_size=6).map("".join).filter(bool),
)
def test_neverAnOpenRelay(
    default: str | None,
    routeDomains: list[str],
    rewrites: list[str],
    enabled: bool,
    allowedHosts: list[str],
    separators: tuple[str, ...],
    login: str,
) -> None:
    """
    Whatever the (non-empty, as USER requires) login and the
    configuration, the router only ever answers the default upstream, a
    route's upstream, or (with user@host enabled) an allowed host's
    endpoint; an allowed host is only chosen when the login names it; the
    login sent is never empty; and with a default there is no route only
    for C{@domain} of a strip-domain route.
    """
    routes = tuple(
        DomainRoute(domain, f"tcp:route{number}.test:110", rewrite)
        for number, (domain, rewrite) in enumerate(zip(routeDomains, rewrites, strict=False))
    )
    allowed = {host: f"tcp:allowed{number}.test:110" for number, host in enumerate(allowedHosts)}
    config = Config(
        upstream=default,
        routes=routes,
        userHost=UserHostRouting(enabled, separators, allowed),
    )
    permitted = {route.upstream for route in routes}
    if default is not None:
        permitted.add(default)
    if enabled:
        permitted.update(allowed.values())
    try:
        endpoint, sent = routed(Router(config.routing), login)
    except NoRoute:
        if default is not None:
            # Only "@domain" with a strip-domain route, which has no user to send.
            local, _, domain = login.rpartition("@")
            assert local == "" and "@" in login
            assert any(r.domain == domain.lower() and r.login == "strip-domain" for r in routes)
        return
    assert endpoint in permitted
    assert sent
    hostOf = {target: host for host, target in allowed.items()}
    if endpoint in hostOf:
        assert any(login.lower().endswith(sep + hostOf[endpoint]) for sep in separators)
    if endpoint == default:
        assert sent == login


def test_parseLimitKeys() -> None:
    """
    The [chain] parse-limit keys and over_limits are read into the chain
    settings; left out, they are the documented defaults (over_limits:
    quarantine when there is a quarantine, so padding a message past a limit
    does not carry it past the filters).
    """
    chain = parseConfig(
        """
[chain]
quarantine = "q"
max_parts = 200
max_depth = 0
max_header_fields = 300
max_total_header_fields = 3000
max_parameters = 40
max_continuations = 20
max_encoded_words = 500
over_limits = "quarantine"
""",
        SOURCE,
    ).chain
    assert chain.limits == ParseLimits(
        maxParts=200,
        maxDepth=0,
        maxHeaderFields=300,
        maxTotalHeaderFields=3000,
        maxParameters=40,
        maxContinuations=20,
        maxEncodedWords=500,
    )
    assert chain.overLimits == "quarantine"
    defaults = parseConfig("[chain]\n", SOURCE).chain
    assert (defaults.limits, defaults.overLimits) == (ParseLimits(), "deliver")
    kept = parseConfig('[chain]\nquarantine = "q"\n', SOURCE).chain
    assert kept.overLimits == "quarantine"


def test_spoolDirectory() -> None:
    """
    [chain] spool_directory is read relative to the file's directory, like
    the quarantine; unset, spool files go to the system's temporary
    directory (C{None}).
    """
    base = Path("/etc/popproxy")
    chain = parseConfig('[chain]\nspool_directory = "spool"\n', SOURCE, base).chain
    assert chain.spoolDirectory == base / "spool"
    assert parseConfig("[chain]\n", SOURCE).chain.spoolDirectory is None


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("max_parts = 0", ("[chain] max_parts", "at least 1", "not 0")),
        ("max_depth = -1", ("[chain] max_depth", "at least 0")),
        ("max_total_header_fields = 0", ("[chain] max_total_header_fields", "at least 1")),
        ('max_encoded_words = "many"', ("[chain] max_encoded_words", "must be an integer")),
        ("max_parameters = 1.5", ("[chain] max_parameters", "must be an integer")),
        ('over_limits = "tempfail"', ("[chain] over_limits", "deliver or quarantine")),
        ('over_limits = "quarantine"', ("[chain] over_limits", "needs [chain] quarantine")),
        ("max_part = 10", ("[chain] max_part", "unknown key")),
    ],
)
def test_parseLimitKeyErrors(text: str, fragments: tuple[str, ...]) -> None:
    """
    A bad limit or policy stops start-up with one line naming the key; a
    misspelt key is still an unknown key, and a policy that would need a
    quarantine that is not configured is refused.
    """
    with pytest.raises(ConfigError) as raised:
        parseConfig(f"[chain]\n{text}\n", SOURCE)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# Each TOML table has its own reader returning its own frozen value.


def test_readersGiveDefaultsForEmptyTables() -> None:
    """
    Every reader, given an empty (absent) table, returns the same defaults
    L{Config} has, so parseConfig of an empty file is their composition.
    """
    base = Path("/srv")
    assert readProxy(SOURCE, {}) == ProxySettings()
    assert readUpstream(SOURCE, {}, base) == UpstreamSettings()
    assert readRoutes(SOURCE, [], base, UpstreamTls()) == ()
    assert readUserHost(SOURCE, {}) == UserHostRouting()
    assert readDemo(SOURCE, None, base) is None
    assert readTls(SOURCE, {}, base) == TlsConfig()
    assert readChain(SOURCE, {}, base) == ChainConfig(pluginDirs=(base / "plugins",))
    assert readFilters(SOURCE, []) == ()
    empty = parseConfig("", SOURCE, base)
    assert (empty.listen, empty.idleTimeout, empty.workers, empty.stopGrace) == (
        ProxySettings().listen,
        ProxySettings().idleTimeout,
        ProxySettings().workers,
        ProxySettings().stopGrace,
    )
    assert empty.stopGrace == 30.0
    assert empty.upstream is None and empty.upstreamTls == UpstreamSettings().tls


def test_readProxyIsItsOwnValue() -> None:
    """
    L{readProxy} reads only C{[proxy]} keys into a frozen L{ProxySettings}.
    """
    settings = readProxy(
        SOURCE,
        {"listen": "tcp:110", "workers": 2, "idle_timeout": 30, "stop_grace": 0, "retire_after": 0},
    )
    assert settings == ProxySettings(
        listen=("tcp:110",), idleTimeout=30.0, workers=2, stopGrace=0.0, retireAfter=0.0
    )
    with pytest.raises(ConfigError, match=r"\[proxy\] upstream: unknown key"):
        readProxy(SOURCE, {"upstream": "tcp:pop:110"})


def test_readRoutesInheritsUpstreamTls() -> None:
    """
    Routes inherit the TLS settings they are given (those of C{[upstream]})
    for the keys they do not set, and relative paths resolve against base.
    """
    inherited = UpstreamTls(mode="implicit", verify=False)
    routes = readRoutes(
        SOURCE,
        [{"domain": "Corp.Example", "upstream": "tcp:a:995", "ca_file": "ca.pem"}],
        Path("/srv"),
        inherited,
    )
    assert routes == (
        DomainRoute(
            "corp.example",
            "tcp:a:995",
            "keep",
            UpstreamTls(mode="implicit", verify=False, caFile=Path("/srv/ca.pem")),
        ),
    )


def test_readDemoDisabledIsNone() -> None:
    """
    A C{[demo]} table with C{enabled = false} reads as no demo, yet its
    keys are still checked.
    """
    assert readDemo(SOURCE, {"enabled": False}, Path("/srv")) is None
    with pytest.raises(ConfigError, match=r"\[demo\] port: unknown key"):
        readDemo(SOURCE, {"enabled": False, "port": 1}, Path("/srv"))


def test_readChainOverLimitsFollowsQuarantine() -> None:
    """
    L{readChain} defaults C{over_limits} to quarantine exactly when a
    quarantine directory is set, and reads the parse limits with it.
    """
    chain = readChain(SOURCE, {"quarantine": "q", "max_parts": 5}, Path("/srv"))
    assert chain.quarantine == Path("/srv/q")
    assert chain.overLimits == "quarantine"
    assert chain.limits == ParseLimits(maxParts=5)
    assert readChain(SOURCE, {}, Path("/srv")).overLimits == "deliver"


def test_readFiltersInOrder() -> None:
    """
    L{readFilters} returns one L{FilterConfig} per entry, in chain order.
    """
    filters = readFilters(SOURCE, [{"plugin": "a"}, {"plugin": "b", "on_error": "deliver"}])
    assert filters == (FilterConfig("a"), FilterConfig("b", onError="deliver"))


def test_sectionsAreTheKnownTables() -> None:
    """
    Every table with a reader is a known section; anything else is refused.
    """
    assert set(SECTIONS) == {
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
    }
    with pytest.raises(ConfigError, match=r"\[proxies\]: unknown section"):
        parseConfig("[proxies]\n", SOURCE)


def test_routingIsTheRoutersShareOfTheFile() -> None:
    """
    The router's value holds the default upstream (after C{--upstream}),
    the inherited upstream TLS settings, the domain routes and the
    user@host rules, and resolves targets as the whole configuration does.
    """
    config = parseConfig(
        """
[upstream]
default = "tcp:pop.default.test:110"
tls = "starttls"
[[route]]
domain = "corp.example"
upstream = "tcp:pop.corp.test:110"
[user_host]
enabled = true
allowed = { "pop.example.net" = "tls:pop.example.net:995" }
""",
        SOURCE,
    ).withOverrides(upstream="tcp:pop.flag.test:110")
    routing = config.routing
    assert routing == RoutingSettings(
        "tcp:pop.flag.test:110", config.upstreamTls, config.routes, config.userHost
    )
    assert routing.target(NET) == config.target(NET)
    assert routing.target(NET).tls.mode == "starttls"


def test_metricsTable() -> None:
    """
    [metrics] listen gives the metrics listener; without the table there
    is none.
    """
    config = parseConfig('[metrics]\nlisten = "tcp:9110:interface=127.0.0.1"\n', SOURCE)
    assert config.metrics == MetricsConfig("tcp:9110:interface=127.0.0.1")
    assert parseConfig("", SOURCE).metrics is None


def test_limitsOnWithoutTable() -> None:
    """
    A file without [limits] has the default limits, not none: the session
    total derived from the descriptor limit, 50 per address, loopback
    trusted.
    """
    limits = parseConfig("", SOURCE).limits
    assert limits == ConnectionLimits()
    assert limits.maxSessions is None and limits.perAddress == 50
    assert limits.trusted == ("127.0.0.0/8", "::1/128")


def test_limitsTable() -> None:
    """
    Every [limits] key is read; trusted_networks may be empty and is
    normalised; max_sessions = 0 means derived.
    """
    limits = parseConfig(
        "[limits]\nmax_sessions = 500\nmax_sessions_per_address = 4\nipv4_prefix = 24\n"
        "ipv6_prefix = 56\nconnection_rate = 10\nrate_interval = 30\nlogin_timeout = 20\n"
        "command_deadline = 5\nupstream_hold = 0\nrefusal_log_interval = 300\n"
        "prelogin_upstream = 8\n"
        'trusted_networks = ["192.0.2.7", "2001:db8::/48"]\n',
        SOURCE,
    ).limits
    assert limits == ConnectionLimits(
        maxSessions=500,
        perAddress=4,
        ipv4Prefix=24,
        ipv6Prefix=56,
        connectionRate=10,
        rateInterval=30,
        loginTimeout=20,
        commandDeadline=5,
        upstreamHold=0,
        trusted=("192.0.2.7/32", "2001:db8::/48"),
        refusalLogInterval=300,
        preloginUpstream=8,
    )
    assert parseConfig("[limits]\ntrusted_networks = []\n", SOURCE).limits.trusted == ()
    assert parseConfig("[limits]\nmax_sessions = 0\n", SOURCE).limits.maxSessions is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('trusted_networks = ["not a net"]', r"\[limits\] trusted_networks: 'not a net'"),
        ("ipv6_prefix = 129", r"\[limits\] ipv4_prefix is at most 32, ipv6_prefix 128"),
        ("max_sessions_per_address = 0", r"\[limits\] max_sessions_per_address: must be at"),
        ("login_timeout = 0", r"\[limits\] login_timeout: must be at least 1"),
        ("max_connections = 5", r"\[limits\] max_connections: unknown key"),
    ],
)
def test_limitsErrors(text: str, message: str) -> None:
    """
    A wrong [limits] key or value is one line naming it.
    """
    with pytest.raises(ConfigError, match=message):
        parseConfig(f"[limits]\n{text}\n", SOURCE)
