"""
Tests for the C{[console]} table: its defaults, what it refuses with a
message naming the key, and its listener checked like every endpoint.
"""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from popproxy._config import ConfigError, checkConfig, parseConfig

BASE = '[upstream]\ndefault = "tcp:127.0.0.1:110"\n[chain]\nquarantine = "/tmp/q"\n'


def test_defaults() -> None:
    """
    Without a table there is no console; with one, only removals by the
    strip filter are downloadable unasked, sessions last 30 minutes idle
    and notices carry no link without a public URL.
    """
    assert parseConfig(BASE).console is None
    console = parseConfig(BASE + '[console]\nlisten = "tcp:8110"\n').console
    assert console is not None
    assert (console.listen, console.publicUrl) == ("tcp:8110", None)
    assert console.userDownload == ("strip",) and console.sessionTimeout == 1800.0


def test_settings() -> None:
    """
    Every key is read; the public URL loses its trailing slash; an empty
    user_download list means every item needs an approval.
    """
    console = parseConfig(
        BASE + '[console]\nlisten = "ssl:8443"\npublic_url = "https://mail.example.com/q/"\n'
        "user_download = []\nsession_timeout = 600\n"
    ).console
    assert console is not None
    assert console.publicUrl == "https://mail.example.com/q"
    assert console.userDownload == () and console.sessionTimeout == 600.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("public_url = 'x'", r"\[console\] listen: missing"),
        ("listen = 'tcp:1'\npublic_url = 'javascript:alert(1)'", r"public_url: must be an http"),
        ("listen = 'tcp:1'\nuser_download = [1]", r"user_download: must be a list"),
        ("listen = 'tcp:1'\nsession_timeout = 5", r"session_timeout: must be at least"),
        ("listen = 'tcp:1'\nport = 1", r"\[console\] port: unknown key"),
    ],
)
def test_refused(table: str, message: str) -> None:
    """
    A console table that cannot work is refused at start-up, naming the key.
    """
    with pytest.raises(ConfigError, match=message):
        parseConfig(BASE + "[console]\n" + table + "\n")


def test_needsAQuarantine() -> None:
    """
    A console with no quarantine to show is a mistake, said at start-up.
    """
    text = '[upstream]\ndefault = "tcp:127.0.0.1:110"\n[console]\nlisten = "tcp:8110"\n'
    with pytest.raises(ConfigError, match=r"\[console\]: needs a \[chain\] quarantine"):
        parseConfig(text)


def test_listenerIsChecked() -> None:
    """
    A console listener that does not parse is reported like the others.
    """
    config = parseConfig(BASE + '[console]\nlisten = "tcpx:8110"\n')
    reactor = MemoryReactor()
    with pytest.raises(ConfigError, match=r"\[console\] listen: bad endpoint 'tcpx:8110'"):
        checkConfig(config, lambda d: serverFromString(reactor, d), lambda d: None)


def test_admins() -> None:
    """
    C{admins} maps each administrator's name to a hash line (a table
    inline or its own C{[console.admins]}); none by default.
    """
    from popproxy.console._passwordhash import hashPassword

    line = hashPassword("admin-password", n=16, r=1, p=1).line()
    assert parseConfig(BASE + '[console]\nlisten = "tcp:1"\n').console.admins == ()  # type: ignore[union-attr]
    inline = parseConfig(BASE + f'[console]\nlisten = "tcp:1"\nadmins = {{ root = "{line}" }}\n')
    assert inline.console is not None and inline.console.admins == (("root", line),)
    table = parseConfig(
        BASE + '[console]\nlisten = "tcp:1"\n[console.admins]\n'
        f'root = "{line}"\n"ops team" = "{line}"\n'
    )
    assert table.console is not None
    assert table.console.admins == (("root", line), ("ops team", line))


@pytest.mark.parametrize(
    ("admins", "message"),
    [
        ('{ root = "hunter2" }', r"admins\.root: not a scrypt"),
        ("{ root = 5 }", r"admins\.root: must be a hash line"),
        ('"root"', r"admins: must be a table"),
        ('{ "" = "x" }', r"admins: '' is not a usable name"),
    ],
)
def test_adminsRefused(admins: str, message: str) -> None:
    """
    A plain password instead of a hash, a value that is not text, and an
    empty name are refused, naming the key.
    """
    with pytest.raises(ConfigError, match=message):
        parseConfig(BASE + f'[console]\nlisten = "tcp:1"\nadmins = {admins}\n')
