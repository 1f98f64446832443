"""
Start-up warnings of the proxy service (popproxy._assembly): every place
where credentials may cross the network in clear, or unverified, is logged
when the service is built.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent

from popproxy._assembly import serviceFromConfig
from popproxy._config import parseConfig


def warnings(text: str) -> list[str]:
    config = parseConfig(text, "test.conf")
    with capturedLogs() as events:
        serviceFromConfig(config, MemoryReactorClock())
    return [formatEvent(e) for e in events if e["log_level"].name == "warn"]


def test_verifyOffAndPlainUpstreamLogged() -> None:
    """
    verify = false and tls = none towards a remote upstream are both logged,
    naming the upstream.
    """
    logged = warnings(
        '[upstream]\ndefault = "tcp:pop.example.com:995"\ntls = "implicit"\nverify = false\n'
        '[[route]]\ndomain = "corp.example"\nupstream = "tcp:pop.corp.example:110"\n'
        'tls = "none"\nverify = true\n'
    )
    assert any("pop.example.com" in w and "verification is OFF" in w for w in logged), logged
    assert any("pop.corp.example" in w and "clear text" in w for w in logged), logged


def test_loopbackUpstreamNotLogged() -> None:
    """
    A loopback upstream in plain text (the demo) and a loopback listener
    warn about nothing.
    """
    assert warnings('[upstream]\ndefault = "tcp:127.0.0.1:1100"\n') == []


def test_publicListenerWithoutCertificate() -> None:
    """
    A listener on all interfaces without a certificate is logged: clients
    there send passwords in clear text.
    """
    logged = warnings('[proxy]\nlisten = ["tcp:1110"]\n[upstream]\ndefault = "tcp:127.0.0.1:1"\n')
    assert any("tcp:1110" in w and "clear text" in w for w in logged), logged


def test_defaultBacklog() -> None:
    """
    TCP and SSL listeners get a large listen backlog unless they set one
    (Twisted's 50 overflows when hundreds of clients connect at once).
    """
    from popproxy._assembly import DEFAULT_BACKLOG, withBacklog

    assert withBacklog("tcp:110") == f"tcp:110:backlog={DEFAULT_BACKLOG}"
    assert withBacklog("tcp:110:backlog=5") == "tcp:110:backlog=5"
    assert withBacklog("unix:/run/p.sock") == "unix:/run/p.sock"
    assert withBacklog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"
